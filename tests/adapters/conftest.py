"""The real sample upstreams on loopback, and adapters configured against them.

One set of sample services for the directory (reset before and after each test);
adapters are built per test from a configuration made like production's, with small
timeouts so fault tests stay fast: 0.3 s per attempt, 1.0 s per call, 2 retries.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from adapter_settings import ENV, FAST, VARIANTS

from adapters.config import UpstreamsConfig, load_upstreams
from adapters.protocols import Adapter
from adapters.registry import build_adapter
from demo.upstreams.runner import SampleUpstreams

Configure = Callable[..., UpstreamsConfig]
Build = Callable[..., Adapter]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def configure(upstreams: SampleUpstreams) -> Configure:
    """``configure(variant, env=None, **overrides)``: a validated one-upstream config."""

    def make(variant: str, env: dict[str, str] | None = None, **overrides: Any) -> UpstreamsConfig:
        service, table = VARIANTS[variant]
        raw = _merge({**FAST, **table, "base_url": upstreams.base_urls[service]}, overrides)
        return load_upstreams({"upstreams": {variant: raw}}, {**ENV, **(env or {})})

    return make


@pytest.fixture
async def build(configure: Configure) -> AsyncIterator[Build]:
    """``build(variant, env=None, clock=..., **overrides)``: an adapter, closed after the
    test (``clock`` times its breaker and token refresh)."""
    built: list[Adapter] = []

    def make(
        variant: str,
        env: dict[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        **overrides: Any,
    ) -> Adapter:
        config = configure(variant, env, **overrides)
        adapter = build_adapter(config.upstreams[variant], clock=clock)
        built.append(adapter)
        return adapter

    yield make
    for adapter in built:
        await adapter.aclose()

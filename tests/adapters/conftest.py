"""The real sample upstreams on loopback, and adapters configured against them.

One set of sample services for the directory (reset before and after each test);
adapters are built per test from a configuration made like production's, with small
timeouts so fault tests stay fast: 0.3 s per attempt, 1.0 s per call, 2 retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from adapters.config import UpstreamsConfig, load_upstreams
from adapters.protocols import Adapter
from adapters.registry import build_adapter
from adapters.samples.credentials import (
    DEMO_HUBSPOT_CLIENT_ID,
    DEMO_HUBSPOT_CLIENT_SECRET,
    DEMO_HUBSPOT_TOKEN,
    DEMO_SEGMENT_SPACE,
    DEMO_SEGMENT_TOKEN,
    DEMO_SHOPIFY_TOKEN,
    DEMO_SOAP_PASSWORD,
    DEMO_SOAP_USER,
)
from adapters.samples.runner import SampleUpstreams

SIZE = 300

ENV = {
    "HUBSPOT_TOKEN": DEMO_HUBSPOT_TOKEN,
    "HUBSPOT_CLIENT_ID": DEMO_HUBSPOT_CLIENT_ID,
    "HUBSPOT_CLIENT_SECRET": DEMO_HUBSPOT_CLIENT_SECRET,
    "SOAP_CRM_USER": DEMO_SOAP_USER,
    "SOAP_CRM_PASSWORD": DEMO_SOAP_PASSWORD,
    "SHOPIFY_TOKEN": DEMO_SHOPIFY_TOKEN,
    "SEGMENT_TOKEN": DEMO_SEGMENT_TOKEN,
}

FAST = {
    "timeout_s": 0.3,
    "deadline_s": 1.0,
    "retries": 2,
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    # High enough that fault tests never trip it by accident; breaker tests lower it.
    "breaker": {"failure_threshold": 50, "reset_timeout_s": 0.3},
}

# Variants the tests build, by the name they go by: (sample service, table).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hubspot": ("hubspot", {
        "kind": "hubspot", "auth": {"mode": "bearer", "token_env": "HUBSPOT_TOKEN"},
    }),
    "hubspot_oauth": ("hubspot", {
        "kind": "hubspot",
        "auth": {"mode": "oauth2_client_credentials", "client_id_env": "HUBSPOT_CLIENT_ID",
                 "client_secret_env": "HUBSPOT_CLIENT_SECRET"},
    }),
    "soap_crm": ("soap_crm", {
        "kind": "soap_crm",
        "auth": {"mode": "basic", "username_env": "SOAP_CRM_USER",
                 "password_env": "SOAP_CRM_PASSWORD"},
    }),
    "shopify": ("shopify", {
        "kind": "shopify", "auth": {"token_env": "SHOPIFY_TOKEN"},
        "storefront_url": "https://shop.example",
    }),
    "segment": ("segment", {
        "kind": "segment", "auth": {"mode": "basic", "username_env": "SEGMENT_TOKEN"},
        "space_id": DEMO_SEGMENT_SPACE,
    }),
}

Configure = Callable[..., UpstreamsConfig]
Build = Callable[..., Adapter]


@pytest.fixture(scope="session")
def upstreams() -> Iterator[SampleUpstreams]:
    with SampleUpstreams(size=SIZE) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    if "upstreams" not in request.fixturenames:
        yield
        return
    running: SampleUpstreams = request.getfixturevalue("upstreams")
    running.reset()
    yield
    running.reset()


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
    """``build(variant, env=None, **overrides)``: an adapter, closed after the test."""
    built: list[Adapter] = []

    def make(variant: str, env: dict[str, str] | None = None, **overrides: Any) -> Adapter:
        config = configure(variant, env, **overrides)
        adapter = build_adapter(config.upstreams[variant])
        built.append(adapter)
        return adapter

    yield make
    for adapter in built:
        await adapter.aclose()

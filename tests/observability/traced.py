"""Gateways tracing into an in-memory exporter, for the tracing tests (the ``traced``
fixture of this folder's conftest), and the query they trace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import FAST, api_client
from tests.in_process import lifespan

THREE_UPSTREAMS = """query Profile($email: String!) {
  customer(email: $email) {
    email lifecycleStage lifetimeValue { amount } engagement { sessions30d }
  }
}"""

Traced = Callable[..., Any]


def traced_gateways(samples: SampleUpstreams, seeded_url: str) -> Traced:
    """A factory of gateways tracing into an in-memory exporter (``exporter=None``: as
    configured, i.e. off), each with a client holding an admin key."""

    @asynccontextmanager
    async def instance(
        exporter: InMemorySpanExporter | None,
        overrides: dict[str, dict[str, Any]] | None = None,
        **settings: Any,
    ) -> AsyncIterator[httpx.AsyncClient]:
        tables = {name: {**FAST, **(overrides or {}).get(name, {})} for name in samples.base_urls}
        config = sample_upstreams_config(samples.base_urls, tables)
        app = create_app(
            load_settings(database_url=seeded_url, cache_url="memory://", **settings),
            upstreams=config,
            span_exporter=exporter,
        )
        async with lifespan(app), api_client(app) as http:
            yield http

    return instance

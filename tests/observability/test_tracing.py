"""Traces: one per request, the upstream calls under it, and no customer data in them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import FAST, api_client
from tests.gql_client import gql
from tests.in_process import lifespan

THREE_UPSTREAMS = """query Profile($email: String!) {
  customer(email: $email) {
    email lifecycleStage lifetimeValue { amount } engagement { sessions30d }
  }
}"""

Traced = Callable[..., Any]


@pytest.fixture
def traced(samples: SampleUpstreams, seeded_url: str) -> Traced:
    """A factory of gateways tracing into an in-memory exporter."""

    @asynccontextmanager
    async def instance(
        exporter: InMemorySpanExporter, **settings: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        config = sample_upstreams_config(
            samples.base_urls, {name: dict(FAST) for name in samples.base_urls}
        )
        app = create_app(
            load_settings(database_url=seeded_url, cache_url="memory://", **settings),
            upstreams=config,
            span_exporter=exporter,
        )
        async with lifespan(app), api_client(app) as http:
            yield http

    return instance


def _by_id(spans: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in spans}


def _ancestors(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    found = []
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
        found.append(span)
    return found


async def test_a_query_over_three_upstreams_is_one_trace_with_their_calls_under_the_request(
    traced: Traced, samples: SampleUpstreams
) -> None:
    exporter = InMemorySpanExporter()
    async with traced(exporter) as client:
        exporter.clear()  # the key's creation and the lifespan's own work
        body = await gql(client, THREE_UPSTREAMS, email=samples.people[3].email)
        assert "errors" not in body, body
    spans = exporter.get_finished_spans()
    for s in spans:
        print(
            s.name,
            s.parent and hex(s.parent.span_id),
            hex(s.context.span_id),
            dict(s.attributes or {}),
        )
    assert len({span.context.trace_id for span in spans}) == 1
    by_id = _by_id(spans)
    (request,) = [s for s in spans if s.parent is None]
    assert request.name == "POST /graphql"
    calls = [s for s in spans if s.name.startswith("upstream ")]
    assert {s.attributes["gateway.upstream"] for s in calls if s.attributes} >= {
        "hubspot",
        "shopify",
        "segment",
    }
    for call in calls:
        assert request in _ancestors(call, by_id)

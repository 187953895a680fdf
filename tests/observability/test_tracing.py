"""Traces: one per request, the upstream calls under it, W3C trace context in and out,
nothing at all when tracing is off, and no customer data in any span."""

from __future__ import annotations

import io
import logging

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from demo.upstreams.runner import SampleUpstreams
from gateway.observability import tracing
from gateway.observability.logs import JsonFormatter
from gateway.settings import load_settings
from tests.gql_client import gql
from tests.observability.otlp_receiver import otlp_receiver
from tests.observability.traced import THREE_UPSTREAMS, Traced

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _by_id(spans: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in spans}


def _ancestors(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    found = []
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
        found.append(span)
    return found


def _request(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    (request,) = [s for s in spans if s.name == name and s.kind.name == "SERVER"]
    return request


async def test_a_query_over_three_upstreams_is_one_trace_with_their_calls_under_the_request(
    traced: Traced, samples: SampleUpstreams
) -> None:
    exporter = InMemorySpanExporter()
    async with traced(exporter) as client:
        exporter.clear()  # the key's creation and the lifespan's own work
        body = await gql(client, THREE_UPSTREAMS, email=samples.people[3].email)
        assert "errors" not in body, body
    spans = exporter.get_finished_spans()
    request = _request(spans, "POST /graphql")
    mine = [s for s in spans if s.context.trace_id == request.context.trace_id]
    by_id = _by_id(tuple(mine))
    calls = {
        str((s.attributes or {})["gateway.upstream"]): s for s in mine if "upstream " in s.name
    }
    assert set(calls) == {"hubspot", "shopify", "segment"}
    for call in calls.values():
        assert request in _ancestors(call, by_id)
        # Each call's HTTP attempt (httpx) is its child.
        attempts = [s for s in mine if s.parent and s.parent.span_id == call.context.span_id]
        assert [s.kind.name for s in attempts] == ["CLIENT"]
    # In parallel: every call started before any of them ended.
    assert max(c.start_time or 0 for c in calls.values()) < min(
        c.end_time or 0 for c in calls.values()
    )
    names = {s.name for s in mine}
    assert {"loader crm", "loader commerce", "loader analytics"} <= names
    assert any(n.startswith("cache read") for n in names)
    assert any(n.startswith("SELECT") for n in names)  # the database's statements


async def test_the_callers_trace_context_is_honoured_and_passed_to_the_upstreams(
    traced: Traced, samples: SampleUpstreams
) -> None:
    exporter = InMemorySpanExporter()
    for service in (samples.hubspot, samples.shopify, samples.segment):
        service.traceparents.clear()
    async with traced(exporter) as client:
        response = await client.post(
            "/graphql",
            json={"query": THREE_UPSTREAMS, "variables": {"email": samples.people[4].email}},
            headers={"traceparent": TRACEPARENT},
        )
        assert response.status_code == 200
    request = _request(exporter.get_finished_spans(), "POST /graphql")
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    for service in (samples.hubspot, samples.shopify, samples.segment):
        assert service.traceparents, service.name
        assert all(tp.split("-")[1] == TRACE_ID for tp in service.traceparents)


async def test_retries_are_events_of_the_upstream_call_and_logs_name_the_trace(
    traced: Traced, samples: SampleUpstreams
) -> None:
    exporter = InMemorySpanExporter()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("adapters.transport.retry")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with traced(exporter) as client:
            samples.hubspot.faults.update(rate_limit_next=1, retry_after_s=0.01)
            body = await gql(client, THREE_UPSTREAMS, email=samples.people[5].email)
            assert "errors" not in body, body
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.name.startswith("upstream hubspot")]
    (retry,) = [e for e in call.events if e.name == "retry"]
    assert dict(retry.attributes or {}) == {
        "attempt": 1,
        "wait_s": 0.01,
        "error": "UPSTREAM_RATE_LIMITED",
    }
    (line,) = [orjson.loads(x) for x in stream.getvalue().splitlines() if "retrying" in x]
    assert line["trace_id"] == f"{call.context.trace_id:032x}"
    assert line["span_id"] == f"{call.context.span_id:016x}"


async def test_the_breakers_decisions_are_events_of_the_upstream_call(
    traced: Traced, samples: SampleUpstreams
) -> None:
    exporter = InMemorySpanExporter()
    overrides = {"hubspot": {"breaker": {"failure_threshold": 1, "reset_timeout_s": 60}}}
    async with traced(exporter, overrides) as client:
        samples.hubspot.faults.update(error_rate=1.0, error_status=503)
        for person in samples.people[8:10]:
            await gql(client, THREE_UPSTREAMS, email=person.email)
    calls = [s for s in exporter.get_finished_spans() if s.name.startswith("upstream hubspot")]
    assert [[e.name for e in call.events] for call in calls] == [
        ["breaker opened"],
        ["breaker refused"],
    ]
    assert [(call.attributes or {})["gateway.error"] for call in calls] == [
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_UNAVAILABLE",
    ]


async def test_off_by_default_nothing_is_traced(traced: Traced, samples: SampleUpstreams) -> None:
    assert load_settings().otel_endpoint is None
    for service in (samples.hubspot, samples.shopify):
        service.traceparents.clear()
    async with traced(None) as client:
        assert not tracing.tracing_on()
        assert tracing.span("anything") is tracing.span("else")  # one shared null context
        body = await gql(client, THREE_UPSTREAMS, email=samples.people[6].email)
        assert "errors" not in body, body
    # Nothing was instrumented: no trace context went to the upstreams.
    assert not samples.hubspot.traceparents
    assert not samples.shopify.traceparents


async def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(
    traced: Traced, samples: SampleUpstreams
) -> None:
    with otlp_receiver() as (endpoint, received):
        async with traced(None, otel_endpoint=endpoint) as client:
            assert tracing.tracing_on()
            body = await gql(client, THREE_UPSTREAMS, email=samples.people[7].email)
            assert "errors" not in body, body
        # Closing the app sent what the batch processor held.
    assert not tracing.tracing_on()
    assert received.content_types == {"application/x-protobuf"}
    # The process's provider is made once, by the first app tracing in it: its name.
    assert {service for service, _ in received.spans} == {"personalization-gateway"}
    names = {span.name for _, span in received.spans}
    assert "POST /graphql" in names
    assert {f"upstream {u}" for u in ("hubspot", "shopify", "segment")} <= {
        " ".join(name.split(" ")[:2]) for name in names
    }
    requests = [s for _, s in received.spans if s.name == "POST /graphql"]
    calls = [s for _, s in received.spans if s.name.startswith("upstream ")]
    assert {c.trace_id for c in calls} == {requests[0].trace_id}

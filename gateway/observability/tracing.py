"""Distributed tracing with OpenTelemetry: off, at no cost, unless an endpoint is set.

Off (no ``GATEWAY_OTEL_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``): no provider is
made, nothing is instrumented, the ASGI app is not wrapped, and ``span()`` answers one
shared null context after one integer test.

On: one SDK tracer provider for the process (OpenTelemetry's global, set once), sampling
parent-based (a ``traceparent`` from the caller decides), its spans redacted
(span_redaction.py) and sent over OTLP/HTTP in batches. Traced: each request (ASGI,
``traceparent`` honoured), the SQL statements (SQLAlchemy), Redis commands, each HTTP
attempt to an upstream (httpx, which passes ``traceparent`` on), and the gateway's own
spans: resolver batches, each upstream call (adapters/transport/retry.py: retries and
breaker decisions as events), cache reads, webhooks, stream batches and renders.

Each app's ``Tracing`` adds its processor to the process's provider while it is open,
so tests can open several apps, each with an exporter of its own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.util.types import AttributeValue
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.observability.span_redaction import RedactingExporter, mask_path
from gateway.tracing_settings import TracingSettings

__all__ = ["Tracing", "request_span_options", "span", "traces_url", "tracing_on"]

_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()
_UNTRACED_PATHS = "healthz,readyz,metrics"  # probes every few seconds: noise, not load


class _Processors(SpanProcessor):
    """The processors of the apps open in this process, changed as they open and close."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: tuple[SpanProcessor, ...] = ()

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._open = (*self._open, processor)

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._open = tuple(p for p in self._open if p is not processor)

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        for processor in self._open:
            processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self._open:
            processor.on_end(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self._open)


class _Process:
    """The process's provider, made when the first app traces; how many apps do."""

    provider: TracerProvider | None = None
    tracer: trace.Tracer = trace.NoOpTracer()
    processors = _Processors()
    open_count = 0


def tracing_on() -> bool:
    return _Process.open_count > 0


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """A span of the gateway's own around a block; the null context when tracing is off.
    Attributes are ids, counts and names of things, never customer data."""
    if not _Process.open_count:
        return _NULL
    return _Process.tracer.start_as_current_span(name, attributes=attributes)


def _provider(settings: TracingSettings) -> TracerProvider:
    if _Process.provider is None:
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: settings.otel_service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio)),
        )
        provider.add_span_processor(_Process.processors)
        # Global too: the adapters (which cannot import this module) trace through it.
        trace.set_tracer_provider(provider)
        _Process.provider = provider
        _Process.tracer = provider.get_tracer("gateway")
    return _Process.provider


def _span_details(scope: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The request span's name: the method and the path, customer data masked."""
    method = str(scope.get("method") or "WS")
    return f"{method} {mask_path(str(scope.get('path') or '/'))}", {}


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces URL under a collector's base URL (as OpenTelemetry's own
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is read)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def request_span_options(
    settings: TracingSettings, *, forced: bool = False
) -> dict[str, Any] | None:
    """The options of OpenTelemetry's ASGI middleware, which the edge puts in front of the
    app to start each request's span (the incoming ``traceparent`` honoured), when tracing
    is configured (or ``forced``: a test's exporter); else None: no middleware at all."""
    if not (forced or settings.otel_endpoint):
        return None
    return {
        "excluded_urls": _UNTRACED_PATHS,
        "default_span_details": _span_details,
        "tracer_provider": _provider(settings),
        "meter_provider": NoOpMeterProvider(),
        "exclude_spans": ["receive", "send"],
    }


class Tracing:
    """This app's part in tracing: its processor, and what it instruments."""

    def __init__(self, provider: TracerProvider | None, processor: SpanProcessor | None) -> None:
        self.provider = provider
        self._processor = processor

    @classmethod
    def open(cls, settings: TracingSettings, exporter: SpanExporter | None = None) -> Tracing:
        """Tracing as configured; ``exporter`` (tests: an in-memory one) turns it on and
        receives every span synchronously."""
        if exporter is None and not settings.otel_endpoint:
            return cls(None, None)
        provider = _provider(settings)
        processor: SpanProcessor
        if exporter is not None:
            processor = SimpleSpanProcessor(RedactingExporter(exporter))
        else:
            assert settings.otel_endpoint is not None
            otlp = OTLPSpanExporter(endpoint=traces_url(settings.otel_endpoint))
            processor = BatchSpanProcessor(RedactingExporter(otlp))
        _Process.processors.add(processor)
        _Process.open_count += 1
        return cls(provider, processor)

    @property
    def on(self) -> bool:
        return self.provider is not None

    def instrument(
        self,
        *,
        engine: AsyncEngine | None = None,
        redis: Any | None = None,
        http: Iterable[httpx.AsyncClient] = (),
    ) -> None:
        """Trace these clients' operations (each is instrumented once)."""
        if self.provider is None:
            return
        if engine is not None:
            tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
            usage = NoOpMeterProvider().get_meter("sqlalchemy").create_up_down_counter("db")
            EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]
        if redis is not None:
            RedisInstrumentor.instrument_client(redis, tracer_provider=self.provider)
        for client in http:
            HTTPXClientInstrumentor.instrument_client(
                client, tracer_provider=self.provider, meter_provider=NoOpMeterProvider()
            )

    def close(self) -> None:
        """Send what is left, then stop adding this app's spans."""
        if self._processor is None:
            return
        self._processor.force_flush()
        _Process.processors.remove(self._processor)
        self._processor.shutdown()
        self._processor = None
        _Process.open_count -= 1

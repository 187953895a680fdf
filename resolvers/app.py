"""The application factory: the composition root that wires settings, services and the API.

Nothing happens at import time. ``create_app`` builds a Starlette app whose
lifespan opens the services (database engine, later caches and upstream clients)
once per process, yields them as the typed state of resolvers/state.py, and closes
them on shutdown.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace.export import SpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from adapters.config import UpstreamsConfig
from gateway import __version__
from gateway.ingest.streams.running import serving_consumer
from gateway.observability import metrics
from gateway.observability.logs import configure_worker_logging
from gateway.observability.readiness import Readiness
from gateway.observability.tracing import request_span_options
from gateway.services import Services
from gateway.settings import Settings, is_loopback, load_settings
from gateway.upstreams.event_store import ESP_SOURCES
from resolvers.console.csrf import STUDIO_MAX_FORM_BYTES, STUDIO_POSTS, STUDIO_TOO_LARGE
from resolvers.console.parts import ConsoleParts
from resolvers.console.routes import console_routes
from resolvers.graphql.schema import build_schema
from resolvers.http.authentication import ApiKeyAuthentication
from resolvers.http.body_limit import BodyLimitMiddleware
from resolvers.http.error_boundary import ErrorBoundary
from resolvers.http.graphiql import ASSETS_PACKAGE, ASSETS_PATH
from resolvers.http.persisted_queries import PersistedQueries
from resolvers.http.profile_api import profile_endpoint
from resolvers.http.recommendations_api import recommendations_endpoint
from resolvers.http.request_id import RequestIdMiddleware
from resolvers.http.stored_answers import StoredAnswers
from resolvers.http.view import GatewayGraphQL
from resolvers.http.webhooks import webhook_endpoint
from resolvers.state import AppState, services_of, state_of

# With 32 requests in flight, a young collection finds their objects still alive and
# promotes them; promoted objects are what trigger full collections. A larger young
# generation promotes fewer of them. (Measured when each request also left ~100 objects
# in a reference cycle, since removed by resolvers/graphql/execution/: 0.58 s of pauses per
# 10 s under load instead of 1.34 s with the default (700, 10, 10).)
_GC_THRESHOLDS = (10_000, 3, 10)


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving; says nothing about its dependencies."""
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> JSONResponse:
    """Whether this instance can serve, and how well.

    The rule: gateway/observability/readiness.py.
    """
    readiness = state_of(request)["readiness"]
    status, body = await readiness.answer()
    return JSONResponse(body, status_code=status)


async def metrics_endpoint(request: Request) -> Response:
    services = services_of(request)
    body, content_type = metrics.exposition(services.settings.metrics_multiprocess_dir)
    return Response(body, media_type=content_type)


async def root(request: Request) -> RedirectResponse:
    return RedirectResponse("/graphql")


def create_app(
    settings: Settings | None = None,
    *,
    upstreams: UpstreamsConfig | None = None,
    example_email: str | None = None,
    example_key: str | None = None,
    span_exporter: SpanExporter | None = None,
) -> Starlette:
    """The ASGI app. ``upstreams`` overrides the settings' upstreams file (demo, tests);
    ``example_key`` pre-fills GraphiQL's headers (the demo's own key only, and only when
    bound to loopback); ``span_exporter`` (tests) traces into that exporter."""
    settings = settings or load_settings()
    # Here, not only in `gateway serve`: each of uvicorn's workers is a fresh process.
    repeats = configure_worker_logging(
        settings.log_level, repeat_interval_s=settings.log_repeat_interval_s
    )
    schema = build_schema(settings)
    if not is_loopback(settings.host):
        # The page needs no key to load: pre-filled, a key would be everyone's who can
        # reach the port. Only a demo on this machine shows its own.
        example_key = None
    view = GatewayGraphQL(
        schema, graphiql=settings.graphiql, example_email=example_email, example_key=example_key
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        services = Services.open(settings, upstreams, span_exporter)
        readiness = Readiness.open(settings, services.breakers())
        readiness.start()
        services.runs.schedule()  # retention and exports on their intervals, if configured
        flushing = asyncio.get_running_loop().create_task(repeats.run()) if repeats else None
        consumer = (
            serving_consumer(services, upstreams) if settings.stream_consume_in_serve else None
        )
        consuming = asyncio.get_running_loop().create_task(consumer.run()) if consumer else None
        if consumer is not None:
            readiness.consumer = consumer.status.report
        state = AppState(
            services=services,
            readiness=readiness,
            # Kept in the process's cache, shared through Redis by every instance.
            persisted_queries=PersistedQueries(
                services.redis,
                max_bytes=settings.persisted_query_max_bytes,
                max_count=settings.persisted_queries_max,
                ttl_s=settings.persisted_query_ttl_s,
            ),
            consumer=consumer,
            console=ConsoleParts.build(schema, settings),
        )
        # Everything built so far lives as long as the process: move it out of the
        # collector's way, so full collections under load scan only request garbage.
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(*_GC_THRESHOLDS)
        try:
            # Starlette hands every request and socket a copy: resolvers/state.py.
            yield state
        finally:
            gc.set_threshold(*thresholds)
            if flushing is not None:
                flushing.cancel()
                await asyncio.gather(flushing, return_exceptions=True)
            if consumer is not None and consuming is not None:
                consumer.stop()  # the batch in flight commits and is acknowledged first
                await asyncio.gather(consuming, return_exceptions=True)
                await consumer.transport.aclose()
            await readiness.aclose()
            await services.aclose()
            if repeats is not None:
                repeats.flush()

    routes = [
        Route("/", root),
        Route("/graphql", view),
        WebSocketRoute("/graphql", view),
        Route("/api/v1/users/{user_id}/profile", profile_endpoint(schema), methods=["GET"]),
        Route("/api/recommendations", recommendations_endpoint, methods=["POST"]),
        Route("/webhooks/{source}", webhook_endpoint, methods=["POST", "GET", "HEAD"]),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Route("/readyz", readyz),
        Mount(ASSETS_PATH, StaticFiles(packages=[(ASSETS_PACKAGE, "static")]), name="graphiql"),
        *console_routes(),
    ]
    # Outermost of all, when tracing: each request's span covers everything below.
    traced = request_span_options(settings, forced=span_exporter is not None)
    middleware = [
        *([Middleware(OpenTelemetryMiddleware, **traced)] if traced is not None else []),
        # Outermost otherwise: nothing raised inside reaches uvicorn, which would drop the
        # client's keep-alive connection (Starlette's own 500 page re-raises).
        Middleware(ErrorBoundary),
        Middleware(RequestIdMiddleware),
        Middleware(
            BodyLimitMiddleware,
            max_bytes=settings.max_body_bytes,
            paths={
                **{f"/webhooks/{esp}": settings.esp_webhook_max_body_bytes for esp in ESP_SOURCES},
                **dict.fromkeys(STUDIO_POSTS, max(STUDIO_MAX_FORM_BYTES, settings.max_body_bytes)),
            },
            messages=dict.fromkeys(STUDIO_POSTS, STUDIO_TOO_LARGE),
        ),
        Middleware(ApiKeyAuthentication),
        # Innermost: a stored answer is served after authentication and the rate limit.
        Middleware(StoredAnswers),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)

"""The app's lifespan state: every long-lived object the edge reads, typed.

The lifespan in resolvers/app.py yields an ``AppState``; Starlette hands each request
and socket a shallow copy of it in its scope (``request.state``). Handlers read it
through ``state_of`` rather than ``app.state``, so a reader sees in one place all that
lives as long as the process.
"""

from __future__ import annotations

from typing import TypedDict, cast

from starlette.requests import HTTPConnection
from starlette.types import Scope

from gateway.ingest.streams.consumer import StreamConsumer
from gateway.observability.readiness import Readiness
from gateway.services import Services
from resolvers.console.parts import ConsoleParts
from resolvers.http.persisted_queries import PersistedQueries


class AppState(TypedDict):
    """What the lifespan opens once per process and closes on shutdown."""

    services: Services
    readiness: Readiness
    # The edge's own long-lived part: documents clients refer to by hash.
    persisted_queries: PersistedQueries
    # The stream consumer this worker runs (GATEWAY_STREAM_CONSUME_IN_SERVE), or None.
    consumer: StreamConsumer | None
    # The operator console's schema, session signer and page templates.
    console: ConsoleParts


def state_in(scope: Scope) -> AppState:
    """The lifespan state as this request or socket sees it (middleware: its scope)."""
    # The server copies the dict the lifespan yielded into every connection's scope.
    return cast(AppState, scope["state"])


def state_of(connection: HTTPConnection) -> AppState:
    return state_in(connection.scope)


def services_in(scope: Scope) -> Services:
    return state_in(scope)["services"]


def services_of(connection: HTTPConnection) -> Services:
    return state_in(connection.scope)["services"]

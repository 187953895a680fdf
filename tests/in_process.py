"""The app served in this process, without a server: its lifespan and its typed state.

A server (uvicorn, Starlette's TestClient) runs the lifespan and copies the state it
yields into every connection's scope. Tests and benchmarks that call the app directly
through ``httpx.ASGITransport`` do the same here: ``lifespan(app)`` opens it, and
``asgi(app)`` hands each request a copy, as uvicorn would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast
from weakref import WeakKeyDictionary

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from gateway.services import Services
from resolvers.state import AppState

_OPEN: WeakKeyDictionary[Starlette, AppState] = WeakKeyDictionary()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
    """The app's lifespan, open for as long as the block runs."""
    async with app.router.lifespan_context(app) as state:
        _OPEN[app] = cast(AppState, state)
        try:
            yield _OPEN[app]
        finally:
            _OPEN.pop(app, None)


def opened_by(app: Starlette, server: uvicorn.Server) -> None:
    """Note the state of an app a uvicorn server in this process has started."""
    _OPEN[app] = cast(AppState, server.lifespan.state)


def state_of(app: Starlette | TestClient) -> AppState:
    """The state of an app opened by ``lifespan``, ``opened_by`` or a TestClient."""
    if isinstance(app, TestClient):
        return cast(AppState, app.app_state)
    return _OPEN[app]


def services_of(app: Starlette | TestClient) -> Services:
    return state_of(app)["services"]


def asgi(app: Starlette) -> httpx.ASGITransport:
    """In-process HTTP to the app, each request carrying the lifespan's state."""

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        state = _OPEN.get(app)
        if state is not None and scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return httpx.ASGITransport(app=served)

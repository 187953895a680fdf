"""A request id for every request: taken from ``X-Request-ID`` when the caller sends a
sane one, made up otherwise, echoed in the response and set in ``REQUEST_ID`` for every
log line (gateway/observability/request_context.py).

The outermost layer of every request, so it also ends quietly a request whose client
left before sending its body: nobody is there to answer, and it is no failure of the
server (uvicorn would log it as one, with a traceback)."""

from __future__ import annotations

import os
import re

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability.request_context import REQUEST_ID, REQUEST_ID_KEY

_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware): it sits on the hot path of every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        text = given.decode("latin-1")
        # The same 32 hex digits as uuid4().hex, without building a UUID per request.
        request_id = text if _SANE.match(text) else os.urandom(16).hex()
        token = REQUEST_ID.set(request_id)
        scope[REQUEST_ID_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            return
        finally:
            REQUEST_ID.reset(token)

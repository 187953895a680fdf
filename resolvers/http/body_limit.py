"""Refuse request bodies over a size limit before the app buffers them.

A pure ASGI middleware: a declared ``Content-Length`` over the limit is answered 413
at once; otherwise the body's chunks are counted as the app reads them (chunked
bodies declare no length), and the first chunk past the limit stops the read. The
rest of the body is never read.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LIMITED_PREFIXES = ("/graphql", "/api/", "/webhooks/")


class _BodyTooLarge(Exception):
    """Raised into the app from ``receive`` when the streamed body passes the limit."""


def too_large_body(max_bytes: int) -> bytes:
    error = {
        "message": f"Request body larger than {max_bytes} bytes",
        "extensions": {"code": "BODY_TOO_LARGE", "limit": max_bytes},
    }
    return orjson.dumps({"errors": [error]})


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_bytes: int, prefixes: tuple[str, ...] = LIMITED_PREFIXES
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return

        received = 0
        refused = started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the app's own answer to the failed read; the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # An app may wrap the error it got from receive(): any failure after the
            # refusal is that refusal.
            if not refused:
                raise
        if refused and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = too_large_body(self.max_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None

"""Refuse request bodies over a size limit before the app buffers them.

A pure ASGI middleware: a declared ``Content-Length`` over the limit is answered 413
at once; otherwise the body's chunks are counted as the app reads them (chunked
bodies declare no length), and the first chunk past the limit stops the read. The
rest of the body is never read. A path may have a limit of its own (the ESPs' webhooks,
whose batches are larger than any query).

A WebSocket's messages are held to the same limit, each one: a larger one closes the
socket with 1009 (Message Too Big) before the app parses it. A socket is let in before
its key is checked (the key may come in ``connection_init``), and parsing one 16 MiB
message of nested lists held the event loop for 1.3-4.5 s, for anyone (an outside check).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The console's too: its sign-in form is open to anyone, and Starlette buffers a whole
# URL-encoded form (a thousand fields of up to 1 MiB each) before a handler runs.
LIMITED_PREFIXES = ("/graphql", "/api/", "/webhooks/", "/console")


class _BodyTooLarge(Exception):
    """Raised into the app from ``receive`` when the streamed body passes the limit."""


def too_large_body(max_bytes: int, message: str | None = None) -> bytes:
    error = {
        "message": message or f"Request body larger than {max_bytes} bytes",
        "extensions": {"code": "BODY_TOO_LARGE", "limit": max_bytes},
    }
    return orjson.dumps({"errors": [error]})


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        prefixes: tuple[str, ...] = LIMITED_PREFIXES,
        paths: Mapping[str, int] | None = None,
        messages: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = prefixes
        self.paths = dict(paths or {})  # exact path -> its own limit
        self.messages = dict(messages or {})  # exact path -> what its refusal says

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "websocket" and path.startswith(self.prefixes):
            await self.app(scope, _messages_within(self.max_bytes, receive, send), send)
            return
        if scope["type"] != "http" or not path.startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        limit = self.paths.get(path, self.max_bytes)
        message = self.messages.get(path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit, message)
            return

        received = 0
        refused = started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
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
            await _refuse(send, limit, message)


def _messages_within(limit: int, receive: Receive, send: Send) -> Receive:
    """``receive`` of a WebSocket whose messages over ``limit`` close it (1009) and reach
    the app as the disconnect they are, never as text to parse."""

    async def within() -> Message:
        message = await receive()
        if message["type"] == "websocket.receive":
            size = len(message.get("text") or message.get("bytes") or "")
            if size > limit:
                reason = f"Message larger than {limit} bytes"
                await send({"type": "websocket.close", "code": 1009, "reason": reason})
                return {"type": "websocket.disconnect", "code": 1009}
        return message

    return within


async def _refuse(send: Send, limit: int, message: str | None) -> None:
    body = too_large_body(limit, message)
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

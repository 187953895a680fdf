"""The outermost layer of every HTTP request: whatever a route or a middleware raises
is answered as JSON, and the client's keep-alive connection survives it.

uvicorn answers an exception escaping the app with ``500 text/plain`` and, once a
response has started, drops the connection: the client's next request on it fails
with a reset. Here, an exception before the response started is answered instead:

- a dependency that cannot be reached (``Unavailable``: the database, the cache) is
  ``503`` with its code (``DATABASE_UNAVAILABLE``, ``CACHE_UNAVAILABLE``) and
  ``Retry-After``, logged as one warning line without a traceback;
- anything else is a bug: ``500`` with code ``INTERNAL`` and the request id, logged
  with its traceback; its message never reaches the client.

The body reads both ways clients of the gateway read errors: ``errors[0].extensions
.code`` (GraphQL) and ``code``/``error`` (the JSON API). An exception after the
response started cannot be answered any more; it is re-raised, and the connection
closes, as a half-sent response must.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.db.connectivity import is_connectivity_failure, unavailable
from gateway.errors import CacheUnavailable, Unavailable
from gateway.observability.request_context import REQUEST_ID_KEY

logger = logging.getLogger("gateway.errors")
DEFAULT_RETRY_AFTER_S = 5
_CACHE_MESSAGE = "The cache is unreachable; try again shortly."


def as_unavailable(error: BaseException) -> Unavailable | None:
    """The ``Unavailable`` error ``error`` amounts to, or None when it is something else."""
    if isinstance(error, Unavailable):
        return error
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        failure = CacheUnavailable(_CACHE_MESSAGE)
        failure.__cause__ = error
        return failure
    if isinstance(error, SQLAlchemyError) and is_connectivity_failure(error):
        return unavailable(error)  # a database error that escaped the engine's hooks
    return None


def error_body(code: str, message: str, request_id: str | None = None) -> bytes:
    extensions: dict[str, Any] = {"code": code}
    body: dict[str, Any] = {"error": code.lower(), "code": code, "message": message}
    if request_id:
        extensions["request_id"] = body["request_id"] = request_id
    body["errors"] = [{"message": message, "extensions": extensions}]
    return orjson.dumps(body)


def unavailable_headers(retry_after_s: int) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(retry_after_s).encode()), (b"cache-control", b"no-store")]


def retry_after_of(scope: Scope) -> int:
    """The configured Retry-After of a 503, from the running app's settings."""
    app = scope.get("app")
    services = getattr(getattr(app, "state", None), "services", None)
    settings = getattr(services, "settings", None)
    return int(getattr(settings, "unavailable_retry_after_s", DEFAULT_RETRY_AFTER_S))


async def send_json(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ErrorBoundary:
    """Plain ASGI: it wraps every request, so it must cost nothing when nothing fails."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            if started:
                raise
            await self._answer(scope, send, exc)

    async def _answer(self, scope: Scope, send: Send, error: Exception) -> None:
        request_id = scope.get(REQUEST_ID_KEY) or os.urandom(16).hex()
        ids = [(b"x-request-id", request_id.encode())]
        failure = as_unavailable(error)
        if failure is not None:
            logger.warning(
                "answered 503: %s",
                failure.code,
                extra={"code": failure.code, "path": scope.get("path"), "request_id": request_id},
            )
            body = error_body(failure.code, str(failure), request_id)
            await send_json(send, 503, body, [*unavailable_headers(retry_after_of(scope)), *ids])
            return
        logger.error(
            "unhandled error",
            exc_info=error,
            extra={"path": scope.get("path"), "request_id": request_id},
        )
        body = error_body("INTERNAL", "Internal server error.", request_id)
        await send_json(send, 500, body, [(b"cache-control", b"no-store"), *ids])

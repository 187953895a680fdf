"""graphql-transport-ws sockets that keep checking their API key.

An HTTP request is authenticated once and is over in milliseconds; a WebSocket stays
open for hours, and its key may be revoked meanwhile. So the key a socket was opened
with is verified again before each ``subscribe`` (and each such message is charged to
the key's rate limit, as an HTTP request is), before each result is delivered, and
every half key-cache TTL while the socket is open. A refused key closes the socket
with 4403 Forbidden, graphql-transport-ws's code for a refused client: no result is
delivered after a revocation has reached this instance (at once where it was revoked,
within ``GATEWAY_API_KEY_CACHE_TTL_S`` elsewhere), and an idle socket is closed within
half that time more.

Verification goes through the process's key cache (``gateway.access.api_keys``), so a
thousand sockets on one key cost one database read per TTL, not a thousand. While the
database cannot be reached the socket keeps its last answer, as the cache would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from graphql import GraphQLFormattedError
from sqlalchemy.exc import SQLAlchemyError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    ErrorMessage,
    Message,
    SubscribeMessage,
)

from gateway.access.api_keys import Principal
from gateway.access.rate_limit import retry_after_seconds
from gateway.services import Services
from resolvers.graphql.context import Context
from resolvers.http.authentication import COUNTED, presented_key

logger = logging.getLogger("gateway.websocket")

FORBIDDEN = 4403  # graphql-transport-ws: the server refuses this client
_NO_CACHE_INTERVAL_S = 1.0  # between checks when keys are not cached (TTL 0)
_SHORTEST_INTERVAL_S = 0.05


class KeyCheckingTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler, with the key re-verified and charged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch: asyncio.Task[None] | None = None
        self._refused = False

    @property
    def _services(self) -> Services:
        return self.context.services

    def _key(self) -> str | None:
        """The key the socket was opened with: its header's, else connection_init's (the
        authentication middleware and ``on_ws_connect`` accept them in that order)."""
        return presented_key(self.context.request.headers) or presented_key(
            self.context.connection_params or {}
        )

    async def _allowed(self) -> Principal | None:
        """The key's caller now; None, with the socket closed, once the key is refused."""
        if self._refused:
            return None
        key = self._key()
        try:
            principal = await self._services.api_keys.authenticate(key) if key else None
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("API key not re-verified: %s", type(exc).__name__)
            return self.context.principal  # cannot tell: keep the last answer
        if principal is None:
            await self._refuse()
            return None
        self.context.principal = principal
        return principal

    async def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        logger.info("WebSocket closed: its API key is no longer valid")
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden: API key revoked")

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self._watch is None:
            self._watch = asyncio.create_task(self._watch_key(), name="websocket-key-watch")

    async def _watch_key(self) -> None:
        ttl = self._services.settings.api_key_cache_ttl_s
        interval = max(ttl / 2, _SHORTEST_INTERVAL_S) if ttl > 0 else _NO_CACHE_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            if await self._allowed() is None:
                return

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged:  # else the base class closes with 4401
            principal = await self._allowed()
            if principal is None:
                return
            retry_after = await self._services.rate_limit(principal)
            if retry_after is not None:
                await self.send_message(_rate_limited(message["id"], retry_after))
                return
            # That request is the first of what the operation costs: the cost charge
            # (resolvers/graphql/rate_charge.py) adds only the rest, as for a request over HTTP.
            self.context.request.scope[COUNTED] = 1
            limit = self._services.settings.max_body_bytes
            if len(str(message["payload"].get("query") or "")) > limit:
                await self.send_message(_too_large(message["id"], limit))
                return
        await super().handle_subscribe(message)

    async def send_message(self, message: Message) -> None:
        # A result is data: the key is checked before each one leaves.
        if message["type"] == "next" and await self._allowed() is None:
            return
        if not self._refused:
            await super().send_message(message)

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await super().shutdown()


def _rate_limited(operation_id: str, retry_after: float) -> ErrorMessage:
    seconds = retry_after_seconds(retry_after)
    return _error(
        operation_id,
        f"Rate limit exceeded; retry in {seconds} s",
        {"code": "RATE_LIMITED", "retryAfter": seconds},
    )


def _too_large(operation_id: str, limit: int) -> ErrorMessage:
    return _error(
        operation_id,
        f"The query is larger than {limit} bytes",
        {"code": "BODY_TOO_LARGE", "limit": limit},
    )


def _error(operation_id: str, message: str, extensions: dict[str, Any]) -> ErrorMessage:
    error: GraphQLFormattedError = {"message": message, "extensions": extensions}
    return {"id": operation_id, "type": "error", "payload": [error]}

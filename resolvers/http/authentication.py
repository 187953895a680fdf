"""Every API request names its client: an ASGI middleware in front of the routes.

The key travels as ``Authorization: Bearer gwk_…`` (or ``X-API-Key``). A request
without a valid key is answered 401 before any route runs; one over its key's rate
limit is answered 429 with ``Retry-After``; one whose key cannot be checked because
the database is down (and was not verified recently) is answered 503. What a key may
do (its scopes) is checked later, per field, so a query mixing allowed and forbidden
fields still gets the allowed part. The GraphiQL page, health, readiness, metrics,
signed webhooks and the console (signed in with a session cookie of its own) need no
key; a WebSocket may instead send its key in the ``connection_init`` payload, as
browsers cannot set headers on one.
"""

from __future__ import annotations

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.access.api_keys import Principal
from gateway.access.rate_limit import retry_after_seconds
from gateway.errors import Unavailable
from resolvers.http.error_boundary import send_json
from resolvers.state import services_in

PRINCIPAL = "gateway.principal"
COUNTED = "gateway.rate_counted"  # requests already counted against the key's limit
# The console signs its pages in with a session of its own (resolvers/console/).
_OPEN_PREFIXES = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/webhooks/",
    "/graphiql/assets",
    "/console/",
)


def principal_of(scope: Scope) -> Principal | None:
    principal: Principal | None = scope.get(PRINCIPAL)
    return principal


def presented_key(headers: Headers | dict[str, object]) -> str | None:
    """The key in an Authorization (Bearer) or X-API-Key header, or connection params."""
    raw = headers.get("authorization") or headers.get("Authorization")
    if isinstance(raw, str):
        scheme, _, value = raw.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    raw = headers.get("x-api-key") or headers.get("apiKey")
    return raw.strip() if isinstance(raw, str) and raw.strip() else None


def error_body(message: str, code: str) -> bytes:
    return orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


class ApiKeyAuthentication:
    """Authenticates and rate-limits each API request, then passes it on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"} or _is_open(scope):
            await self.app(scope, receive, send)
            return
        services = services_in(scope)
        key = presented_key(Headers(scope=scope))
        try:
            principal = await services.api_keys.authenticate(key) if key else None
        except Unavailable:
            if scope["type"] == "websocket":  # 1013: try again later
                await send({"type": "websocket.close", "code": 1013, "reason": "Unavailable"})
                return
            raise  # answered 503 by the error boundary
        if scope["type"] == "websocket":
            # Without a header the key may still come in connection_init (see the view).
            if key is not None and principal is None:
                await send({"type": "websocket.close", "code": 4401, "reason": "Unauthorized"})
                return
            scope[PRINCIPAL] = principal
            await self.app(scope, receive, send)
            return
        if principal is None:
            reason = "Invalid or revoked API key" if key else "An API key is required"
            await send_json(
                send,
                401,
                error_body(
                    f"{reason}: send it as 'Authorization: Bearer <key>'", "UNAUTHENTICATED"
                ),
                [(b"www-authenticate", b'Bearer realm="gateway"')],
            )
            return
        retry_after = await services.rate_limit(principal)
        if retry_after is not None:
            await rate_limited_response(retry_after)(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        scope[COUNTED] = 1  # a GraphQL operation then counts the rest of its cost
        await self.app(scope, receive, send)


def _is_open(scope: Scope) -> bool:
    path: str = scope["path"]
    if path.startswith(_OPEN_PREFIXES) or path in ("/", "/console"):
        return True
    # The GraphiQL page itself: a browser GET with no operation in it.
    return (
        scope["type"] == "http"
        and path == "/graphql"
        and scope["method"] == "GET"
        and not scope.get("query_string")
    )


def rate_limited_response(retry_after: float) -> Response:
    """The 429 answer to a request over its key's limit, as a GraphQL-style JSON error."""
    seconds = retry_after_seconds(retry_after)
    error = {
        "message": f"Rate limit exceeded; retry in {seconds} s",
        "extensions": {"code": "RATE_LIMITED", "retryAfter": seconds},
    }
    return Response(
        orjson.dumps({"errors": [error]}),
        status_code=429,
        media_type="application/json",
        headers={"Retry-After": str(seconds)},
    )

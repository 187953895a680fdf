"""Send-time profile JSON for ESPs that call one URL per recipient (Braze Connected
Content style): ``GET /api/v1/users/{user_id}/profile``.

It runs a fixed GraphQL document through the same schema, loaders and cache as
``/graphql``, answers snake_case JSON a template can use directly, and sets
``Cache-Control`` from how long the data may still be reused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
import strawberry
from starlette.requests import Request
from starlette.responses import Response

from resolvers.graphql.context import Context
from resolvers.graphql.errors import unavailable_of
from resolvers.http.outage import degraded, unavailable_response

PROFILE_DOCUMENT = """
query Profile($id: ID, $email: String, $identity: String) {
  customer(id: $id, email: $email, identity: $identity) {
    id email firstName lastName locale phone suppressed
    consent { emailMarketing personalisation analytics }
    lifecycleStage company city country
    lifetimeValue { amount currency } orderCount lastOrderAt
    engagement { sessions30d pageViews30d lastSeenAt }
    cart { subtotal items { productId title quantity price } }
    sources { upstream status ageSeconds errorCode }
  }
}
"""
_SOURCE = re.compile(r"[a-z][a-z0-9_]*")  # as identity sources are named
# Word boundaries in camelCase, digits included: pageViews30d -> page_views_30d.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[a-zA-Z])(?=[0-9])")


def _snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {_CAMEL.sub("_", k).lower(): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


def _variables(user_id: str) -> dict[str, str]:
    """A unified id, an email address, or ``source:external_id`` (e.g. ``hubspot:51000007``).

    A source name first: an address never holds a ``:`` outside quotes (which the
    gateway does not accept), while an external id may hold an ``@`` (Segment's)."""
    source, colon, _ = user_id.partition(":")
    if colon and _SOURCE.fullmatch(source):
        return {"identity": user_id}
    if "@" in user_id:
        return {"email": user_id}
    return {"id": user_id}


def profile_endpoint(schema: strawberry.Schema) -> Any:
    async def profile(request: Request) -> Response:
        context = Context.of(request)
        result = await schema.execute(
            PROFILE_DOCUMENT,
            variable_values=_variables(request.path_params["user_id"]),
            context_value=context,
        )
        data = (result.data or {}).get("customer")
        errors = [
            {"message": e.message, "path": e.path, **(e.extensions or {})}
            for e in result.errors or []
        ]
        if data is None and not errors:
            body = {"error": "not_found", "message": "No customer with this id"}
            return Response(
                orjson.dumps(body),
                status_code=404,
                media_type="application/json",
                headers={"Cache-Control": "no-store"},
            )
        outage = next(filter(None, map(unavailable_of, result.errors or [])), None)
        if data is None and outage is not None:
            # Not the ESP's fault, and worth retrying: never a 4xx it would give up on.
            return unavailable_response(context.services, outage.code, str(outage))
        if data is None:
            # A key without profiles:read is refused, not mistaken: 403, as for recommendations.
            refused = any(e.get("code") == "FORBIDDEN" for e in errors)
            return Response(
                orjson.dumps(
                    {"error": "forbidden" if refused else "bad_request", "errors": errors}
                ),
                status_code=403 if refused else 400,
                media_type="application/json",
                headers={"Cache-Control": "no-store"},
            )
        # Seconds until the first source's data is due for a refresh; 0 when any is stale.
        note = degraded(context.services)
        max_age = 0 if errors or note else context.loaders.fresh_for()
        payload = _snake(data) | {"errors": errors, "generated_at": datetime.now(UTC).isoformat()}
        if note is not None:
            payload["degraded"] = _snake(note)
        return Response(
            orjson.dumps(payload),
            media_type="application/json",
            headers={"Cache-Control": f"private, max-age={max_age}"},
        )

    return profile

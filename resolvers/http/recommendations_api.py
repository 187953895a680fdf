"""``POST /api/recommendations``: recommendations as JSON, for an ESP at send time.

Body: ``{"customer_id": "<unified id>", "limit": 4, "category": "Shoes",
"exclude_purchased": true, "max_per_category": 2, "send_id": "spring-sale-1",
"context": {"browsing_history": ["<product id>", …], "purchase_history": […]}}``; only
``customer_id`` is required. The context is what the ESP knows that the last build does
not (this session's views, today's order). The answer's ``list_id`` names the served
list, recorded as an impression (with ``send_id``); each item's ``url`` carries the
tracking parameter that attributes a click to it. In a running experiment the
customer's variant decides the strategy (a holdout gets an empty list). Errors
answer ``{"error": code, "field": name, "message": …}``: 400 for a body that is not a
JSON object, 422 for a bad field, 404 for an unknown customer, 502 when the shop fails,
403 for a key without ``profiles:read`` (the same scope as
``Customer.recommendations``). Each answer is a read of the customer, and audited as
``api:recommendations``.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response

from adapters.errors import UpstreamError
from gateway.access.api_keys import Scope
from gateway.privacy.audit import Action
from gateway.recommendations.serving import (
    MAX_LIMIT,
    Recommendation,
    RecommendationContext,
)
from resolvers.graphql.access import forbidden, record_access, sees_profiles
from resolvers.http.authentication import principal_of
from resolvers.state import services_of

_MAX_HISTORY = 200  # product ids per history list


class _Context(BaseModel):
    model_config = ConfigDict(extra="forbid")
    browsing_history: list[str] = Field(default_factory=list, max_length=_MAX_HISTORY)
    purchase_history: list[str] = Field(default_factory=list, max_length=_MAX_HISTORY)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: uuid.UUID
    limit: int = Field(default=4, ge=1, le=MAX_LIMIT)
    category: str | None = Field(default=None, max_length=100)
    exclude_purchased: bool = True
    max_per_category: int | None = Field(default=None, ge=0, le=MAX_LIMIT)
    send_id: str | None = Field(default=None, min_length=1, max_length=255)
    context: _Context | None = None

    @field_validator("send_id")
    @classmethod
    def _printable(cls, send_id: str | None) -> str | None:
        # As GraphQL's sendId: a NUL cannot be stored on Postgres (its impression failed
        # its whole batch's COPY, retried for ever).
        if send_id is not None and not send_id.isprintable():
            raise ValueError("send_id is printable characters only")
        return send_id


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _problem(status: int, code: str, message: str, field: str | None = None) -> Response:
    return _json({"error": code, "field": field, "message": message}, status)


def _item(found: Recommendation, link: str | None) -> dict[str, Any]:
    product = found.product
    price = product.price
    return {
        "product_id": product.external_id,
        "title": product.title,
        "price": {"amount": str(price.amount), "currency": price.currency} if price else None,
        "image_url": product.image_url,
        "url": link,
        "category": found.category,
        "score": found.score,
        "reason": found.reason,
    }


async def recommendations_endpoint(request: Request) -> Response:
    services = services_of(request)
    principal = principal_of(request.scope)
    if not sees_profiles(principal):
        refused = forbidden(principal, Scope.PROFILES_READ, "/api/recommendations")
        return _problem(403, "forbidden", str(refused))
    try:
        raw = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _problem(400, "bad_request", "the body must be a JSON object")
    if not isinstance(raw, dict):
        return _problem(400, "bad_request", "the body must be a JSON object")
    try:
        body = _Body.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        return _problem(422, "invalid", first["msg"], field)
    if await services.customers.get(body.customer_id) is None:
        return _problem(404, "not_found", "no customer with this id", "customer_id")
    personalised = await services.recommendations.personalised(body.customer_id)
    given = body.context or _Context()
    try:
        served = await services.served.for_customer(
            body.customer_id,
            surface="api",
            send_id=body.send_id,
            limit=body.limit,
            category=body.category,
            exclude_purchased=body.exclude_purchased,
            personalised=personalised,
            max_per_category=body.max_per_category,
            context=RecommendationContext(
                tuple(given.browsing_history), tuple(given.purchase_history)
            ),
        )
    except UpstreamError as exc:
        return _problem(502, exc.code, str(exc))
    record_access(services, principal, Action.READ, "api:recommendations", [body.customer_id])
    return _json(
        {
            "customer_id": str(body.customer_id),
            "personalised": personalised,
            "list_id": served.list_id,
            "recommendations": [
                _item(r, link) for r, link in zip(served.items, served.links, strict=True)
            ],
        }
    )

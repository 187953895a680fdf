"""What the ESP suppression tests ask of the gateway, written once: a customer's answer
to a query by address, a Shopify customer webhook, and a GraphQL time as a number."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.gql_client import gql
from tests.ingest.webhook_requests import shopify_request


async def customer_answer(gw: httpx.AsyncClient, query: str, email: str) -> dict[str, Any]:
    """``customer(email:)`` as ``query`` selects it; the query must have succeeded."""
    body = await gql(gw, query, email=email)
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["customer"]
    return found


async def shopify_customer(gw: httpx.AsyncClient, payload: dict[str, Any], topic: str) -> None:
    response = await gw.post(**shopify_request(payload, topic=topic))
    assert response.status_code == 200, response.text


def moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()

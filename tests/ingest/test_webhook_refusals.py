"""Webhooks refused whole, with nothing written: bad or stale signatures, unknown sources,
invalid payloads and over-long batches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from typing import Any

import httpx
import pytest

from gateway.settings import load_settings
from tests.conftest import unique_email
from tests.in_process import asgi, lifespan
from tests.ingest.webhook_requests import (
    BASE,
    SECRETS,
    external_id,
    hubspot_change,
    hubspot_request,
    realtime_app,
    row_counts,
    secret_of,
    segment_request,
    shopify_request,
)


def _tampered(request: dict[str, Any]) -> dict[str, Any]:
    return dict(request, content=request["content"].replace(b"Ada", b"Eve"))


@pytest.mark.parametrize("source", ["shopify", "hubspot", "segment"])
async def test_a_tampered_body_is_refused_and_nothing_is_written(
    gateway: httpx.AsyncClient, database_url: str, source: str
) -> None:
    email = unique_email("tampered")
    request = {
        "shopify": lambda: shopify_request(
            {"id": external_id(), "email": email, "first_name": "Ada"}
        ),
        "hubspot": lambda: hubspot_request([hubspot_change(external_id(), "firstname", "Ada")]),
        "segment": lambda: segment_request(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": "u-1",
                "traits": {"email": email, "firstName": "Ada"},
            }
        ),
    }[source]()
    before = await row_counts(database_url)
    response = await gateway.post(**_tampered(request))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert await row_counts(database_url) == before


async def test_a_stale_hubspot_timestamp_is_refused_even_when_signed(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    six_minutes_ago = int(time.time() * 1000) - 6 * 60 * 1000
    request = hubspot_request(
        [hubspot_change(external_id(), "firstname", "Ada")], timestamp_ms=six_minutes_ago
    )
    before = await row_counts(database_url)
    response = await gateway.post(**request)
    assert response.status_code == 401
    assert response.json()["error"] == "stale_timestamp"
    assert await row_counts(database_url) == before


@pytest.mark.parametrize("stamp", [b"\xb2", b"1\xb9", b"\xb3" * 13])
async def test_a_hubspot_timestamp_of_non_ascii_digits_is_a_401(
    gateway: httpx.AsyncClient, stamp: bytes
) -> None:
    """Superscript digits pass ``str.isdigit`` and ``int()`` refused them: a 500."""
    request = hubspot_request([hubspot_change(external_id(), "firstname", "Ada")])
    request["headers"] = {**request["headers"], "X-HubSpot-Request-Timestamp": stamp}
    response = await gateway.post(**request)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "missing_timestamp"
    assert response.json()["reason"]


async def test_an_unknown_or_unconfigured_source_is_404(database_url: str) -> None:
    app = realtime_app(
        load_settings(database_url=database_url, cache_url="memory://"),
        secrets={"shopify": SECRETS["shopify"]},
    )
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=asgi(app), base_url=BASE) as c,
    ):
        unknown = await c.post("/webhooks/salesforce", content=b"{}")
        unconfigured = await c.post(**segment_request({"type": "identify"}))
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_source")
    assert (unconfigured.status_code, unconfigured.json()["error"]) == (
        404,
        "source_not_configured",
    )


@pytest.mark.parametrize(
    ("request_", "status", "field"),
    [
        (lambda: shopify_request({"id": "not-a-number"}), 422, "id"),
        (lambda: shopify_request({"id": 5, "email": "bogus-value"}), 422, "email"),
        (lambda: shopify_request({"id": 5}, topic="carts/update"), 422, "X-Shopify-Topic"),
        (lambda: dict(shopify_request({"id": 5}), content=b"{oops"), 400, None),
        (lambda: hubspot_request([{"eventId": 1, "objectId": 2}]), 422, "0.subscriptionType"),
        (lambda: hubspot_request([]), 422, None),
        (lambda: segment_request({"type": "identify", "userId": "u"}), 422, "messageId"),
    ],
    ids=[
        "shopify-type",
        "shopify-email",
        "shopify-topic",
        "not-json",
        "hubspot",
        "empty",
        "segment",
    ],
)
async def test_an_invalid_payload_is_refused_with_its_reason_and_nothing_written(
    gateway: httpx.AsyncClient, database_url: str, request_: Any, status: int, field: str | None
) -> None:
    request = request_()
    if request["url"].endswith("shopify") and b"oops" in request["content"]:
        # Re-sign the broken body: the signature is valid, the JSON is not.
        signed = shopify_request({})
        digest = hmac.new(secret_of("shopify"), request["content"], hashlib.sha256).digest()
        request["headers"] = dict(
            signed["headers"], **{"X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode()}
        )
    before = await row_counts(database_url)
    response = await gateway.post(**request)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == "invalid_payload"
    assert body["reason"]
    assert body.get("field") == field
    assert "bogus-value" not in response.text  # the value itself is never echoed
    assert await row_counts(database_url) == before


async def test_a_hubspot_batch_longer_than_hubspot_sends_is_refused_whole(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    """HubSpot sends at most 100 events a request; a signed batch of thousands was
    validated and prepared on the event loop in one go, stalling the worker."""
    changes = [hubspot_change(external_id(), "firstname", "Ada") for _ in range(101)]
    before = await row_counts(database_url)
    response = await gateway.post(**hubspot_request(changes))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_payload"
    assert "at most 100 events" in response.json()["reason"]
    assert await row_counts(database_url) == before

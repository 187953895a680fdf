"""Webhooks refused whole, with nothing written: bad or stale signatures, unknown sources,
invalid payloads and over-long batches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from gateway.db.engine import create_engine
from gateway.ingest.json_text import PayloadError
from gateway.ingest.streams.event_batches import EventBatches
from gateway.privacy.tombstones import Tombstones
from gateway.settings import load_settings
from tests.conftest import unique_email
from tests.in_process import asgi, lifespan
from tests.ingest.webhook_requests import (
    BASE,
    SECRETS,
    external_id,
    hubspot_change,
    hubspot_request,
    mandrill_signed,
    realtime_app,
    row_counts,
    secret_of,
    segment_request,
    sendgrid_signed,
    shopify_request,
)


def _segment_at(timestamp: str) -> dict[str, Any]:
    return segment_request(
        {
            "type": "track",
            "event": "Seen",
            "userId": "u-1",
            "messageId": "m-1",
            "timestamp": timestamp,
        }
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
        (
            lambda: hubspot_request([dict(hubspot_change(5, "city", "Bonn"), occurredAt=True)]),
            422,
            "0.occurredAt",
        ),
        (lambda: segment_request({"type": "identify", "userId": "u"}), 422, "messageId"),
        # An outside check: times a database cannot hold were a 500 on every retry.
        (lambda: _segment_at("0001-01-01T00:00:00+14:00"), 422, "timestamp"),
        (lambda: _segment_at("9999-12-31T23:59:59-14:00"), 422, "timestamp"),
        (
            lambda: hubspot_request([dict(hubspot_change(5, "city", "Bonn"), occurredAt=10**17)]),
            422,
            "0.occurredAt",
        ),
        (
            lambda: shopify_request({"id": 5, "updated_at": "9999-12-31T23:00:00-05:00"}),
            422,
            "updated_at",
        ),
        (
            lambda: shopify_request(
                {"id": 6, "created_at": "0001-01-01T00:00:00+05:00"}, topic="orders/create"
            ),
            422,
            "created_at",
        ),
        (
            lambda: shopify_request({"id": 7, "total_price": "NaN"}, topic="orders/create"),
            422,
            "total_price",
        ),
        (
            lambda: shopify_request({"id": 8, "total_price": "1e400"}, topic="orders/create"),
            422,
            "total_price",
        ),
        # Stored as "track:<event>" in a column of 100: a 500 on every retry.
        (
            lambda: segment_request(
                {"type": "track", "event": "e" * 95, "userId": "u", "messageId": "m-long"}
            ),
            422,
            "event",
        ),
    ],
    ids=[
        "shopify-type",
        "shopify-email",
        "shopify-topic",
        "not-json",
        "hubspot",
        "empty",
        "hubspot-time-true",
        "segment",
        "segment-year-0",
        "segment-year-10000",
        "hubspot-year-3170843",
        "shopify-year-10000",
        "shopify-order-year-0",
        "shopify-total-nan",
        "shopify-total-overflow",
        "segment-event-name-too-long",
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


def _lone(payload: Any) -> bytes:
    return json.dumps(payload).encode()  # escapes a lone surrogate, as orjson will not


TRACK = {"type": "track", "event": "Viewed", "messageId": "m-1", "userId": "u"}
NOT_UNICODE = "text that is not valid Unicode (an unpaired surrogate escape)"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (lambda: shopify_request(_lone({"id": 5, "first_name": "A\ud800"})), "first_name"),
        (
            lambda: segment_request(_lone({**TRACK, "properties": {"url": "https://x/\udfff"}})),
            "properties.url",
        ),
        (
            lambda: hubspot_request(_lone([hubspot_change(external_id(), "city", "\udbff")])),
            "0.propertyValue",
        ),
        (lambda: segment_request(_lone({"\ud800": 1})), None),  # a key of the body itself
    ],
    ids=["shopify", "segment", "hubspot", "key"],
)
async def test_a_lone_surrogate_in_one_object_is_a_422_naming_its_field(
    gateway: httpx.AsyncClient, database_url: str, request_: Any, field: str | None
) -> None:
    """One object (or HubSpot's batch, refused whole for any bad event) has nothing else
    to keep: refused, but as what it is (the body is JSON; a string in it is not
    Unicode), where it was a 400 "not valid JSON" naming nothing."""
    before = await row_counts(database_url)
    response = await gateway.post(**request_())
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_payload"
    assert body.get("field") == field
    assert body["reason"] == f"{field or 'body'}: {NOT_UNICODE}"
    assert await row_counts(database_url) == before


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (lambda: shopify_request({"id": 5, "first_name": "A\x00"}), "first_name"),
        (lambda: segment_request({**TRACK, "event": "Order\x00"}), "event"),
        (
            lambda: hubspot_request([hubspot_change(external_id(), "city", "Bo\x00n")]),
            "0.propertyValue",
        ),
    ],
    ids=["shopify", "segment", "hubspot"],
)
async def test_a_nul_in_one_object_is_a_422_naming_its_field(
    gateway: httpx.AsyncClient, database_url: str, request_: Any, field: str
) -> None:
    """PostgreSQL's text holds no NUL: a Segment event named "Order\\u0000" failed its
    insert, a 500 the sender retried for ever (ESP events were already rejected for
    one). Refused, naming the field, nothing written."""
    before = await row_counts(database_url)
    response = await gateway.post(**request_())
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == f"{field}: a NUL character"
    assert await row_counts(database_url) == before


NOT_JSON = [
    b"{oops",
    b'[{"url": "\\ud800"},]',  # a lone surrogate and a trailing comma
    b'[{"url": "\\ud800", "n": NaN}]',
    b'\xef\xbb\xbf["\\ud800"]',  # a byte order mark
    b'["\\ud800", 1e400]',
]


# A surrogate written raw is not UTF-8 (a form's value is text: Mandrill's cannot be).
@pytest.mark.parametrize(
    ("source", "body"),
    [
        *((source, body) for source in ("sendgrid", "mandrill", "segment") for body in NOT_JSON),
        ("sendgrid", b'["\xed\xa0\x80"]'),
        ("segment", b'{"type": "\xed\xa0\x80"}'),
    ],
)
async def test_a_body_that_is_not_json_is_still_a_400(
    gateway: httpx.AsyncClient, database_url: str, source: str, body: bytes
) -> None:
    """Only a body orjson refused for its unpaired surrogates alone is read the lenient
    way (the stdlib's reader also takes NaN, 1e400 as infinity, a BOM, raw surrogates)."""
    request = {
        "sendgrid": lambda: sendgrid_signed(body),
        "mandrill": lambda: mandrill_signed(body.decode()),
        "segment": lambda: segment_request(body),
    }[source]()
    before = await row_counts(database_url)
    response = await gateway.post(**request)
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "the body is not valid JSON"
    assert await row_counts(database_url) == before


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_stream_message_of_a_time_no_database_holds_is_refused_naming_it(timestamp: str) -> None:
    # An outside check: the stream acked and stored such a time (year 10000, or 1 BC on
    # Postgres), and every read of its customer's behaviour then failed: one customer's
    # event broke a 1,000-customer send query. Refused, it goes to the dead letter.
    batches = EventBatches(create_engine("sqlite+aiosqlite://"), Tombstones(b"refusals-key"))
    message = {
        "type": "track",
        "event": "N",
        "userId": "u",
        "messageId": "m",
        "timestamp": timestamp,
    }
    with pytest.raises(PayloadError) as refused:
        batches.parse(orjson.dumps(message))
    assert refused.value.field == "timestamp"

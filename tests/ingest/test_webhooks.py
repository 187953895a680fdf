"""Webhooks end to end on both databases: signatures, validation, idempotency, the
profile write and the cache drop, and concurrent first sightings of one email."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from starlette.applications import Starlette

from adapters.config import UpstreamsConfig
from demo.upstreams.runner import SampleUpstreams
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Attribute, Customer, Event, Identity
from gateway.ingest.signatures import hubspot_signature
from gateway.settings import Settings, load_settings
from resolvers.app import create_app
from tests.conftest import FAST, api_client, unique_email
from tests.gql_client import gql
from tests.in_process import asgi, lifespan

SECRETS = {
    "shopify": SecretStr("shpss_test_secret"),
    "hubspot": SecretStr("hubspot-client-secret"),
    "segment": SecretStr("segment-shared-secret"),
}
BASE = "http://gw"
PROFILE = "query($email: String!) { customer(email: $email) { id firstName lastName } }"


# --- the wiring app.py, services.py and schema.py will get, composed here ----------------


def realtime_app(
    settings: Settings,
    secrets: Mapping[str, SecretStr] = SECRETS,
    upstreams: UpstreamsConfig | None = None,
) -> Starlette:
    return create_app(
        settings.model_copy(update={"webhook_secrets": dict(secrets)}), upstreams=upstreams
    )


# --- signing as each source does ---------------------------------------------------------


def _secret(source: str) -> bytes:
    return SECRETS[source].get_secret_value().encode()


def shopify_request(
    payload: Any, topic: str = "customers/update", webhook_id: str | None = None
) -> dict[str, Any]:
    body = orjson.dumps(payload)
    digest = base64.b64encode(hmac.new(_secret("shopify"), body, hashlib.sha256).digest())
    headers = {
        "X-Shopify-Hmac-Sha256": digest.decode(),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "content-type": "application/json",
    }
    return {"url": "/webhooks/shopify", "content": body, "headers": headers}


def hubspot_request(
    events: list[dict[str, Any]], base: str = BASE, timestamp_ms: int | None = None
) -> dict[str, Any]:
    body = orjson.dumps(events)
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    signature = hubspot_signature(
        SECRETS["hubspot"].get_secret_value(), "POST", f"{base}/webhooks/hubspot", body, timestamp
    )
    headers = {
        "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Request-Timestamp": timestamp,
        "content-type": "application/json",
    }
    return {"url": "/webhooks/hubspot", "content": body, "headers": headers}


def segment_request(payload: Any) -> dict[str, Any]:
    body = orjson.dumps(payload)
    signature = hmac.new(_secret("segment"), body, hashlib.sha1).hexdigest()
    return {
        "url": "/webhooks/segment",
        "content": body,
        "headers": {"X-Signature": signature, "content-type": "application/json"},
    }


def hubspot_change(
    object_id: int, name: str, value: str, event_id: int | None = None
) -> dict[str, Any]:
    return {
        "eventId": event_id or uuid.uuid4().int % 10**12,
        "subscriptionId": 1,
        "portalId": 62515,
        "occurredAt": int(time.time() * 1000),
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": object_id,
        "propertyName": name,
        "propertyValue": value,
        "changeSource": "CRM",
    }


def _external_id() -> int:
    return uuid.uuid4().int % 10**12 + 1


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    async with lifespan(app), api_client(app, base_url=BASE) as client:
        yield client


async def _counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return {
                model.__tablename__: int(
                    await connection.scalar(select(func.count()).select_from(model)) or 0
                )
                for model in (Event, Customer, Identity, Attribute)
            }
    finally:
        await engine.dispose()


# --- signatures --------------------------------------------------------------------------


def _tampered(request: dict[str, Any]) -> dict[str, Any]:
    return dict(request, content=request["content"].replace(b"Ada", b"Eve"))


@pytest.mark.parametrize("source", ["shopify", "hubspot", "segment"])
async def test_a_tampered_body_is_refused_and_nothing_is_written(
    gateway: httpx.AsyncClient, database_url: str, source: str
) -> None:
    email = unique_email("tampered")
    request = {
        "shopify": lambda: shopify_request(
            {"id": _external_id(), "email": email, "first_name": "Ada"}
        ),
        "hubspot": lambda: hubspot_request([hubspot_change(_external_id(), "firstname", "Ada")]),
        "segment": lambda: segment_request(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": "u-1",
                "traits": {"email": email, "firstName": "Ada"},
            }
        ),
    }[source]()
    before = await _counts(database_url)
    response = await gateway.post(**_tampered(request))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert await _counts(database_url) == before


async def test_a_stale_hubspot_timestamp_is_refused_even_when_signed(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    six_minutes_ago = int(time.time() * 1000) - 6 * 60 * 1000
    request = hubspot_request(
        [hubspot_change(_external_id(), "firstname", "Ada")], timestamp_ms=six_minutes_ago
    )
    before = await _counts(database_url)
    response = await gateway.post(**request)
    assert response.status_code == 401
    assert response.json()["error"] == "stale_timestamp"
    assert await _counts(database_url) == before


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


# --- valid webhooks update the profile and drop the cache ------------------------------


async def test_shopify_customer_webhooks_update_the_profile_and_the_cache(
    gateway: httpx.AsyncClient,
) -> None:
    email, shop_id = unique_email("shop"), _external_id()
    created = await gateway.post(
        **shopify_request(
            {"id": shop_id, "email": email, "first_name": "Ada", "last_name": "Lovelace"},
            topic="customers/create",
        )
    )
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "processed"
    first = (await gql(gateway, PROFILE, email=email))["data"]["customer"]  # now cached
    assert first["firstName"] == "Ada"
    assert first["id"] == created.json()["events"][0]["customerId"]

    updated = await gateway.post(
        **shopify_request({"id": shop_id, "email": email, "first_name": "Augusta"})
    )
    assert updated.json()["status"] == "processed"
    after = (await gql(gateway, PROFILE, email=email))["data"]["customer"]
    assert after == {"id": first["id"], "firstName": "Augusta", "lastName": "Lovelace"}


async def test_a_shopify_order_links_its_customer(gateway: httpx.AsyncClient) -> None:
    email = unique_email("order")
    order = {
        "id": _external_id(),
        "email": email,
        "created_at": "2026-11-23T10:00:00+00:00",
        "total_price": "19.99",
        "currency": "EUR",
        "customer": {"id": _external_id(), "email": email, "first_name": "Grace"},
    }
    response = await gateway.post(**shopify_request(order, topic="orders/create"))
    assert response.status_code == 200, response.text
    customer = (await gql(gateway, PROFILE, email=email))["data"]["customer"]
    assert customer["firstName"] == "Grace"
    assert customer["id"] == response.json()["events"][0]["customerId"]


async def test_hubspot_property_changes_update_the_profile_without_an_upstream_call(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    email, contact = unique_email("hub"), _external_id()
    response = await gateway.post(**hubspot_request([hubspot_change(contact, "email", email)]))
    assert response.status_code == 200, response.text
    before = (await gql(gateway, PROFILE, email=email))["data"]["customer"]
    assert before["firstName"] is None

    batch = [
        hubspot_change(contact, "firstname", "Katherine"),
        hubspot_change(contact, "lifecyclestage", "customer"),
    ]
    response = await gateway.post(**hubspot_request(batch))
    assert response.json()["status"] == "processed"
    assert [e["customerId"] for e in response.json()["events"]] == [before["id"]] * 2
    after = (await gql(gateway, PROFILE, email=email))["data"]["customer"]
    assert after["firstName"] == "Katherine"
    engine = create_engine(database_url)
    async with engine.connect() as connection:
        stage = await connection.scalar(
            select(Attribute.value).where(
                Attribute.customer_id == uuid.UUID(before["id"]),
                Attribute.name == "lifecycle_stage",
            )
        )
    await engine.dispose()
    assert stage == "customer"


async def test_segment_identify_and_track_update_the_profile(gateway: httpx.AsyncClient) -> None:
    email, user_id = unique_email("seg"), f"user-{uuid.uuid4().hex[:8]}"
    identify = {
        "type": "identify",
        "messageId": str(uuid.uuid4()),
        "userId": user_id,
        "traits": {"email": email, "firstName": "Mary"},
        "timestamp": "2026-11-23T10:00:00Z",
    }
    assert (await gateway.post(**segment_request(identify))).status_code == 200
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"]["firstName"] == "Mary"
    renamed = dict(identify, messageId=str(uuid.uuid4()), traits={"firstName": "Maryam"})
    renamed["timestamp"] = "2026-11-23T11:00:00Z"
    assert (await gateway.post(**segment_request(renamed))).json()["status"] == "processed"
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"]["firstName"] == "Maryam"

    track = {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": user_id,
        "event": "Product Viewed",
        "properties": {"sku": "A-1"},
    }
    response = await gateway.post(**segment_request(track))
    assert response.json()["status"] == "processed"


async def test_a_crm_webhook_drops_the_cached_crm_answer_on_every_field(
    samples: SampleUpstreams, seeded_url: str
) -> None:
    """The upstream cache, not only the stored profile: the next read asks HubSpot again."""
    from demo.wiring import sample_upstreams_config

    samples.reset()
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    settings = load_settings(database_url=seeded_url, cache_url="memory://")
    app = realtime_app(settings, upstreams=config)
    person = samples.people[90]
    query = "query($email: String!) { customer(email: $email) { id lifecycleStage } }"
    async with lifespan(app), api_client(app, base_url=BASE) as c:
        customer = (await gql(c, query, email=person.email))["data"]["customer"]
        await gql(c, query, email=person.email)
        warm = samples.hubspot.calls.total  # the second read was served from the cache
        change = hubspot_change(int(person.hubspot_id), "lifecyclestage", "customer")
        response = await c.post(**hubspot_request([change]))
        assert response.json()["events"][0]["customerId"] == customer["id"]
        await gql(c, query, email=person.email)
    assert samples.hubspot.calls.total == warm + 1
    samples.reset()


# --- idempotency and validation ----------------------------------------------------------


async def test_a_replayed_event_id_is_a_duplicate_and_changes_nothing(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    email, shop_id, webhook_id = unique_email("dup"), _external_id(), str(uuid.uuid4())
    payload = {"id": shop_id, "email": email, "first_name": "Ada"}
    first = await gateway.post(**shopify_request(payload, webhook_id=webhook_id))
    assert first.json()["status"] == "processed"
    counts = await _counts(database_url)
    # The same delivery again, even with a different body: the event id decides.
    changed = dict(payload, first_name="Eve")
    replay = await gateway.post(**shopify_request(changed, webhook_id=webhook_id))
    assert replay.status_code == 200
    assert replay.json()["status"] == "duplicate"
    assert await _counts(database_url) == counts
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"]["firstName"] == "Ada"


def _resent(request: dict[str, Any], **headers: str) -> dict[str, Any]:
    """The captured request, body and signature untouched, with some headers changed."""
    return dict(request, headers={**request["headers"], **headers})


@pytest.mark.parametrize("topic", ["customers/update", "orders/create"])
async def test_a_signed_body_resent_under_a_new_webhook_id_is_a_duplicate(
    gateway: httpx.AsyncClient, database_url: str, topic: str
) -> None:
    """X-Shopify-Webhook-Id (and the topic) are not signed: an attacker who captured one
    delivery can resend it under any id. The signed body decides."""
    email, shop_id = unique_email("replay"), _external_id()
    customer = {"id": shop_id, "email": email, "first_name": "Ada"}
    order = {"id": _external_id(), "email": email, "total_price": "10.00", "currency": "EUR"}

    def body(person: dict[str, Any]) -> dict[str, Any]:
        return person if topic.startswith("customers/") else {**order, "customer": person}

    payload = body(customer)
    captured = shopify_request(payload, topic=topic)
    other_topic = {"customers/update": "customers/create", "orders/create": "orders/paid"}[topic]
    assert (await gateway.post(**captured)).json()["status"] == "processed"
    counts = await _counts(database_url)
    for headers in (
        {"X-Shopify-Webhook-Id": str(uuid.uuid4())},
        {"X-Shopify-Webhook-Id": str(uuid.uuid4()), "X-Shopify-Topic": other_topic},
    ):
        replay = await gateway.post(**_resent(captured, **headers))
        assert replay.status_code == 200, replay.text
        assert replay.json()["status"] == "duplicate", (headers, replay.text)
        assert await _counts(database_url) == counts
    # A genuinely new body from the shop still goes through.
    order["id"] = _external_id()
    fresh = shopify_request(body(dict(customer, first_name="Grace")), topic=topic)
    assert (await gateway.post(**fresh)).json()["status"] == "processed"
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"]["firstName"] == "Grace"


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
        digest = hmac.new(_secret("shopify"), request["content"], hashlib.sha256).digest()
        request["headers"] = dict(
            signed["headers"], **{"X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode()}
        )
    before = await _counts(database_url)
    response = await gateway.post(**request)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == "invalid_payload"
    assert body["reason"]
    assert body.get("field") == field
    assert "bogus-value" not in response.text  # the value itself is never echoed
    assert await _counts(database_url) == before


async def test_a_hubspot_batch_longer_than_hubspot_sends_is_refused_whole(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    """HubSpot sends at most 100 events a request; a signed batch of thousands was
    validated and prepared on the event loop in one go, stalling the worker."""
    changes = [hubspot_change(_external_id(), "firstname", "Ada") for _ in range(101)]
    before = await _counts(database_url)
    response = await gateway.post(**hubspot_request(changes))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_payload"
    assert "at most 100 events" in response.json()["reason"]
    assert await _counts(database_url) == before


# --- concurrency -------------------------------------------------------------------------


@pytest.fixture
def migrated_postgres(postgres_url: str) -> str:
    upgrade(postgres_url)  # runs its own event loop: a sync fixture, outside the test's
    return postgres_url


async def test_concurrent_first_sightings_of_one_email_make_one_customer(
    migrated_postgres: str,
) -> None:
    postgres_url = migrated_postgres
    app = realtime_app(load_settings(database_url=postgres_url, cache_url="memory://"))
    email = unique_email("race")
    requests = [
        shopify_request({"id": _external_id(), "email": email}, topic="customers/create")
        for _ in range(6)
    ] + [
        segment_request(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": f"u-{i}-{email}",
                "traits": {"email": email},
            }
        )
        for i in range(6)
    ]
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=asgi(app), base_url=BASE) as c,
    ):
        responses = await asyncio.gather(*(c.post(**r) for r in requests))
    assert [r.status_code for r in responses] == [200] * len(requests)
    owners = {r.json()["events"][0]["customerId"] for r in responses}
    assert len(owners) == 1
    (owner,) = owners
    engine = create_engine(postgres_url)
    async with engine.connect() as connection:
        # All twelve source records hang off that one customer, and no other row holds
        # the email (a lost race would leave a second, email-less customer behind).
        linked = await connection.scalar(
            select(func.count())
            .select_from(Identity)
            .where(Identity.customer_id == uuid.UUID(owner))
        )
        holders = await connection.scalar(
            select(func.count()).select_from(Customer).where(Customer.email == email)
        )
    await engine.dispose()
    assert (linked, holders) == (len(requests), 1)

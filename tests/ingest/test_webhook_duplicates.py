"""Each event is applied once: replays and re-sent bodies are duplicates, and concurrent
first sightings of one e-mail make one customer. What is no replay is not answered
``duplicate``: Mandrill's empty batch (its test post when a webhook is added), and its
sync events (allow- and deny-list changes: ``type`` ``whitelist`` or ``blacklist``, no
``event``, no ``msg``), acknowledged and not stored, never ``rejected``. A batch resent
with an event rejected (a lone surrogate in it) stores nothing new.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Customer, Event, Identity
from gateway.observability.metrics import WEBHOOK_EVENTS_REJECTED
from gateway.settings import load_settings
from tests.conftest import unique_email
from tests.gql_client import gql
from tests.in_process import asgi, lifespan
from tests.ingest.test_esp_webhooks import profile, subscribed
from tests.ingest.webhook_requests import (
    BASE,
    PROFILE,
    external_id,
    mandrill_event,
    mandrill_request,
    mandrill_signed,
    realtime_app,
    row_counts,
    segment_request,
    sendgrid_event,
    sendgrid_signed,
    shopify_request,
)


async def test_a_replayed_event_id_is_a_duplicate_and_changes_nothing(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    email, shop_id, webhook_id = unique_email("dup"), external_id(), str(uuid.uuid4())
    payload = {"id": shop_id, "email": email, "first_name": "Ada"}
    first = await gateway.post(**shopify_request(payload, webhook_id=webhook_id))
    assert first.json()["status"] == "processed"
    counts = await row_counts(database_url)
    # The same delivery again, even with a different body: the event id decides.
    changed = dict(payload, first_name="Eve")
    replay = await gateway.post(**shopify_request(changed, webhook_id=webhook_id))
    assert replay.status_code == 200
    assert replay.json()["status"] == "duplicate"
    assert await row_counts(database_url) == counts
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
    email, shop_id = unique_email("replay"), external_id()
    customer = {"id": shop_id, "email": email, "first_name": "Ada"}
    order = {"id": external_id(), "email": email, "total_price": "10.00", "currency": "EUR"}

    def body(person: dict[str, Any]) -> dict[str, Any]:
        return person if topic.startswith("customers/") else {**order, "customer": person}

    payload = body(customer)
    captured = shopify_request(payload, topic=topic)
    other_topic = {"customers/update": "customers/create", "orders/create": "orders/paid"}[topic]
    assert (await gateway.post(**captured)).json()["status"] == "processed"
    counts = await row_counts(database_url)
    for headers in (
        {"X-Shopify-Webhook-Id": str(uuid.uuid4())},
        {"X-Shopify-Webhook-Id": str(uuid.uuid4()), "X-Shopify-Topic": other_topic},
    ):
        replay = await gateway.post(**_resent(captured, **headers))
        assert replay.status_code == 200, replay.text
        assert replay.json()["status"] == "duplicate", (headers, replay.text)
        assert await row_counts(database_url) == counts
    # A genuinely new body from the shop still goes through.
    order["id"] = external_id()
    fresh = shopify_request(body(dict(customer, first_name="Grace")), topic=topic)
    assert (await gateway.post(**fresh)).json()["status"] == "processed"
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"]["firstName"] == "Grace"


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
        shopify_request({"id": external_id(), "email": email}, topic="customers/create")
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


def _sync(kind: str, action: str = "add") -> dict[str, Any]:
    """A sync event as Mandrill documents it: no ``event`` and no ``msg``."""
    entry = {"email": "listed@example.com", "detail": "added manually", "created_at": "now"}
    event: dict[str, Any] = {"type": kind, "action": action, "ts": int(time.time())}
    event["entry" if kind == "whitelist" else "reject"] = entry
    return event


def _rejected() -> float:
    return sum(
        sample.value
        for metric in WEBHOOK_EVENTS_REJECTED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("source") == "mandrill"
    )


async def test_sync_events_are_acknowledged_not_rejected(
    gateway: httpx.AsyncClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    email, _ = await subscribed(gateway)
    before, counted = _rejected(), await row_counts(database_url)
    batch = [
        _sync("whitelist"),
        _sync("blacklist", "change"),
        mandrill_event(email, "open"),
        _sync("whitelist", "remove"),
    ]
    with caplog.at_level(logging.WARNING, logger="gateway.webhooks"):
        response = await gateway.post(**mandrill_request(batch))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "processed"
    assert [e["status"] for e in answer["events"]] == ["processed"]  # the open alone
    assert "rejected" not in response.text
    assert _rejected() == before
    assert not [r for r in caplog.records if r.getMessage() == "webhook events rejected"]
    after = await row_counts(database_url)
    assert after["events"] == counted["events"] + 1
    assert (await profile(gateway, email))["engagement"]["emailOpens30d"] == 1
    # A batch of sync events only stores nothing and is no replay.
    only = await gateway.post(**mandrill_request([_sync("blacklist"), _sync("whitelist")]))
    assert only.status_code == 200, only.text
    assert only.json() == {"status": "processed", "events": []}
    assert _rejected() == before


async def test_an_empty_batch_or_one_without_messages_is_accepted_not_a_duplicate(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    counted = await row_counts(database_url)
    for batch in ([], [{"event": "open", "ts": int(time.time())}]):
        response = await gateway.post(**mandrill_request(batch))
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "processed", "events": []}
    assert await row_counts(database_url) == counted


NOT_UNICODE = "text that is not valid Unicode (an unpaired surrogate escape)"


def _rejections(source: str) -> dict[str, float]:
    return {
        sample.labels["consequence"]: sample.value
        for metric in WEBHOOK_EVENTS_REJECTED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["source"] == source
    }


@pytest.mark.parametrize("source", ["sendgrid", "mandrill"])
async def test_a_lone_surrogate_rejects_its_event_and_a_resend_stores_nothing_new(
    gateway: httpx.AsyncClient, database_url: str, source: str
) -> None:
    """One event's lone surrogate had the whole batch refused as not JSON (400): the ESP
    retried it, then dropped it, its unsubscribes with it. That event alone is rejected,
    answered, counted and logged as any rejected event; its valid pair (an emoji) beside
    it is kept; the ESP's resend of the batch stores nothing new."""
    email, _ = await subscribed(gateway)
    url = f"https://shop.example/{uuid.uuid4().hex}/\U0001f600"  # escaped as a pair
    if source == "sendgrid":
        good = [sendgrid_event(email, kind) for kind in ("open", "click", "unsubscribe")]
        good[1]["url"] = url
        bad = sendgrid_event(email, "group_unsubscribe", url="https://x/\ud800")
        request = sendgrid_signed(json.dumps([good[0], bad, *good[1:]]).encode())
        field, consequence = "1.url", "withdraw"
    else:
        good = [mandrill_event(email, kind) for kind in ("open", "click", "unsub")]
        good[1]["url"] = url
        bad = mandrill_event(email, "open")
        bad["msg"]["metadata"] = {"send_id": "s-\udc00"}
        request = mandrill_signed(json.dumps([good[0], bad, *good[1:]]))
        field, consequence = "mandrill_events.1.msg.metadata.send_id", "none"
    counted, rejected = await row_counts(database_url), _rejections(source)
    response = await gateway.post(**request)
    assert response.status_code == 200, response.text
    answers = response.json()["events"]
    assert [(a["status"], a.get("field")) for a in answers] == [
        ("processed", None),
        ("rejected", field),
        ("processed", None),
        ("processed", None),
    ]
    assert answers[1]["reason"] == f"{field}: {NOT_UNICODE}"
    assert (await row_counts(database_url))["events"] == counted["events"] + 3
    found = await profile(gateway, email)
    assert found["suppressed"] is True
    assert found["engagement"]["emailClicks30d"] == 1
    assert url in await _click_urls(database_url)
    assert _rejections(source).get(consequence, 0) == rejected.get(consequence, 0) + 1
    counted = await row_counts(database_url)
    again = await gateway.post(**request)
    assert again.status_code == 200, again.text
    # As after any rejected event: the stored ones are duplicates, the batch is no replay
    # of one stored whole (``duplicate`` is for that), the rejection counted again.
    assert again.json()["status"] == "processed"
    assert [a["status"] for a in again.json()["events"]] == ["duplicate", "rejected"] + [
        "duplicate"
    ] * 2
    assert again.json()["events"][1] == answers[1]
    assert await row_counts(database_url) == counted
    assert _rejections(source).get(consequence, 0) == rejected.get(consequence, 0) + 2


async def _click_urls(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.scalars(
                select(Event.properties).where(Event.type == "email:click")
            )
            return [properties.get("url") for properties in rows]
    finally:
        await engine.dispose()

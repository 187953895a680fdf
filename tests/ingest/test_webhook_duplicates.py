"""Each event is applied once: replays and re-sent bodies are duplicates, and concurrent
first sightings of one e-mail make one customer. What is no replay is not answered
``duplicate``: Mandrill's empty batch (its test post when a webhook is added), and its
sync events (allow- and deny-list changes: ``type`` ``whitelist`` or ``blacklist``, no
``event``, no ``msg``), acknowledged and not stored, never ``rejected``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Customer, Identity
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
    realtime_app,
    row_counts,
    segment_request,
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

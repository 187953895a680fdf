"""An order dated after it reached the gateway (a shop's clock ahead, a forged date) is
stored at its arrival, on every path that stores orders for conversions (Shopify's and
Segment's webhooks, the event stream), on SQLite and Postgres: a conversion counts
orders after a click, and an order cannot have been placed after it was received."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import insert, select

from gateway.db.engine import create_engine
from gateway.db.models import ORDER_TYPES, Customer, Event
from gateway.experiments.order_times import ordered_after
from gateway.ingest.streams.event_batches import EventBatches
from gateway.privacy.tombstones import Tombstones
from tests.conftest import unique_email
from tests.ingest.webhook_requests import external_id, segment_request, shopify_request
from tests.own_database import own_database_url

__all__ = ["own_database_url"]  # a database of the test's own, as a fixture

AHEAD = timedelta(hours=2)


def _aware(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)  # SQLite keeps no zone


async def _times(database_url: str, event_id: str) -> tuple[datetime, datetime]:
    """The stored order's time and when it was received."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            occurred, received = (
                await connection.execute(
                    select(Event.occurred_at, Event.received_at).where(Event.event_id == event_id)
                )
            ).one()
    finally:
        await engine.dispose()
    return _aware(occurred), _aware(received)


def _iso(stamp: datetime) -> str:
    return stamp.isoformat().replace("+00:00", "Z")


async def test_a_shopify_order_dated_ahead_is_stored_at_its_arrival(
    webhooks: httpx.AsyncClient, database_url: str
) -> None:
    email, webhook_id = unique_email("ahead"), str(uuid.uuid4())
    sent = datetime.now(UTC)
    for created, topic, hook in (
        (_iso(sent + AHEAD), "orders/create", webhook_id),
        ((sent + AHEAD).replace(tzinfo=None).isoformat(), "orders/paid", f"{webhook_id}-naive"),
    ):
        order = {
            "id": external_id(),
            "email": email,
            "created_at": created,
            "total_price": "10.00",
            "currency": "EUR",
            "customer": {"id": external_id(), "email": email},
        }
        response = await webhooks.post(**shopify_request(order, topic=topic, webhook_id=hook))
        assert response.status_code == 200, response.text
        occurred, received = await _times(database_url, hook)
        assert sent - timedelta(seconds=1) <= occurred <= received, (occurred, received)
    # One dated in the past keeps its own time.
    past = sent - timedelta(days=3)
    order = {
        "id": external_id(),
        "email": email,
        "created_at": _iso(past),
        "customer": {"id": external_id(), "email": email},
    }
    hook = f"{webhook_id}-past"
    response = await webhooks.post(**shopify_request(order, topic="orders/create", webhook_id=hook))
    assert response.status_code == 200, response.text
    assert (await _times(database_url, hook))[0] == past


def _order_completed(user: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": user,
        "event": "Order Completed",
        "properties": {"order_id": uuid.uuid4().hex, "total": 12.5},
        "timestamp": _iso(at),
        "traits": {"email": unique_email("stream-ahead")},
    }


async def test_a_segment_order_dated_ahead_is_stored_at_its_arrival(
    webhooks: httpx.AsyncClient, database_url: str
) -> None:
    sent = datetime.now(UTC)
    call = _order_completed(f"user-{uuid.uuid4().hex[:8]}", sent + AHEAD)
    response = await webhooks.post(**segment_request(call))
    assert response.status_code == 200, response.text
    assert response.json()["events"][0]["status"] == "processed"
    occurred, received = await _times(database_url, call["messageId"])
    assert sent - timedelta(seconds=1) <= occurred <= received, (occurred, received)


async def test_a_streamed_order_dated_ahead_is_stored_at_its_arrival(database_url: str) -> None:
    engine = create_engine(database_url)
    batches = EventBatches(engine, Tombstones(b"future-orders-tests-key"))
    sent = datetime.now(UTC)
    user = f"user-{uuid.uuid4().hex[:8]}"
    ahead, past = _order_completed(user, sent + AHEAD), _order_completed(user, sent - AHEAD)
    try:
        stored = await batches.store([batches.parse(orjson.dumps(m)) for m in (ahead, past)])
    finally:
        await engine.dispose()
    assert stored.outcomes == ["stored", "stored"]
    occurred, received = await _times(database_url, ahead["messageId"])
    assert sent - timedelta(seconds=1) <= occurred <= received, (occurred, received)
    assert (await _times(database_url, past["messageId"]))[0] == sent - AHEAD
    assert time.time() - received.timestamp() < 60


def test_a_customers_orders_are_read_through_their_own_index(own_database_url: str) -> None:
    """Whether an order followed a list or a click reads the customer's orders of a time
    range: the planner must take the orders' partial index (migration 0030), not the
    customer's every view, open and click of the range. The index's condition and the
    query's are written from the same list of order types (models.ORDER_TYPES): a type
    added to one only would leave the index unused, and this fails."""
    url = own_database_url

    async def plan() -> str:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                customer, start = uuid.uuid4(), datetime.now(UTC) - timedelta(hours=2)
                # The customer's creation stands for the list's time (columns, not literals).
                await connection.execute(insert(Customer), [{"id": customer, "created_at": start}])
                events = [
                    {
                        "customer_id": customer,
                        "source": "segment",
                        "event_id": uuid.uuid4().hex,
                        "type": ORDER_TYPES[n % len(ORDER_TYPES)] if n % 300 == 0 else "page",
                        "occurred_at": start + timedelta(seconds=n),
                        "properties": {},
                    }
                    for n in range(3000)
                ]
                await connection.execute(insert(Event), events)
                await connection.exec_driver_sql("ANALYZE")
                followed = ordered_after(
                    Customer.id, Customer.created_at, 3600.0, engine.dialect.name
                )
                # As the gateway runs it: its values bound, not written in (a bound list of
                # types proves nothing of the index's condition to SQLite's planner).
                query = (
                    select(Customer.id)
                    .where(followed)
                    .compile(
                        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
                    )
                )
                values = tuple(query.params[name] for name in query.positiontup or ())
                explain = "EXPLAIN" if url.startswith("postgresql") else "EXPLAIN QUERY PLAN"
                found = await connection.exec_driver_sql(f"{explain} {query}", values)
                return " ".join(str(value) for row in found for value in row)
        finally:
            await engine.dispose()

    assert "ix_events_customer_orders" in asyncio.run(plan())

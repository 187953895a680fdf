"""The demo population's history stored as events, so ``recs build`` has data to learn from.

In production the events table fills from webhooks (Segment track calls, Shopify
order webhooks) and the event stream. The demo has no traffic, so this writes what
they would have delivered for the seeded people: their analytics events (every track
and page call, stored as the Segment webhook stores them, so behaviour can also be
served from the store) and their orders (all of them, older than the analytics window
too) in the Shopify shape with line items. Idempotent: (source, event_id) is unique,
re-runs add nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demo.people.behaviour import behaviour
from demo.people.orders import orders_for
from demo.people.population import Person
from demo.seed import customer_id_for
from gateway.db.models import Customer, Event
from gateway.recommendations.training.history import History, HistoryReader

_BATCH = 5000
# The calls the model learns from (what ``recs build`` reads back from the database).
_TRACKED = ("track:Product Viewed", "track:Product Added", "track:Order Completed")


def segment_rows(person: Person, received_at: datetime) -> Iterator[dict[str, Any]]:
    """The person's Segment calls as ``events`` rows: a track call as ``track:<event>``
    with ``{"event", "properties"}``, a page call as ``page`` with ``{"name",
    "properties"}`` (the demo's page calls carry no page name)."""
    customer_id = customer_id_for(person)
    for event in behaviour(person).events:
        page = event.type == "page"
        yield {
            "customer_id": customer_id,
            "source": "segment",
            "event_id": event.message_id,
            "type": "page" if page else f"track:{event.event}",
            "occurred_at": event.timestamp,
            "properties": (
                {"name": None, "properties": event.properties}
                if page
                else {"event": event.event, "properties": event.properties}
            ),
            "received_at": received_at,
        }


def _rows(
    person: Person, received_at: datetime, learnt_only: bool = False
) -> Iterator[dict[str, Any]]:
    for row in segment_rows(person, received_at):
        if not learnt_only or row["type"] in _TRACKED:
            yield row
    customer_id = customer_id_for(person)
    for order in orders_for(person):
        yield {
            "customer_id": customer_id,
            "source": "shopify",
            "event_id": f"order-{order.id}",
            "type": "orders/create",
            "occurred_at": order.created_at,
            "properties": {
                "order_id": str(order.id),
                "total_price": str(order.total),
                "currency": order.currency,
                "line_items": [
                    {
                        "product_id": str(item.product_id),
                        "quantity": item.quantity,
                        "category": item.category,
                    }
                    for item in order.line_items
                ],
            },
            "received_at": received_at,
        }


async def store_demo_history(
    sessions: async_sessionmaker[AsyncSession], people: Sequence[Person]
) -> int:
    """Insert the people's events not stored yet; returns how many rows were added. Only
    for the people still stored as seeded: one erased (or merged away) has no customer
    of that id, and a restart of the demo failed on the foreign key (a fresh review)."""
    now = datetime.now(UTC)
    added = 0
    async with sessions.begin() as session:
        stored = set(
            await session.scalars(
                select(Event.event_id).where(Event.source.in_(("segment", "shopify")))
            )
        )
        present = set(await session.scalars(select(Customer.id)))
        batch: list[dict[str, Any]] = []
        for person in (p for p in people if customer_id_for(p) in present):
            batch.extend(row for row in _rows(person, now) if row["event_id"] not in stored)
            if len(batch) >= _BATCH:
                added += await _insert(session, batch)
                batch = []
        added += await _insert(session, batch)
    return added


async def _insert(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    if rows:
        await session.execute(insert(Event), rows)
    return len(rows)


def demo_history(people: Sequence[Person]) -> History:
    """The same history, read as ``recs build`` would read it, without a database."""
    reader = HistoryReader()
    now = datetime.now(UTC)
    for person in people:
        for row in _rows(person, now, learnt_only=True):
            reader.add(
                str(row["customer_id"]),
                row["type"],
                row["occurred_at"].timestamp(),
                row["properties"],
            )
    return reader.history


async def prepare_demo_recommendations(
    sessions: async_sessionmaker[AsyncSession], people: Sequence[Person]
) -> None:
    """What ``gateway demo`` runs after seeding: the people's history, then a build."""
    from gateway.recommendations.store import RecommendationStore
    from gateway.recommendations.training.builder import build  # numpy: only when building

    await store_demo_history(sessions, people)
    await build(RecommendationStore(sessions))

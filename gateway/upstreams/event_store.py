"""The stored Segment calls, read back as the analytics records the upstream answers.

The repository behind behaviour served from the store: the ``events`` rows the Segment
webhook and the event stream write (``type`` ``track:<event>`` or ``page``, the call's
``properties`` under ``properties``), for a whole batch of customers in one query each,
ranked per customer with a window function. Rows become ``AnalyticsEvent``s, so the
same pure functions (``behaviour.engagement``, ``behaviour.open_cart``) serve both paths.

A row belongs to the unified customer it is linked to: a merge moves the events of
every folded customer onto the one kept, and an erasure deletes them, so reading by
``customer_id`` is reading every identity of the customer, and nothing of an erased one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.records import AnalyticsEvent
from gateway.db.models import Event

SOURCE = "segment"  # the source the Segment webhook and the event stream store calls under
PAGE_VIEWED = "Page Viewed"  # a page call, named as Segment's e-commerce spec names it
# The calls that make or empty a cart (``behaviour.open_cart``).
CART_EVENTS = ("Product Added", "Product Removed", "Order Completed")
# Behaviour: track and page calls; identify calls carry traits, not activity.
_BEHAVIOURAL = or_(Event.type.like("track:%"), Event.type == "page")

Events = dict[uuid.UUID, list[AnalyticsEvent]]


class EventStore:
    """Reads of the ``events`` table for behaviour; each call is one query."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def recent(self, customer_ids: Sequence[uuid.UUID], depth: int) -> Events:
        """Each customer's ``depth`` newest track and page calls, newest first."""
        return await self._ranked(customer_ids, _BEHAVIOURAL, depth)

    async def cart(self, customer_ids: Sequence[uuid.UUID], depth: int) -> Events:
        """Each customer's ``depth`` newest cart calls (added, removed, order completed),
        newest first: what ``open_cart`` needs, without the browsing in between."""
        kinds = [f"track:{name}" for name in CART_EVENTS]
        return await self._ranked(customer_ids, Event.type.in_(kinds), depth)

    async def since(self, customer_ids: Sequence[uuid.UUID], moment: datetime) -> Events:
        """Each customer's track and page calls from ``moment`` on, and their newest
        call whenever it was (when they were last seen), newest first. Only what
        engagement reads: the properties are left out, the session id kept."""
        if not customer_ids:
            return {}
        ranked = _ranked_rows(customer_ids, _BEHAVIOURAL, _SESSION_ID)
        query = _ordered(ranked, or_(ranked.c.rank == 1, ranked.c.occurred_at >= moment))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return _grouped(rows, lambda row: _record(row, {}, row.session_id))

    async def _ranked(
        self, customer_ids: Sequence[uuid.UUID], where: ColumnElement[bool], depth: int
    ) -> Events:
        if depth <= 0 or not customer_ids:
            return {}
        ranked = _ranked_rows(customer_ids, where, Event.properties.label("properties"))
        query = _ordered(ranked, ranked.c.rank <= depth)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return _grouped(rows, _from_row)


# The session id as the demo and most Segment sources send it: in the call's properties.
_SESSION_ID = Event.properties[("properties", "session_id")].as_string().label("session_id")


def _ranked_rows(
    customer_ids: Sequence[uuid.UUID], where: ColumnElement[bool], payload: ColumnElement[Any]
) -> Any:
    rank = (
        func.row_number()
        .over(
            partition_by=Event.customer_id,
            order_by=(Event.occurred_at.desc(), Event.id.desc()),
        )
        .label("rank")
    )
    return (
        select(
            Event.customer_id,
            Event.event_id,
            Event.type,
            Event.occurred_at,
            payload,
            rank,
        )
        .where(Event.customer_id.in_(list(customer_ids)), Event.source == SOURCE, where)
        .subquery("ranked")
    )


def _ordered(ranked: Any, where: ColumnElement[bool]) -> Select[Any]:
    return select(ranked).where(where).order_by(ranked.c.customer_id, ranked.c.rank)


def _grouped(rows: Iterable[Row[Any]], make: Any) -> Events:
    found: Events = {}
    for row in rows:
        found.setdefault(row.customer_id, []).append(make(row))
    return found


def _from_row(row: Row[Any]) -> AnalyticsEvent:
    stored: dict[str, Any] = row.properties or {}
    properties = dict(stored.get("properties") or {})
    if row.type == "page" and stored.get("name") is not None:
        # Segment puts a page call's name among its properties too.
        properties.setdefault("name", stored["name"])
    session = properties.get("session_id")
    return _record(row, properties, str(session) if session is not None else None)


def _record(row: Row[Any], properties: dict[str, Any], session_id: str | None) -> AnalyticsEvent:
    page = row.type == "page"
    # Built without validation: the row was validated when it was stored, and a batch
    # of a thousand customers makes tens of thousands of these.
    return AnalyticsEvent.model_construct(
        source=SOURCE,
        id=row.event_id,
        type="page" if page else "track",
        name=PAGE_VIEWED if page else row.type.removeprefix("track:"),
        timestamp=row.occurred_at,
        session_id=session_id,
        properties=properties,
    )


__all__ = ["CART_EVENTS", "SOURCE", "EventStore"]

"""The stored Segment calls, read back as the analytics records the upstream answers.

The repository behind behaviour served from the store: the ``events`` rows the Segment
webhook and the event stream write (``type`` ``track:<event>`` or ``page``, the call's
``properties`` under ``properties``), for a whole batch of customers in one query each.
Rows become ``AnalyticsEvent``s, so the same pure function (``behaviour.open_cart``)
and the same fields serve both paths. Engagement is counted by the database (one row
per customer, not every event of the last 30 days), with ``behaviour.engagement``'s
rules; the tests hold the two equal.

A row belongs to the unified customer it is linked to: a merge moves the events of
every folded customer onto the one kept, and an erasure deletes them, so reading by
``customer_id`` is reading every identity of the customer, and nothing of an erased one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Uuid,
    any_,
    bindparam,
    case,
    func,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from adapters.records import AnalyticsEvent
from gateway.db.models import Event
from gateway.upstreams.behaviour import EmailEngagement, Engagement

SOURCE = "segment"  # the source the Segment webhook and the event stream store calls under
PAGE_VIEWED = "Page Viewed"  # a page call, named as Segment's e-commerce spec names it
# The calls that make or empty a cart (``behaviour.open_cart``).
CART_EVENTS = ("Product Added", "Product Removed", "Order Completed")
# The ESPs whose engagement events are stored (gateway/ingest/esp_payloads.py).
ESP_SOURCES = ("sendgrid", "mandrill")
EMAIL_OPEN, EMAIL_CLICK = "email:open", "email:click"
# Behaviour: track and page calls; identify calls carry traits, not activity.
_BEHAVIOURAL = or_(Event.type.like("track:%"), Event.type == "page")

Events = dict[uuid.UUID, list[AnalyticsEvent]]
TIMELINE_MAX = 200


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored event as a timeline shows it: what and when, never its properties."""

    occurred_at: datetime
    source: str
    type: str  # e.g. orders/create, track:Product Viewed, page, email:open


class EventStore:
    """Reads of the ``events`` table for behaviour; each call is one query."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Postgres takes the ids as one array parameter (the statement is compiled
        # once, whatever the batch size) and walks each customer's index backwards,
        # LIMIT n (LATERAL): the cost follows the rows answered, not the customer's
        # whole history. SQLite has no LATERAL: a window function ranks the rows.
        self._postgres = engine.dialect.name == "postgresql"

    async def recent(
        self, customer_ids: Sequence[uuid.UUID], depth: int, detailed: bool = True
    ) -> Events:
        """Each customer's ``depth`` newest track and page calls, newest first; without
        ``detailed``, their properties (and so session ids) are left unread, empty."""
        return await self._newest(customer_ids, _BEHAVIOURAL, depth, detailed)

    async def cart(self, customer_ids: Sequence[uuid.UUID], depth: int) -> Events:
        """Each customer's ``depth`` newest cart calls (added, removed, order completed),
        newest first: what ``open_cart`` needs, without the browsing in between."""
        kinds = [f"track:{name}" for name in CART_EVENTS]
        return await self._newest(customer_ids, Event.type.in_(kinds), depth)

    async def engagement(
        self, customer_ids: Sequence[uuid.UUID], since: datetime
    ) -> dict[uuid.UUID, Engagement]:
        """Each customer's engagement from ``since`` on, as ``behaviour.engagement``
        counts it over their calls: distinct (non-empty) session ids and page views in
        the window, and their newest call ever. Customers without a call are absent."""
        if not customer_ids:
            return {}
        recent = Event.occurred_at >= since
        page = or_(Event.type == "page", Event.type == f"track:{PAGE_VIEWED}")
        query = (
            select(
                Event.customer_id,
                func.count(func.distinct(case((recent, func.nullif(Event.session_id, ""))))).label(
                    "sessions"
                ),
                func.count(case((recent & page, 1))).label("page_views"),
                func.max(Event.occurred_at).label("last_seen_at"),
            )
            .where(self._among(customer_ids), Event.source == SOURCE, _BEHAVIOURAL)
            .group_by(Event.customer_id)
        )
        return {
            row.customer_id: Engagement(row.sessions, row.page_views, row.last_seen_at)
            for row in await self._rows(query)
        }

    async def email_engagement(
        self, customer_ids: Sequence[uuid.UUID], since: datetime
    ) -> dict[uuid.UUID, EmailEngagement]:
        """Each customer's email opens and clicks from ``since`` on, and their newest open
        ever, from the ESPs' stored events. Customers without any are absent."""
        if not customer_ids:
            return {}
        recent = Event.occurred_at >= since
        opened = Event.type == EMAIL_OPEN
        query = (
            select(
                Event.customer_id,
                func.count(case((recent & opened, 1))).label("opens"),
                func.count(case((recent & (Event.type == EMAIL_CLICK), 1))).label("clicks"),
                func.max(case((opened, Event.occurred_at))).label("last_open_at"),
            )
            .where(
                self._among(customer_ids),
                Event.source.in_(ESP_SOURCES),
                Event.type.in_((EMAIL_OPEN, EMAIL_CLICK)),
            )
            .group_by(Event.customer_id)
        )
        return {
            row.customer_id: EmailEngagement(row.opens, row.clicks, _aware(row.last_open_at))
            for row in await self._rows(query)
        }

    async def timeline(
        self, customer_id: uuid.UUID, first: int, sources: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        """One customer's ``first`` newest stored events (of ``sources``, or of every
        source: orders, calls, email engagement), newest first: their kind and time only."""
        query = (
            select(Event.occurred_at, Event.source, Event.type)
            .where(Event.customer_id == customer_id)
            .order_by(Event.occurred_at.desc(), Event.id.desc())
            .limit(max(1, min(first, TIMELINE_MAX)))
        )
        if sources is not None:
            query = query.where(Event.source.in_(list(sources)))
        return [
            StoredEvent(_aware(row.occurred_at) or row.occurred_at, row.source, row.type)
            for row in await self._rows(query)
        ]

    async def _newest(
        self,
        customer_ids: Sequence[uuid.UUID],
        where: ColumnElement[bool],
        depth: int,
        detailed: bool = True,
    ) -> Events:
        if depth <= 0 or not customer_ids:
            return {}
        columns = _COLUMNS if detailed else _BARE_COLUMNS
        query: Select[Any]
        if self._postgres:
            wanted = (
                func.unnest(_ids(customer_ids)).table_valued("id", name="wanted").render_derived()
            )
            newest = (
                select(*columns)
                .where(Event.customer_id == wanted.c.id, Event.source == SOURCE, where)
                .order_by(Event.occurred_at.desc(), Event.id.desc())
                .limit(depth)
                .lateral("newest")
            )
            query = select(newest).select_from(wanted).join(newest, true())
        else:
            rank = (
                func.row_number()
                .over(
                    partition_by=Event.customer_id,
                    order_by=(Event.occurred_at.desc(), Event.id.desc()),
                )
                .label("rank")
            )
            ranked = (
                select(*columns, rank)
                .where(self._among(customer_ids), Event.source == SOURCE, where)
                .subquery("ranked")
            )
            query = select(ranked).where(ranked.c.rank <= depth)
        return _grouped(await self._rows(query))

    def _among(self, customer_ids: Sequence[uuid.UUID]) -> ColumnElement[bool]:
        if self._postgres:
            return Event.customer_id == any_(_ids(customer_ids))
        return Event.customer_id.in_(list(customer_ids))

    async def _rows(self, query: Executable) -> Sequence[Row[Any]]:
        async with self._engine.connect() as connection:
            rows: Sequence[Row[Any]] = (await connection.execute(query)).all()
            return rows


# Of the stored call, only what its record holds: its properties and a page call's
# name, not the whole call (context, traits, integrations), which is most of a real
# Segment message and would be decoded for nothing.
_COLUMNS = (
    Event.id.label("row_id"),
    Event.customer_id,
    Event.event_id,
    Event.type,
    Event.occurred_at,
    Event.properties["properties"].label("properties"),
    Event.properties["name"].as_string().label("page_name"),
)
_BARE_COLUMNS = (
    *_COLUMNS[:5],
    null().label("properties"),
    null().label("page_name"),
)


def _aware(stamp: datetime | None) -> datetime | None:
    # SQLite hands back naive times (a MAX over a CASE, even as text); all are UTC.
    if isinstance(stamp, str):
        stamp = datetime.fromisoformat(stamp)
    return stamp.replace(tzinfo=UTC) if stamp is not None and stamp.tzinfo is None else stamp


def _ids(customer_ids: Sequence[uuid.UUID]) -> Any:
    return bindparam("ids", list(customer_ids), type_=ARRAY(Uuid()))


def _grouped(rows: Iterable[Sequence[Any]]) -> Events:
    """Rows by customer, newest first (ties: the later stored first). Rows are read as
    tuples, in ``_COLUMNS`` order: a batch is thousands of them, and their records are
    validated in one call (pydantic's per-model call cost a third of the read)."""
    keys: list[tuple[uuid.UUID, datetime, int]] = []
    fields: list[dict[str, Any]] = []
    for row in rows:
        row_id, customer_id, event_id, kind, occurred_at, properties, page_name = row[:7]
        keys.append((customer_id, occurred_at, row_id))
        fields.append(_fields(event_id, kind, occurred_at, properties, page_name))
    by_customer: dict[uuid.UUID, list[tuple[datetime, int, AnalyticsEvent]]] = {}
    for (customer_id, occurred_at, row_id), event in zip(
        keys, _RECORDS.validate_python(fields), strict=True
    ):
        by_customer.setdefault(customer_id, []).append((occurred_at, row_id, event))
    return {
        customer: [event for *_, event in sorted(found, key=_newest_first, reverse=True)]
        for customer, found in by_customer.items()
    }


_RECORDS = TypeAdapter(list[AnalyticsEvent])


def _newest_first(entry: tuple[datetime, int, AnalyticsEvent]) -> tuple[datetime, int]:
    return entry[0], entry[1]


def _fields(
    event_id: str, kind: str, occurred_at: datetime, stored: Any, page_name: str | None
) -> dict[str, Any]:
    """A stored call (its properties, and a page call's name) as the fields of its
    ``AnalyticsEvent``."""
    properties = dict(stored) if isinstance(stored, dict) else {}
    page = kind == "page"
    if page and page_name is not None:
        # Segment puts a page call's name among its properties too.
        properties.setdefault("name", page_name)
    session = properties.get("session_id")
    return {
        "source": SOURCE,
        "id": event_id,
        "type": "page" if page else "track",
        "name": PAGE_VIEWED if page else kind.removeprefix("track:"),
        "timestamp": occurred_at,
        "session_id": str(session) if session is not None else None,
        "properties": properties,
    }


__all__ = ["CART_EVENTS", "SOURCE", "EventStore", "StoredEvent"]

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

from sqlalchemy import (
    ColumnElement,
    Row,
    Uuid,
    any_,
    bindparam,
    case,
    func,
    null,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from adapters.records import AnalyticsEvent, trusted_event
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
        return await self._newest(customer_ids, _BEHAVIOURAL_CALLS, depth, detailed)

    async def cart(self, customer_ids: Sequence[uuid.UUID], depth: int) -> Events:
        """Each customer's ``depth`` newest cart calls (added, removed, order completed),
        newest first: what ``open_cart`` needs, without the browsing in between."""
        return await self._newest(customer_ids, _CART_CALLS, depth)

    async def engagement(
        self, customer_ids: Sequence[uuid.UUID], since: datetime
    ) -> dict[uuid.UUID, Engagement]:
        """Each customer's engagement from ``since`` on, as ``behaviour.engagement``
        counts it over their calls: distinct (non-empty) session ids and page views in
        the window, and their newest call ever. Customers without a call are absent."""
        if not customer_ids:
            return {}
        if self._postgres:
            rows = await self._driver_rows(_PG_ENGAGEMENT, list(customer_ids), SOURCE, since)
            # A customer without a call has no newest one: absent, as on SQLite.
            return {
                customer_ids[n - 1]: Engagement(sessions, page_views, last_seen_at)
                for n, sessions, page_views, last_seen_at in rows
                if last_seen_at is not None
            }
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
        calls: str,
        depth: int,
        detailed: bool = True,
    ) -> Events:
        """Each customer's ``depth`` newest ``calls`` (``_BEHAVIOURAL`` or ``_CART``)."""
        if depth <= 0 or not customer_ids:
            return {}
        if self._postgres:
            query = _PG_NEWEST.format(
                columns=_PG_DETAILED if detailed else "", where=_PG_WHERE[calls]
            )
            rows = await self._driver_rows(query, list(customer_ids), SOURCE, depth)
            return _by_ordinal(customer_ids, rows)
        rank = (
            func.row_number()
            .over(
                partition_by=Event.customer_id,
                order_by=(Event.occurred_at.desc(), Event.id.desc()),
            )
            .label("rank")
        )
        ranked = (
            select(*(_COLUMNS if detailed else _BARE_COLUMNS), rank)
            .where(self._among(customer_ids), Event.source == SOURCE, _SQLITE_WHERE[calls])
            .subquery("ranked")
        )
        return _grouped(await self._rows(select(ranked).where(ranked.c.rank <= depth)))

    def _among(self, customer_ids: Sequence[uuid.UUID]) -> ColumnElement[bool]:
        if self._postgres:
            return Event.customer_id == any_(_ids(customer_ids))
        return Event.customer_id.in_(list(customer_ids))

    async def _rows(self, query: Executable) -> Sequence[Row[Any]]:
        async with self._engine.connect() as connection:
            rows: Sequence[Row[Any]] = (await connection.execute(query)).all()
            return rows

    async def _driver_rows(self, query: str, *arguments: Any) -> Sequence[Sequence[Any]]:
        """``query``'s rows as asyncpg's records, straight from the driver's cursor: a
        send's batch is 5,000 rows, and SQLAlchemy's result rows and type processing
        cost five times the fetch (51 ms of CPU against 8 for the same read). The
        statement still runs through SQLAlchemy, so its hooks (a server gone away is
        ``DatabaseUnavailable``) and its transaction handling hold as for any other."""
        async with self._engine.connect() as connection:
            result = await connection.exec_driver_sql(query, arguments)
            rows: Sequence[Sequence[Any]] = result.cursor.fetchall()
            return rows


# Which calls a read wants: track and page calls (behaviour), or those of a cart.
_BEHAVIOURAL_CALLS, _CART_CALLS = "behaviour", "cart"
_SQLITE_WHERE: dict[str, ColumnElement[bool]] = {
    _BEHAVIOURAL_CALLS: _BEHAVIOURAL,
    _CART_CALLS: Event.type.in_([f"track:{name}" for name in CART_EVENTS]),
}
_PG_WHERE = {
    _BEHAVIOURAL_CALLS: "(e.type LIKE 'track:%' OR e.type = 'page')",
    _CART_CALLS: "e.type IN ({})".format(", ".join(f"'track:{name}'" for name in CART_EVENTS)),
}
# Each wanted customer's index walked backwards, LIMIT n (LATERAL): the cost follows the
# rows answered, not the customer's whole history. A row names its customer by place in
# the ids given ($1), not by id (no UUID to decode per row); only the columns the
# records need, the call's properties only when read.
_PG_NEWEST = """SELECT w.n, e.event_id, e.type, e.occurred_at{columns}
FROM unnest($1::uuid[]) WITH ORDINALITY AS w(id, n)
CROSS JOIN LATERAL (
    SELECT e.id, e.event_id, e.type, e.occurred_at, e.properties FROM events AS e
    WHERE e.customer_id = w.id AND e.source = $2 AND {where}
    ORDER BY e.occurred_at DESC, e.id DESC LIMIT $3
) AS e
ORDER BY w.n, e.occurred_at DESC, e.id DESC"""
_PG_DETAILED = ", e.properties -> 'properties', e.properties ->> 'name'"
# Engagement per wanted customer, each read off their own index: the window's calls
# (some ten a customer) counted, and the newest call ever, the first one met walking
# it backwards. One GROUP BY over every event of the batch sorted 20,000 rows.
_PG_ENGAGEMENT = f"""SELECT w.n, counted.sessions, counted.page_views, newest.last_seen_at
FROM unnest($1::uuid[]) WITH ORDINALITY AS w(id, n)
CROSS JOIN LATERAL (
    SELECT count(DISTINCT nullif(e.session_id, '')) AS sessions,
        count(*) FILTER (WHERE e.type = 'page' OR e.type = 'track:{PAGE_VIEWED}') AS page_views
    FROM events AS e
    WHERE e.customer_id = w.id AND e.source = $2 AND e.occurred_at >= $3
        AND {_PG_WHERE[_BEHAVIOURAL_CALLS]}
) AS counted
CROSS JOIN LATERAL (
    SELECT max(e.occurred_at) AS last_seen_at FROM events AS e
    WHERE e.customer_id = w.id AND e.source = $2 AND {_PG_WHERE[_BEHAVIOURAL_CALLS]}
) AS newest"""

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


def _by_ordinal(customer_ids: Sequence[uuid.UUID], rows: Iterable[Sequence[Any]]) -> Events:
    """Postgres's rows (ordinal, event_id, type, occurred_at[, properties, page name]),
    in order, by customer: newest first as the statement sorted them."""
    found: Events = {}
    current = 0
    events: list[AnalyticsEvent] = []
    for row in rows:
        if row[0] != current:
            current, events = row[0], []
            found[customer_ids[current - 1]] = events
        if len(row) == 4:  # without properties (a send's usual read): no dict to copy
            kind = row[2]
            page = kind == "page"
            events.append(
                trusted_event(
                    SOURCE,
                    row[1],
                    "page" if page else "track",
                    PAGE_VIEWED if page else kind.removeprefix("track:"),
                    row[3],
                    None,
                    {},
                )
            )
        else:
            events.append(_record(row[1], row[2], row[3], row[4], row[5]))
    return found


def _grouped(rows: Iterable[Sequence[Any]]) -> Events:
    """SQLite's rows (``_COLUMNS``) by customer, newest first (ties: the later stored
    first)."""
    by_customer: dict[uuid.UUID, list[tuple[datetime, int, AnalyticsEvent]]] = {}
    for row in rows:
        row_id, customer_id, event_id, kind, occurred_at, properties, page_name = row[:7]
        event = _record(event_id, kind, occurred_at, properties, page_name)
        by_customer.setdefault(customer_id, []).append((occurred_at, row_id, event))
    return {
        customer: [event for *_, event in sorted(found, key=_newest_first, reverse=True)]
        for customer, found in by_customer.items()
    }


def _newest_first(entry: tuple[datetime, int, AnalyticsEvent]) -> tuple[datetime, int]:
    return entry[0], entry[1]


def _record(
    event_id: str,
    kind: str,
    occurred_at: datetime,
    stored: Any = None,
    page_name: str | None = None,
) -> AnalyticsEvent:
    """A stored call (its properties, and a page call's name) as its ``AnalyticsEvent``,
    unvalidated: the webhook and the stream validated the call before storing it, and
    a send reads 5,000 of them back (validating them again was a third of the read)."""
    properties = dict(stored) if isinstance(stored, dict) else {}
    page = kind == "page"
    if page and page_name is not None:
        # Segment puts a page call's name among its properties too.
        properties.setdefault("name", page_name)
    session = properties.get("session_id")
    return trusted_event(
        SOURCE,
        event_id,
        "page" if page else "track",
        PAGE_VIEWED if page else kind.removeprefix("track:"),
        occurred_at,
        str(session) if session is not None else None,
        properties,
    )


__all__ = ["CART_EVENTS", "SOURCE", "EventStore", "StoredEvent"]

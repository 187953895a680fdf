"""When a stored order counts: at its own time, never later than the gateway received it.

A conversion is an order after a click (gateway/experiments/results.py): an order dated
ahead (a shop's clock ahead, a forged ``created_at`` or ``timestamp``) would otherwise
convert clicks made after it arrived. ESP statements are bounded the same way
(gateway/ingest/engagement.py ``stated_at``). The webhooks (Shopify ``orders/*``,
Segment) and the event stream parse orders through gateway/ingest/webhook_payloads.py,
which applies this as it parses, on arrival.

An order's later events (Shopify's ``orders/paid``, ``orders/updated``) are bounded by
their own arrival, later than the order's: dated ahead, each would stand as a new order
after a click made before it arrived. So an order converts a click only when none of its
events is stored at or before the click (``ordered_after``): counted once, at its first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Interval, String, and_, func, literal, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import SQLCoreOperations

from gateway.db.models import Event, order_key
from gateway.scores.store import ORDER_TYPES

ORDER_COMPLETED = "track:Order Completed"  # Segment's order (as ORDER_TYPES names it)


def not_after(occurred: datetime, received: datetime) -> datetime:
    """``occurred``, or ``received`` when that is earlier; a time without a zone is UTC
    (compared with an aware one it would raise, and stored it would be read in the
    database's zone)."""
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    return min(occurred, received)


def within_after(
    later: SQLCoreOperations[datetime],
    earlier: SQLCoreOperations[datetime],
    seconds: float,
    dialect: str,
) -> ColumnElement[bool]:
    """``earlier < later <= earlier + seconds``, on Postgres as an index range on
    ``later``; on SQLite (times stored as text) through ``julianday``."""
    if dialect == "postgresql":
        window = literal(timedelta(seconds=seconds), Interval())
        return and_(later > earlier, later <= earlier + window)
    return and_(
        later > earlier, func.julianday(later) <= func.julianday(earlier) + seconds / 86_400.0
    )


def ordered_after(
    customer: Any, clicked_at: SQLCoreOperations[datetime], seconds: float, dialect: str
) -> ColumnElement[bool]:
    """An order of ``customer`` first stored within ``seconds`` after ``clicked_at``: an
    order event in the window, of an order none of whose events (the same order id, as
    the scores' ledger counts one order) is stored at or before the click. An event
    without an order id is an order of its own."""
    order, earlier = aliased(Event), aliased(Event)
    # Each subquery reads its own alias and correlates everything else (the click's
    # table two levels up included: left to itself, the inner one read it afresh).
    seen = (
        select(literal(1))
        .where(
            earlier.customer_id == customer,
            earlier.type.in_(ORDER_TYPES),
            earlier.occurred_at <= clicked_at,
            order_key(earlier).cast(String) == order_key(order).cast(String),
        )
        .correlate_except(earlier)
    )
    return (
        select(literal(1))
        .where(
            order.customer_id == customer,
            order.type.in_(ORDER_TYPES),
            within_after(order.occurred_at, clicked_at, seconds, dialect),
            ~seen.exists(),
        )
        .correlate_except(order)
        .exists()
    )

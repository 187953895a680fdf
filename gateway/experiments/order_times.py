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

from sqlalchemy import ColumnElement, Interval, String, and_, func, literal, literal_column, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import SQLCoreOperations

from gateway.db.models import ORDER_TYPES, Event, order_key

ORDER_COMPLETED = "track:Order Completed"  # Segment's order (as models.ORDER_TYPES names it)


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
            _orders_only(earlier),
            earlier.occurred_at <= clicked_at,
            order_key(earlier).cast(String) == order_key(order).cast(String),
        )
        .correlate_except(earlier)
    )
    return (
        select(literal(1))
        .where(
            order.customer_id == customer,
            _orders_only(order),
            within_after(order.occurred_at, clicked_at, seconds, dialect),
            ~seen.exists(),
        )
        .correlate_except(order)
        .exists()
    )


# The order types as SQL literals (constants of this code, never input): the planners
# match ``type IN ('orders/create', ...)`` written out against the partial index's own
# condition (``ix_events_customer_orders``), which a bound list does not prove.
_ORDER_LITERALS: tuple[ColumnElement[str], ...] = tuple(
    literal_column(f"'{name}'") for name in ORDER_TYPES
)


def _orders_only(events: Any) -> ColumnElement[bool]:
    """That an event (of this alias of events) is an order, as the index's condition."""
    condition: ColumnElement[bool] = events.type.in_(_ORDER_LITERALS)
    return condition

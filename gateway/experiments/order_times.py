"""When a stored order counts: at its own time, never later than the gateway received it.

A conversion is an order after a click (gateway/experiments/results.py): an order dated
ahead (a shop's clock ahead, a forged ``created_at`` or ``timestamp``) would otherwise
convert clicks made after it arrived. ESP statements are bounded the same way
(gateway/ingest/engagement.py ``stated_at``). The webhooks (Shopify ``orders/*``,
Segment) and the event stream parse orders through gateway/ingest/webhook_payloads.py,
which applies this as it parses, on arrival.
"""

from __future__ import annotations

from datetime import UTC, datetime

ORDER_COMPLETED = "track:Order Completed"  # Segment's order (as ORDER_TYPES names it)


def not_after(occurred: datetime, received: datetime) -> datetime:
    """``occurred``, or ``received`` when that is earlier; a time without a zone is UTC
    (compared with an aware one it would raise, and stored it would be read in the
    database's zone)."""
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    return min(occurred, received)

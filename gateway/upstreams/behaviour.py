"""What a customer's analytics events say: engagement, the open cart, recent activity.

Pure functions over ``AnalyticsEvent`` records, following Segment's e-commerce spec
event names, so they are testable without any upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from adapters.records import AnalyticsEvent

ENGAGEMENT_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Engagement:
    sessions: int
    page_views: int
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class EmailEngagement:
    """What a customer did with the emails sent to them, from the ESPs' events."""

    opens: int  # in the window
    clicks: int  # in the window
    last_open_at: datetime | None  # ever


NO_EMAIL_ENGAGEMENT = EmailEngagement(opens=0, clicks=0, last_open_at=None)


@dataclass(frozen=True, slots=True)
class CartItem:
    product_id: str
    title: str | None
    quantity: int
    price: Decimal | None


@dataclass(frozen=True, slots=True)
class Cart:
    items: tuple[CartItem, ...]
    updated_at: datetime | None

    @property
    def subtotal(self) -> Decimal:
        return sum((i.price or Decimal(0)) * i.quantity for i in self.items) or Decimal("0")


def engagement(events: Sequence[AnalyticsEvent], now: datetime) -> Engagement:
    since = now - ENGAGEMENT_WINDOW  # once, not once per event: a send asks it per customer
    recent = [e for e in events if e.timestamp >= since]
    return Engagement(
        sessions=len({e.session_id for e in recent if e.session_id}),
        page_views=sum(1 for e in recent if e.type == "page" or e.name == "Page Viewed"),
        last_seen_at=max((e.timestamp for e in events), default=None),
    )


def _decimal(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def open_cart(events: Sequence[AnalyticsEvent]) -> Cart | None:
    """Products added and not removed since the last completed order, or None."""
    quantities: dict[str, int] = {}
    details: dict[str, CartItem] = {}
    updated_at = None
    for event in sorted(events, key=lambda e: e.timestamp):
        product_id = str(event.properties.get("product_id") or "")
        if event.name == "Order Completed":
            quantities.clear()
            updated_at = None
        elif event.name == "Product Added" and product_id:
            quantity = int(event.properties.get("quantity") or 1)
            quantities[product_id] = quantities.get(product_id, 0) + quantity
            details[product_id] = CartItem(
                product_id, event.properties.get("name"), 0, _decimal(event.properties.get("price"))
            )
            updated_at = event.timestamp
        elif event.name == "Product Removed" and product_id in quantities:
            quantities[product_id] -= int(event.properties.get("quantity") or 1)
            if quantities[product_id] <= 0:
                del quantities[product_id]
            updated_at = event.timestamp
    if not quantities:
        return None
    items = tuple(
        CartItem(pid, details[pid].title, qty, details[pid].price)
        for pid, qty in quantities.items()
    )
    return Cart(items=items, updated_at=updated_at)

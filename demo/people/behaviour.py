"""Each person's tracked behaviour over the 60 days before the epoch.

Segment e-commerce events grouped in sessions, derived lazily per person from
``person.rng("events")``. Browsing follows the person's taste, the same weights
their orders were drawn with, and every order placed inside the window appears
as a session ending in ``Order Completed`` for that very order, so the analytics
sample agrees with the commerce sample.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from demo.people.catalogue import SHOP_URL, Product, catalogue
from demo.people.orders import Order, currency_of, orders_for
from demo.people.population import Person
from demo.people.taste import Taste, taste

WINDOW = timedelta(days=60)
_ACTIVITY = ((0, 0), (1, 3), (4, 8), (9, 15))
_ACTIVITY_WEIGHTS = (15, 35, 35, 15)


@dataclass(frozen=True, slots=True)
class Event:
    """One tracked call; ``type`` is "track" or "page" as in Segment."""

    message_id: str
    type: str
    event: str
    timestamp: datetime
    anonymous_id: str
    session_id: str
    properties: dict[str, Any] = field(hash=False)
    page_path: str = "/"


@dataclass(frozen=True, slots=True)
class Behaviour:
    """A person's events (newest first) and the anonymous ids they used."""

    events: tuple[Event, ...]
    anonymous_ids: tuple[str, ...]

    @property
    def last_seen_at(self) -> datetime | None:
        return self.events[0].timestamp if self.events else None


def _product_properties(
    product: Product, person: Person, quantity: int | None = None
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "product_id": str(product.id),
        "sku": product.sku,
        "category": product.category,
        "name": product.title,
        "brand": product.vendor,
        "price": float(product.price),
        "currency": currency_of(person),
        "url": product.url,
        "image_url": product.image_url,
    }
    if quantity is not None:
        props["quantity"] = quantity
    return props


class _SessionWriter:
    """Appends one session's events at increasing times from a start time."""

    def __init__(self, person: Person, rng: random.Random, anonymous_id: str, start: datetime):
        self.person, self.rng, self.anonymous_id = person, rng, anonymous_id
        self.session_id = f"sess_{rng.getrandbits(48):012x}"
        self.at = start
        self.events: list[Event] = []

    def add(self, name: str, properties: dict[str, Any], path: str, kind: str = "track") -> None:
        self.at += timedelta(seconds=self.rng.randrange(8, 90))
        message_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.events.append(
            Event(
                message_id=message_id,
                type=kind,
                event=name,
                timestamp=self.at,
                anonymous_id=self.anonymous_id,
                session_id=self.session_id,
                properties={**properties, "session_id": self.session_id},
                page_path=path,
            )
        )

    def page(self, path: str, title: str) -> None:
        self.add(
            "Page Viewed",
            {"path": path, "url": f"{SHOP_URL}{path}", "title": title},
            path,
            kind="page",
        )

    def view(self, product: Product) -> None:
        self.add(
            "Product Viewed",
            _product_properties(product, self.person),
            f"/products/{product.handle}",
        )

    def cart(self, name: str, product: Product, quantity: int) -> None:
        props = _product_properties(product, self.person, quantity)
        props["cart_id"] = f"cart_{self.session_id[5:]}"
        self.add(name, props, f"/products/{product.handle}")


def _browse(writer: _SessionWriter, liking: Taste, shopping: bool) -> None:
    rng = writer.rng
    category = liking.pick_category(rng)
    writer.page(f"/collections/{category.lower()}", category)
    viewed = []
    for _ in range(rng.randrange(2, 8)):
        # Mostly within taste; a little exploration keeps recommendations honest.
        product = (
            liking.pick_product(rng)
            if rng.random() < 0.85
            else catalogue().products[rng.randrange(len(catalogue().products))]
        )
        writer.view(product)
        viewed.append(product)
    if shopping:
        for product in rng.sample(viewed, k=min(len(viewed), rng.randrange(1, 4))):
            writer.cart("Product Added", product, 1)
        if rng.random() < 0.4:
            writer.cart("Product Removed", viewed[0], 1)
    elif rng.random() < 0.25:
        writer.cart("Product Added", viewed[-1], 1)
        if rng.random() < 0.5:
            writer.cart("Product Removed", viewed[-1], 1)


def _purchase(writer: _SessionWriter, order: Order) -> list[Event]:
    products = catalogue().by_id
    writer.page("/", "Home")
    for item in order.line_items:
        writer.view(products[item.product_id])
        writer.cart("Product Added", products[item.product_id], item.quantity)
    lines = [
        {
            "product_id": str(i.product_id),
            "sku": i.sku,
            "name": i.title,
            "price": float(i.price),
            "quantity": i.quantity,
            "category": i.category,
        }
        for i in order.line_items
    ]
    common = {"order_id": str(order.id), "currency": order.currency, "products": lines}
    writer.add(
        "Checkout Started",
        {**common, "value": float(order.subtotal), "revenue": float(order.subtotal)},
        "/checkout",
    )
    writer.add(
        "Order Completed",
        {
            **common,
            "total": float(order.total),
            "subtotal": float(order.subtotal),
            "revenue": float(order.subtotal),
            "tax": float(order.tax),
        },
        "/checkout/thank_you",
    )
    # The session was written forwards; shift it so it ends when the order was placed.
    shift = order.created_at - writer.events[-1].timestamp
    return [_shifted(event, shift) for event in writer.events]


def _shifted(event: Event, shift: timedelta) -> Event:
    return Event(
        event.message_id,
        event.type,
        event.event,
        event.timestamp + shift,
        event.anonymous_id,
        event.session_id,
        event.properties,
        event.page_path,
    )


def _anonymous_ids(rng: random.Random) -> tuple[str, ...]:
    return tuple(f"anon_{rng.getrandbits(64):016x}" for _ in range(rng.randrange(1, 4)))


def anonymous_ids(person: Person) -> tuple[str, ...]:
    """The browser ids the person was tracked under, without building their events
    (they are the first draws of the same generator)."""
    return _anonymous_ids(person.rng("events"))


@lru_cache(maxsize=8192)
def behaviour(person: Person) -> Behaviour:
    """The person's events in the window before the epoch, newest first."""
    rng = person.rng("events")
    anonymous_ids = _anonymous_ids(rng)
    epoch = person.epoch
    start = max(epoch - WINDOW, person.created_at)
    span = int((epoch - start).total_seconds()) - 7200
    liking = taste(person)
    events: list[Event] = []
    recent_orders = [o for o in orders_for(person) if o.created_at >= start + timedelta(hours=1)]
    for order in recent_orders:
        events += _purchase(_SessionWriter(person, rng, rng.choice(anonymous_ids), start), order)
    low, high = rng.choices(_ACTIVITY, weights=_ACTIVITY_WEIGHTS)[0]
    for _ in range(rng.randrange(low, high + 1)):
        at = start + timedelta(seconds=rng.randrange(span))
        writer = _SessionWriter(person, rng, rng.choice(anonymous_ids), at)
        _browse(writer, liking, shopping=False)
        events += writer.events
    # Some people leave a cart open after their last purchase: that cart is what
    # an abandoned-cart email is rendered from.
    if (recent_orders or high) and rng.random() < 0.3:
        after = max([o.created_at for o in recent_orders] + [epoch - timedelta(days=7)])
        at = after + timedelta(
            seconds=rng.randrange(max(60, int((epoch - after).total_seconds()) - 3600))
        )
        writer = _SessionWriter(person, rng, rng.choice(anonymous_ids), at)
        _browse(writer, liking, shopping=True)
        events += writer.events
    events = [e for e in events if e.timestamp < epoch]
    events.sort(key=lambda e: (e.timestamp, e.message_id), reverse=True)
    return Behaviour(events=tuple(events), anonymous_ids=anonymous_ids)


def cart(events: Iterable[Event]) -> dict[int, int]:
    """Product id -> quantity added and not removed or ordered since the last
    ``Order Completed`` (events in any order)."""
    contents: dict[int, int] = {}
    for event in sorted(events, key=lambda e: e.timestamp):
        if event.event == "Order Completed":
            contents.clear()
        elif event.event in ("Product Added", "Product Removed"):
            product_id = int(event.properties["product_id"])
            sign = 1 if event.event == "Product Added" else -1
            quantity = contents.get(product_id, 0) + sign * int(event.properties["quantity"])
            if quantity > 0:
                contents[product_id] = quantity
            else:
                contents.pop(product_id, None)
    return contents

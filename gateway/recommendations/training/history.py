"""The interaction history the model learns from, read from the stored events.

Two shapes of stored event carry product interactions, the ones webhooks write:

- Segment ``track:<event>`` rows: ``{"event": name, "properties": {...}}`` with a
  ``product_id`` (Product Viewed, Product Added) or ``products`` (Order Completed);
- Shopify ``orders/*`` rows: ``{"order_id": …, "line_items": [{"product_id": …}]}``
  (webhook orders without line items say nothing about products and are skipped).

An order seen through both the shop and the analytics tool counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Event
from gateway.recommendations.interactions import Interaction

_SEGMENT_KINDS = {
    "track:Product Viewed": "view",
    "track:Product Clicked": "view",
    "track:Product Added": "cart",
}
_ORDER_TYPES = ("track:Order Completed", "orders/create", "orders/paid", "orders/updated")


@dataclass(slots=True)
class History:
    """Interactions per customer, and what the events said about each product's category."""

    interactions: list[Interaction] = field(default_factory=list)
    categories: dict[str, str] = field(default_factory=dict)
    events_read: int = 0


class HistoryReader:
    """Turns stored event rows into interactions, counting each order once."""

    def __init__(self) -> None:
        self.history = History()
        self._orders: set[tuple[str, str]] = set()

    def add(self, customer: str, kind: str, at: float, properties: Mapping[str, Any]) -> None:
        self.history.events_read += 1
        order = str(properties.get("order_id") or _inner(properties).get("order_id"))
        for product_id, interaction, category in _products(kind, properties):
            if interaction == "purchase":
                if (customer, f"{order}:{product_id}") in self._orders:
                    continue
                self._orders.add((customer, f"{order}:{product_id}"))
            self.history.interactions.append(Interaction(customer, product_id, interaction, at))
            if category:
                self.history.categories.setdefault(product_id, category)


async def read_history(sessions: async_sessionmaker[AsyncSession]) -> History:
    """Every linked event that names a product, as interactions, oldest row first."""
    reader = HistoryReader()
    types = (*_SEGMENT_KINDS, *_ORDER_TYPES)
    query = (
        select(Event.customer_id, Event.type, Event.occurred_at, Event.properties)
        .where(Event.customer_id.is_not(None), Event.type.in_(types))
        .order_by(Event.id)
        .execution_options(yield_per=5000)
    )
    async with sessions() as session:
        async for customer_id, kind, occurred_at, properties in await session.stream(query):
            reader.add(str(customer_id), kind, occurred_at.timestamp(), properties or {})
    return reader.history


def _inner(properties: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = properties.get("properties")
    return inner if isinstance(inner, Mapping) else {}


def _products(kind: str, properties: Mapping[str, Any]) -> Iterable[tuple[str, str, str | None]]:
    """(product id, interaction kind, category) for each product the event names."""
    if kind in _SEGMENT_KINDS:
        inner = _inner(properties)
        if inner.get("product_id"):
            yield str(inner["product_id"]), _SEGMENT_KINDS[kind], _category(inner)
        return
    lines = _inner(properties).get("products") if kind.startswith("track:") else None
    if lines is None:
        lines = properties.get("line_items")
    for line in lines if isinstance(lines, list) else []:
        if isinstance(line, Mapping) and line.get("product_id"):
            yield str(line["product_id"]), "purchase", _category(line)


def _category(properties: Mapping[str, Any]) -> str | None:
    value = properties.get("category")
    return str(value) if value else None

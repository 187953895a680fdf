"""What a read of customers' orders must bring, and the batch read that brings it.

A shop with a batch read (Shopify GraphQL) prices every query: the orders and line
items asked of each customer decide how many customers fit one query. So the read
brings what the selection needs (``OrdersNeed``), never a fixed window that would cut
``orders(first: 10)`` to 5 or drop line items. Needs are rounded up to a few tiers, each
cached apart: an answer cached for 5 orders never serves a query for 10.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.protocols import BatchOrdersAdapter
from adapters.records import Order
from gateway.profiles.customers import CustomerProfile

ORDERS_WINDOW = 50  # the most orders per customer a query reads; `orders(first)` slices
# `first` rounds up to one of these (or the shop's window): a few cache entries serve
# every `first`, and a template showing the last 3 orders is read as 3 (a 5-order read
# costs the priced shop half as much again).
_TIERS = (1, 3, 5, 10, 25, ORDERS_WINDOW)


@dataclass(frozen=True, slots=True)
class OrdersNeed:
    """How many of each customer's newest orders a selection reads, and whether it reads
    their line items. The default (everything) is what a caller that cannot tell asks."""

    first: int = ORDERS_WINDOW
    line_items: bool = True


EVERYTHING = OrdersNeed()


def tier(need: OrdersNeed, window: int) -> OrdersNeed:
    """``need`` rounded up to the next tier (the shop's window is one), so a few cache
    entries serve every ``first``."""
    first = min(need.first, ORDERS_WINDOW)
    return OrdersNeed(next(t for t in _firsts(window) if t >= first), need.line_items)


def tiers(window: int) -> list[OrdersNeed]:
    """Every need ``tier`` answers for a shop with this window."""
    return [OrdersNeed(f, lines) for f in _firsts(window) for lines in (False, True)]


def wider(need: OrdersNeed, window: int) -> list[OrdersNeed]:
    """The other tiers whose cached reads hold all ``need`` (a tier) asks, the cheapest
    first: orders read for 5 serve a read of 3, orders with line items one without."""
    return [
        t
        for t in tiers(window)
        if t != need and t.first >= need.first and (t.line_items or not need.line_items)
    ]


def _firsts(window: int) -> list[int]:
    return sorted({*_TIERS, min(window, ORDERS_WINDOW)})


def data_name(need: OrdersNeed) -> str:
    """The cache's name for orders read to ``need`` (a tier)."""
    return f"orders.{need.first}" + (".lines" if need.line_items else "")


def identity(customer: CustomerProfile, source: str) -> str | None:
    return next((i.external_id for i in customer.identities if i.source == source), None)


def batch_orders(
    shop: BatchOrdersAdapter, need: OrdersNeed
) -> Callable[[Sequence[CustomerProfile]], Awaitable[list[tuple[Order, ...] | None]]]:
    """The fetch of a batch's orders to ``need`` (a tier): by the shop's id for a linked
    customer, by e-mail for the others, in as few calls as the shop's cost limit allows."""

    async def fetch(customers: Sequence[CustomerProfile]) -> list[tuple[Order, ...] | None]:
        # A customer linked to the shop is read by that id, never by e-mail: the address
        # may since belong to another shop customer (changed, recycled, shared), whose
        # orders would be this person's. Only an unlinked customer is found by e-mail.
        ids = {c.id: identity(c, shop.name) for c in customers}
        known = [i for i in ids.values() if i]
        emails = [c.email for c in customers if c.email and not ids[c.id]]
        first, lines = need.first, need.line_items
        by_email, by_id = await asyncio.gather(
            shop.fetch_orders_by_email(emails, first, lines) if emails else nothing_found(),
            shop.fetch_orders_by_ids(known, first, lines) if known else nothing_found(),
        )
        answers: list[tuple[Order, ...] | None] = []
        for c in customers:
            linked = ids[c.id]
            found = by_id.get(linked) if linked else by_email.get(c.email or "")
            answers.append(None if found is None else tuple(found))
        return answers

    return fetch


async def nothing_found() -> dict[str, Any]:
    """An empty batch read's answer, awaited beside the reads that run."""
    return {}


async def no_orders() -> list[Order]:
    return []


__all__ = [
    "EVERYTHING",
    "ORDERS_WINDOW",
    "OrdersNeed",
    "batch_orders",
    "data_name",
    "identity",
    "no_orders",
    "nothing_found",
    "tier",
    "tiers",
    "wider",
]

"""Fetching what the upstreams know about customers: per kind, batched, concurrent.

Each method takes a batch of customers (a DataLoader's keys) and answers one
``Outcome`` per customer, aligned with the keys. An upstream failure becomes an
outcome carrying the error, never an exception: the GraphQL layer turns it into an
error on that upstream's fields only, and everything else still answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar, cast

from adapters.errors import UpstreamError
from adapters.protocols import Adapter, AnalyticsAdapter, CommerceAdapter, CrmAdapter, Kind
from adapters.records import AnalyticsEvent, CommerceCustomer, CrmContact, Order
from gateway.customers import CustomerProfile

T = TypeVar("T")
ORDERS_WINDOW = 50  # orders fetched per customer; `orders(first)` slices this
EVENTS_WINDOW = 100  # recent events per customer for engagement, cart and activity: one page
KINDS: tuple[Kind, ...] = ("crm", "commerce", "analytics")


class SourceStatus(StrEnum):
    OK = "OK"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What one upstream answered for one customer, and how long it took."""

    upstream: str
    kind: Kind
    value: T | None
    error: UpstreamError | None
    latency_ms: float
    fetched_at: datetime

    @property
    def status(self) -> SourceStatus:
        return SourceStatus.FAILED if self.error else SourceStatus.OK

    def unwrap(self) -> T | None:
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True, slots=True)
class CommerceData:
    customer: CommerceCustomer | None
    orders: tuple[Order, ...]


@dataclass(frozen=True, slots=True)
class AnalyticsData:
    user_id: str | None
    events: tuple[AnalyticsEvent, ...]


class Federation:
    """The configured adapters, one per kind, and the batch reads the schema needs."""

    def __init__(self, adapters: Mapping[str, Adapter]) -> None:
        self.adapters = dict(adapters)
        by_kind: dict[str, Adapter] = {}
        for adapter in adapters.values():
            by_kind.setdefault(adapter.kind, adapter)  # the first enabled one of each kind
        self._by_kind = by_kind

    def adapter(self, kind: Kind) -> Adapter | None:
        return self._by_kind.get(kind)

    async def crm(self, customers: Sequence[CustomerProfile]) -> list[Outcome[CrmContact]]:
        crm = cast(CrmAdapter | None, self.adapter("crm"))
        if crm is None:
            return _nothing("crm", customers)

        async def fetch() -> list[CrmContact | None]:
            ids = {c.id: _identity(c, crm.name) for c in customers}
            emails = [c.email for c in customers if ids[c.id] is None and c.email]
            by_id, by_email = await asyncio.gather(
                crm.fetch_contacts([i for i in ids.values() if i]),
                crm.fetch_contacts_by_email(emails) if emails else _empty(),
            )
            return [by_id.get(ids[c.id] or "") or by_email.get(c.email or "") for c in customers]

        return await _timed(crm, customers, fetch)

    async def commerce(self, customers: Sequence[CustomerProfile]) -> list[Outcome[CommerceData]]:
        shop = cast(CommerceAdapter | None, self.adapter("commerce"))
        if shop is None:
            return _nothing("commerce", customers)

        async def orders_of(customer_id: str | None) -> Sequence[Order]:
            return await shop.fetch_orders(customer_id, ORDERS_WINDOW) if customer_id else []

        async def fetch() -> list[CommerceData | None]:
            emails = [c.email for c in customers if c.email]
            known = [_identity(c, shop.name) for c in customers]
            # Orders of customers whose shop id is already linked go out with the search,
            # not after it; the rest wait for the search to learn their id.
            found, early = await asyncio.gather(
                shop.find_customers_by_email(emails) if emails else _empty(),
                asyncio.gather(*(orders_of(i) for i in known)),
            )
            records = [found.get(c.email or "") for c in customers]
            late = await asyncio.gather(*(
                orders_of(r.external_id) if r and not i else _no_orders()
                for r, i in zip(records, known, strict=True)
            ))
            return [
                CommerceData(customer=r, orders=tuple(e or o)) if (r or e or o) else None
                for r, e, o in zip(records, early, late, strict=True)
            ]

        return await _timed(shop, customers, fetch)

    async def analytics(self, customers: Sequence[CustomerProfile]) -> list[Outcome[AnalyticsData]]:
        tool = cast(AnalyticsAdapter | None, self.adapter("analytics"))
        if tool is None:
            return _nothing("analytics", customers)

        async def one(customer: CustomerProfile) -> AnalyticsData | None:
            user_id = _identity(customer, tool.name)
            if user_id is None and customer.email:
                traits = await tool.fetch_traits(email=customer.email)
                user_id = traits.user_id if traits else None
            if user_id is None:
                return None
            events = await tool.fetch_events(user_id, EVENTS_WINDOW)
            return AnalyticsData(user_id=user_id, events=tuple(events))

        async def fetch() -> list[AnalyticsData | None]:
            # The Profiles API has no batch read: one call per customer, all at once.
            return list(await asyncio.gather(*(one(c) for c in customers)))

        return await _timed(tool, customers, fetch)


def _identity(customer: CustomerProfile, source: str) -> str | None:
    return next((i.external_id for i in customer.identities if i.source == source), None)


async def _empty() -> dict[str, Any]:
    return {}


async def _no_orders() -> list[Order]:
    return []


def _nothing(kind: Kind, customers: Sequence[CustomerProfile]) -> list[Outcome[T]]:
    now = datetime.now(UTC)
    return [Outcome("", kind, None, None, 0.0, now) for _ in customers]


async def _timed(
    adapter: Adapter,
    customers: Sequence[CustomerProfile],
    fetch: Callable[[], Awaitable[list[T | None]]],
) -> list[Outcome[T]]:
    started = time.perf_counter()
    fetched_at = datetime.now(UTC)
    values: list[T | None]
    error: UpstreamError | None = None
    try:
        values = await fetch()
    except UpstreamError as exc:
        values, error = [None] * len(customers), exc
    latency = (time.perf_counter() - started) * 1000
    return [Outcome(adapter.name, adapter.kind, v, error, latency, fetched_at) for v in values]

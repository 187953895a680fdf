"""Fetching what the upstreams know about customers: per kind, batched, concurrent.

Each method takes a batch of customers (a DataLoader's keys) and answers one
``Outcome`` per customer, aligned with the keys. An upstream failure becomes an
outcome carrying the error, never an exception: the GraphQL layer turns it into an
error on that upstream's fields only, and everything else still answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar, cast

from adapters.config import CachePolicy
from adapters.errors import InvalidExternalId, UpstreamError
from adapters.protocols import (
    Adapter,
    AnalyticsAdapter,
    BatchOrdersAdapter,
    CommerceAdapter,
    CrmAdapter,
    Kind,
)
from adapters.records import AnalyticsEvent, CommerceCustomer, CrmContact, Order
from gateway.observability import freshness, metrics
from gateway.observability.tracing import span
from gateway.profiles.customers import CustomerProfile
from gateway.upstreams import order_reads as reads
from gateway.upstreams.cache import Entry, UpstreamCache
from gateway.upstreams.order_reads import ORDERS_WINDOW, OrdersNeed, identity
from gateway.upstreams.outcome import Outcome as Outcome
from gateway.upstreams.outcome import SourceStatus as SourceStatus
from gateway.upstreams.single_flight import SingleFlight

T = TypeVar("T")
# What a batch fetch answers per customer: a value, nothing, or that customer's own error.
Fetched: TypeAlias = T | UpstreamError | None
EVENTS_WINDOW = 100  # recent events per customer for engagement, cart and activity: one page


@dataclass(frozen=True, slots=True)
class AnalyticsData:
    user_id: str | None
    events: tuple[AnalyticsEvent, ...]


class Federation:
    """The configured adapters, one per kind, and the batch reads the schema needs."""

    def __init__(
        self,
        adapters: Mapping[str, Adapter],
        cache: UpstreamCache,
        policies: Mapping[str, CachePolicy] | None = None,
    ) -> None:
        self.adapters = dict(adapters)
        self.cache = cache
        self._policies = dict(policies or {})
        # Per (namespace, customer): one fetch at a time, whoever asks.
        self._flights: SingleFlight[tuple[str, object], Outcome[Any]] = SingleFlight()
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

        async def fetch(customers: Sequence[CustomerProfile]) -> list[CrmContact | None]:
            ids = {c.id: identity(c, crm.name) for c in customers}
            emails = [c.email for c in customers if ids[c.id] is None and c.email]
            by_id, by_email = await asyncio.gather(
                crm.fetch_contacts([i for i in ids.values() if i]),
                crm.fetch_contacts_by_email(emails) if emails else reads.nothing_found(),
            )
            return [by_id.get(ids[c.id] or "") or by_email.get(c.email or "") for c in customers]

        return await self._load(crm, customers, fetch)

    async def commerce(
        self, customers: Sequence[CustomerProfile]
    ) -> list[Outcome[CommerceCustomer]]:
        """The shop's customer records (lifetime value, order count), found by email in
        batches of the shop's page size."""
        shop = cast(CommerceAdapter | None, self.adapter("commerce"))
        if shop is None:
            return _nothing("commerce", customers)

        async def fetch(customers: Sequence[CustomerProfile]) -> list[CommerceCustomer | None]:
            emails = [c.email for c in customers if c.email]
            found = await shop.find_customers_by_email(emails) if emails else {}
            return [found.get(c.email or "") for c in customers]

        return await self._load(shop, customers, fetch)

    async def orders(
        self, customers: Sequence[CustomerProfile], need: OrdersNeed = reads.EVERYTHING
    ) -> list[Outcome[tuple[Order, ...]]]:
        """Each customer's newest orders, at least what ``need`` asks: from a shop with a
        batch read, as many customers per call as its cost limit allows; else one call
        per customer at once (the whole window, with line items, whatever the need)."""
        shop = cast(CommerceAdapter | None, self.adapter("commerce"))
        if shop is None:
            return _nothing("commerce", customers)
        if isinstance(shop, BatchOrdersAdapter):
            read = reads.tier(need, shop.orders_window)
            fetch_batch = reads.batch_orders(shop, read)
            wider = [reads.data_name(t) for t in reads.wider(read, shop.orders_window)]
            return await self._load(shop, customers, fetch_batch, reads.data_name(read), wider)

        async def fetch(
            customers: Sequence[CustomerProfile],
        ) -> list[tuple[Order, ...] | InvalidExternalId | None]:
            ids = [identity(c, shop.name) for c in customers]
            unlinked = [c for c, i in zip(customers, ids, strict=True) if i is None]
            if unlinked:
                # Not linked yet: learn the shop's id from its (cached) customer record.
                found = dict(
                    zip([c.id for c in unlinked], await self.commerce(unlinked), strict=True)
                )
                ids = [
                    i or _external_id(found[c.id].unwrap())
                    for c, i in zip(customers, ids, strict=True)
                ]
            orders = await asyncio.gather(
                *(
                    _alone(shop.fetch_orders(i, ORDERS_WINDOW)) if i else reads.no_orders()
                    for i in ids
                )
            )
            return [o if isinstance(o, InvalidExternalId) else tuple(o) for o in orders]

        return await self._load(shop, customers, fetch, data="orders")

    async def analytics(self, customers: Sequence[CustomerProfile]) -> list[Outcome[AnalyticsData]]:
        tool = cast(AnalyticsAdapter | None, self.adapter("analytics"))
        if tool is None:
            return _nothing("analytics", customers)

        async def one(customer: CustomerProfile) -> AnalyticsData | None:
            user_id = identity(customer, tool.name)
            if user_id is None and customer.email:
                traits = await tool.fetch_traits(email=customer.email)
                user_id = traits.user_id if traits else None
            if user_id is None:
                return None
            events = await tool.fetch_events(user_id, EVENTS_WINDOW)
            return AnalyticsData(user_id=user_id, events=tuple(events))

        async def fetch(
            customers: Sequence[CustomerProfile],
        ) -> list[AnalyticsData | InvalidExternalId | None]:
            # The Profiles API has no batch read: one call per customer, all at once.
            return list(await asyncio.gather(*(_alone(one(c)) for c in customers)))

        return await self._load(tool, customers, fetch)

    def policy(self, upstream: str) -> CachePolicy:
        return self._policies.get(upstream, CachePolicy())

    def fresh_for(self, outcomes: Iterable[Outcome[Any]], now: datetime | None = None) -> int:
        """Whole seconds until the first of these answers is due for a refresh: what a
        client may cache a reply built on them for. 0 when one of them is stale or
        failed, and when there are none (stored data has no time to live)."""
        now = now or datetime.now(UTC)
        remaining = []
        for outcome in outcomes:
            if outcome.status in {SourceStatus.STALE, SourceStatus.FAILED}:
                return 0
            if outcome.status in {SourceStatus.OK, SourceStatus.CACHED}:
                remaining.append(self.policy(outcome.upstream).ttl_s - outcome.age_s(now))
        return max(0, int(min(remaining, default=0)))

    async def invalidate(self, customer_id: object, *, answers: bool = True) -> None:
        """Every cached upstream answer of the customer and (``answers``) the whole answers
        holding them, after a commit; ``answers=False`` when ``CachedCustomers.forget``
        follows (it drops those answers itself, after the profile)."""
        await self.invalidate_many([customer_id], answers=answers)

    async def invalidate_many(
        self,
        customer_ids: Iterable[object],
        kinds: Collection[str] | None = None,
        *,
        answers: bool = True,
    ) -> None:
        """``invalidate`` for many customers (only the upstreams of ``kinds`` if given)."""
        ids = list(customer_ids)
        await self.cache.invalidate_many(ids, self._namespaces(kinds))
        if answers:
            await self.cache.responses.invalidate_customers(ids)

    def _namespaces(self, kinds: Collection[str] | None = None) -> list[str]:
        return [
            _namespace(name, data)
            for name, adapter in self.adapters.items()
            if kinds is None or adapter.kind in kinds
            for data in _data_names(adapter)
        ]

    async def _load(
        self,
        adapter: Adapter,
        customers: Sequence[CustomerProfile],
        fetch: Callable[[Sequence[CustomerProfile]], Awaitable[Sequence[Fetched[T]]]],
        data: str = "",
        wider: Sequence[str] = (),
    ) -> list[Outcome[T]]:
        """Cache first (then the ``wider`` reads' entries, which hold what this one
        asks); fetch only the misses, once, however many ask at the same time; serve the
        last good answer as STALE when the upstream fails."""
        policy = self.policy(adapter.name)
        namespace = _namespace(adapter.name, data)
        now = datetime.now(UTC)
        with span("cache read", {"gateway.namespace": namespace, "gateway.keys": len(customers)}):
            entries = await self.cache.get_many(namespace, [c.id for c in customers])
        results: dict[object, Outcome[T]] = {}
        for customer in customers:
            entry = entries.get(customer.id)
            if entry is not None and entry.age_s(now) <= policy.ttl_s:
                results[customer.id] = _from_cache(adapter, entry)
        misses = [c for c in customers if c.id not in results]
        if misses and wider:
            spaces = [_namespace(adapter.name, w) for w in wider]
            held = await self.cache.get_across(spaces, [c.id for c in misses])
            for customer in misses:
                fresh = (e for e in held.get(customer.id, ()) if e.age_s(now) <= policy.ttl_s)
                if (entry := next(fresh, None)) is not None:
                    results[customer.id] = _from_cache(adapter, entry)
            misses = [c for c in misses if c.id not in results]
        if hits := len(customers) - len(misses):
            metrics.CACHE_LOOKUPS.labels(adapter.name, "hit").inc(hits)
        if misses:
            metrics.CACHE_LOOKUPS.labels(adapter.name, "miss").inc(len(misses))
        if misses:
            flown = await self._fly(adapter, namespace, misses, fetch, policy)
            for customer, outcome in zip(misses, flown, strict=True):
                stale = entries.get(customer.id)
                if outcome.error is not None and stale is not None:
                    outcome = _from_cache(adapter, stale, SourceStatus.STALE, outcome.error)
                    metrics.CACHE_LOOKUPS.labels(adapter.name, "stale").inc()
                results[customer.id] = outcome
        _served(adapter.name, results.values())
        return [results[c.id] for c in customers]

    async def _fly(
        self,
        adapter: Adapter,
        namespace: str,
        customers: Sequence[CustomerProfile],
        fetch: Callable[[Sequence[CustomerProfile]], Awaitable[Sequence[Fetched[T]]]],
        policy: CachePolicy,
    ) -> list[Outcome[T]]:
        """Single flight: join fetches already under way (here, or in another instance
        sharing Redis) and lead the rest."""
        by_key: dict[tuple[str, object], CustomerProfile] = {
            (namespace, c.id): c for c in customers
        }

        async def lead(keys: list[tuple[str, object]]) -> dict[tuple[str, object], Outcome[Any]]:
            led = [by_key[key] for key in keys]
            outcomes = await self._lead(adapter, namespace, led, fetch, policy)
            return dict(zip(keys, outcomes, strict=True))

        # An upstream's failure is an outcome, never None: every key gets its answer.
        flown = await self._flights.run(list(by_key), lead)
        return [flown[(namespace, c.id)] for c in customers]

    async def _lead(
        self,
        adapter: Adapter,
        namespace: str,
        customers: Sequence[CustomerProfile],
        fetch: Callable[[Sequence[CustomerProfile]], Awaitable[Sequence[Fetched[T]]]],
        policy: CachePolicy,
    ) -> list[Outcome[T]]:
        mine, theirs = await self.cache.claim(namespace, [c.id for c in customers])
        results: dict[object, Outcome[T]] = {}
        try:
            if theirs:
                # Another instance is fetching these: take its answer when it lands.
                for customer_id, entry in (
                    await self.cache.wait_for(namespace, theirs, policy.ttl_s)
                ).items():
                    results[customer_id] = _from_cache(adapter, entry)
            todo = [c for c in customers if c.id not in results]
            if todo:
                ttl = policy.stale_ttl_s
                ticket = await self.cache.ticket(ttl)  # before the fetch: see keep_fetched
                outcomes = await _timed(adapter, todo, lambda: fetch(todo))
                fresh = {
                    c.id: Entry(o.value, o.fetched_at)
                    for c, o in zip(todo, outcomes, strict=True)
                    if o.error is None
                }
                await self.cache.keep_fetched(namespace, fresh, ttl, ticket)
                results.update((c.id, o) for c, o in zip(todo, outcomes, strict=True))
        finally:
            await self.cache.release(namespace, mine)
        return [results[c.id] for c in customers]


# What the gateway caches per upstream kind; every entry of a customer is dropped together.
DATA_KINDS: dict[str, tuple[str, ...]] = {
    "crm": ("",),
    "commerce": ("", "orders"),
    "analytics": ("",),
}


def _data_names(adapter: Adapter) -> list[str]:
    names = list(DATA_KINDS[adapter.kind])
    if isinstance(adapter, BatchOrdersAdapter):  # its orders are cached per need
        names += [reads.data_name(need) for need in reads.tiers(adapter.orders_window)]
    return names


def _from_cache(
    adapter: Adapter,
    entry: Entry,
    status: SourceStatus = SourceStatus.CACHED,
    cause: UpstreamError | None = None,
) -> Outcome[Any]:
    return Outcome(
        adapter.name, adapter.kind, entry.value, None, 0.0, entry.fetched_at, status, cause
    )


def _served(upstream: str, outcomes: Iterable[Outcome[Any]]) -> None:
    newest = None
    for outcome in outcomes:  # a loop, not max(): this runs for every batch served
        if (outcome.error is None or outcome.status is SourceStatus.STALE) and (
            newest is None or outcome.fetched_at > newest
        ):
            newest = outcome.fetched_at
    if newest is not None:
        freshness.served(upstream, newest)


def _namespace(upstream: str, data: str) -> str:
    return f"{upstream}.{data}" if data else upstream


def _external_id(record: CommerceCustomer | None) -> str | None:
    return record.external_id if record else None


async def _alone(call: Awaitable[T]) -> T | InvalidExternalId:
    """One customer's call, whose refused id fails that customer only: the id is theirs
    (stored before ids were checked), not a failure of the upstream for the batch."""
    try:
        return await call
    except InvalidExternalId as exc:
        return exc


def _nothing(kind: Kind, customers: Sequence[CustomerProfile]) -> list[Outcome[T]]:
    now = datetime.now(UTC)
    return [Outcome("", kind, None, None, 0.0, now) for _ in customers]


async def _timed(
    adapter: Adapter,
    customers: Sequence[CustomerProfile],
    fetch: Callable[[], Awaitable[Sequence[Fetched[T]]]],
) -> list[Outcome[T]]:
    started = time.perf_counter()
    fetched_at = datetime.now(UTC)
    values: Sequence[Fetched[T]]
    error: UpstreamError | None = None
    try:
        values = await fetch()
    except UpstreamError as exc:
        values, error = [None] * len(customers), exc
    latency = (time.perf_counter() - started) * 1000
    metrics.UPSTREAM_SECONDS.labels(adapter.name).observe(latency / 1000)
    errors = [error] if error is not None else [v for v in values if isinstance(v, UpstreamError)]
    for failure in errors:
        metrics.UPSTREAM_ERRORS.labels(adapter.name, failure.code).inc()
    metrics.record_circuit(adapter.name, adapter.breaker.state)
    if error is None:
        freshness.fetched(adapter.name)
    outcomes: list[Outcome[T]] = []
    for value in values:
        failed = value if isinstance(value, UpstreamError) else error
        status = SourceStatus.FAILED if failed else SourceStatus.OK
        kept = None if isinstance(value, UpstreamError) else value
        outcomes.append(
            Outcome(adapter.name, adapter.kind, kept, failed, latency, fetched_at, status)
        )
    return outcomes

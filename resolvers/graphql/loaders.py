"""Per-request DataLoaders, one per upstream kind, keyed by unified customer.

A loader batches the customers a request asks for within one tick and caches its
answer for the rest of the request, so every field of one upstream shares a single
fetch, and a batch of customers shares one call per page of the upstream. A batch of
more than ``SLICE`` customers is read in slices started one per turn of the event loop:
reading 1,000 customers' cached answers at once held the loop for 30 ms or more.

The behavioural fields (``recent_events``, ``engagement``, ``cart``) each have a loader
of their own: the analytics upstream's, shared by all three, unless the configuration
serves that field from the store, where one query reads it for the whole batch.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from adapters.records import CommerceCustomer, CrmContact, Order
from gateway.observability.tracing import span
from gateway.profiles.customers import CustomerProfile
from gateway.upstreams.behaviour import NO_EMAIL_ENGAGEMENT, EmailEngagement, Engagement
from gateway.upstreams.federation import AnalyticsData, Federation, Outcome
from gateway.upstreams.order_reads import EVERYTHING, OrdersNeed
from gateway.upstreams.stored_behaviour import StoredBehaviour

T = TypeVar("T")
V = TypeVar("V")
K = TypeVar("K")
SLICE = 200  # a multiple of the upstreams' pages (HubSpot 100, Shopify 50): no more calls
BEHAVIOUR = frozenset({"recent_events", "engagement", "cart"})


def _key(customer: CustomerProfile) -> object:
    return customer.id


async def _none_counted(
    customers: Sequence[CustomerProfile],
) -> list[Outcome[EmailEngagement]]:
    now = datetime.now(UTC)
    return [Outcome("store", "analytics", NO_EMAIL_ENGAGEMENT, None, 0.0, now) for _ in customers]


def _sliced(
    load: Callable[[Sequence[CustomerProfile]], Awaitable[list[V]]],
) -> Callable[[Sequence[CustomerProfile]], Awaitable[list[V]]]:
    async def load_in_slices(customers: Sequence[CustomerProfile]) -> list[V]:
        if len(customers) <= SLICE:
            return await load(customers)
        parts = []
        for start in range(0, len(customers), SLICE):
            parts.append(asyncio.ensure_future(load(customers[start : start + SLICE])))
            await asyncio.sleep(0)  # the next slice starts in another turn of the loop
        return [outcome for part in await asyncio.gather(*parts) for outcome in part]

    return load_in_slices


async def answered(pending: Sequence[Awaitable[V]]) -> list[V]:
    """What loads asked all at once answer, in order. Every load is asked first (each
    loader batches what one turn of the loop asks); once a batch is answered all its
    futures are done, and awaiting a done future costs nothing, where ``gather`` cost
    two callbacks through the loop per load (4,000 for a send's behaviour)."""
    try:
        return [await outcome for outcome in pending]
    except BaseException:
        # As ``gather`` would: the others' errors are retrieved, never left unobserved.
        settling = asyncio.gather(*pending, return_exceptions=True)
        _SETTLING.add(settling)
        settling.add_done_callback(_SETTLING.discard)
        raise


_SETTLING: set[asyncio.Future[list[Any]]] = set()  # the loop holds tasks weakly


class Loaders:
    """Made per request and built on first use: most requests ask one or two upstreams,
    and a loader made but not used is work thrown away with the request."""

    def __init__(self, federation: Federation, stored: StoredBehaviour | None = None) -> None:
        self._federation = federation
        self._stored = stored
        # Every upstream answer this request used, for how long the reply stays fresh.
        self.answered: list[Outcome[Any]] = []

    def _recorded(
        self, name: str, fetch: Callable[[Sequence[K]], Awaitable[list[Outcome[T]]]]
    ) -> Callable[[Sequence[K]], Awaitable[list[Outcome[T]]]]:
        answered = self.answered  # not self: the loader would hold the Loaders, a cycle

        async def load(customers: Sequence[K]) -> list[Outcome[T]]:
            # One span per batch: the upstream calls it makes are its children.
            with span(f"loader {name}", {"gateway.keys": len(customers)}):
                outcomes = await fetch(customers)
            answered.extend(outcomes)
            return outcomes

        return load

    @cached_property
    def crm(self) -> DataLoader[CustomerProfile, Outcome[CrmContact]]:
        return DataLoader(self._recorded("crm", _sliced(self._federation.crm)), cache_key_fn=_key)

    @cached_property
    def commerce(self) -> DataLoader[CustomerProfile, Outcome[CommerceCustomer]]:
        load = self._recorded("commerce", _sliced(self._federation.commerce))
        return DataLoader(load, cache_key_fn=_key)

    @cached_property
    def orders(self) -> DataLoader[tuple[CustomerProfile, OrdersNeed], Outcome[tuple[Order, ...]]]:
        """Keyed by (customer, what the selection reads of their orders): a shop that
        prices its queries is asked for that, per need, never a cut-down window."""
        federation = self._federation

        async def load(
            keys: Sequence[tuple[CustomerProfile, OrdersNeed]],
        ) -> list[Outcome[tuple[Order, ...]]]:
            by_need: dict[OrdersNeed, list[CustomerProfile]] = {}
            for customer, need in keys:
                by_need.setdefault(need, []).append(customer)
            found: dict[tuple[object, OrdersNeed], Outcome[tuple[Order, ...]]] = {}
            for need, customers in by_need.items():  # one per selection
                outcomes = await _sliced(partial(federation.orders, need=need))(customers)
                found.update(((c.id, need), o) for c, o in zip(customers, outcomes, strict=True))
            return [found[(customer.id, need)] for customer, need in keys]

        return DataLoader(
            self._recorded("orders", load), cache_key_fn=lambda key: (key[0].id, key[1])
        )

    @cached_property
    def analytics(self) -> DataLoader[CustomerProfile, Outcome[AnalyticsData]]:
        load = self._recorded("analytics", _sliced(self._federation.analytics))
        return DataLoader(load, cache_key_fn=_key)

    # Stored data has no time to live: what the store answers is not ``answered``.
    @cached_property
    def stored_events(
        self,
    ) -> DataLoader[tuple[CustomerProfile, int, bool], Outcome[AnalyticsData]]:
        """Keyed by (customer, how many newest events the selection reads, whether it
        reads their properties)."""
        stored = self._stored
        assert stored is not None

        async def load(
            keys: Sequence[tuple[CustomerProfile, int, bool]],
        ) -> list[Outcome[AnalyticsData]]:
            by_read: dict[tuple[int, bool], list[CustomerProfile]] = {}
            for customer, depth, detailed in keys:
                by_read.setdefault((depth, detailed), []).append(customer)
            found: dict[tuple[object, int, bool], Outcome[AnalyticsData]] = {}
            for (depth, detailed), customers in by_read.items():  # one per selection
                outcomes = await stored.recent_events(customers, depth, detailed)
                found.update(
                    ((c.id, depth, detailed), o) for c, o in zip(customers, outcomes, strict=True)
                )
            return [found[(customer.id, depth, detailed)] for customer, depth, detailed in keys]

        return DataLoader(load, cache_key_fn=lambda key: (key[0].id, key[1], key[2]))

    @cached_property
    def stored_engagement(self) -> DataLoader[CustomerProfile, Outcome[Engagement]]:
        assert self._stored is not None
        return DataLoader(self._stored.engagement, cache_key_fn=_key)

    @cached_property
    def email_engagement(self) -> DataLoader[CustomerProfile, Outcome[EmailEngagement]]:
        """Email opens and clicks: only the store has them, whatever serves the rest."""
        stored = self._stored
        if stored is None:  # a gateway without a store of behaviour: nothing counted
            return DataLoader(_none_counted, cache_key_fn=_key)
        return DataLoader(stored.email_engagement, cache_key_fn=_key)

    @cached_property
    def stored_cart(self) -> DataLoader[CustomerProfile, Outcome[AnalyticsData]]:
        assert self._stored is not None
        return DataLoader(self._stored.cart, cache_key_fn=_key)

    def load(
        self,
        name: str,
        customer: CustomerProfile,
        depth: int = 0,
        detailed: bool = True,
        orders: OrdersNeed = EVERYTHING,
    ) -> Awaitable[Outcome[Any]]:
        """What loader ``name`` answers for ``customer``: a behavioural field from the
        store when configured so (``depth``: the newest events its selection reads;
        ``detailed``: with their properties), else from the analytics upstream; any
        other name is its upstream's loader (``orders``: what the selection reads of
        them)."""
        if name in BEHAVIOUR:
            if self._stored is None or not self._stored.serves(name):
                return self.analytics.load(customer)
            if name == "recent_events":
                return self.stored_events.load((customer, depth, detailed))
            return self.named(f"stored_{name}").load(customer)
        if name == "orders":
            return self.orders.load((customer, orders))
        return self.named(name).load(customer)

    def fresh_for(self) -> int:
        """Whole seconds the upstream data this request used stays fresh."""
        return self._federation.fresh_for(self.answered)

    def named(self, name: str) -> DataLoader[CustomerProfile, Outcome[object]]:
        loader: DataLoader[CustomerProfile, Outcome[object]] = getattr(self, name)
        return loader


# Loaders other modules define (identity provenance, scores, template recommendations),
# kept per request by the request's own Loaders object, so they live exactly as long as
# the request does without the context or this module having to know about them.
_OWN: weakref.WeakKeyDictionary[Loaders, dict[object, Any]] = weakref.WeakKeyDictionary()


def per_request(loaders: Loaders, key: object, make: Callable[[], T]) -> T:
    """The request's instance of what ``make`` builds (made on first use), under ``key``
    (the defining module's own token)."""
    own = _OWN.setdefault(loaders, {})
    if key not in own:
        own[key] = make()
    made: T = own[key]
    return made

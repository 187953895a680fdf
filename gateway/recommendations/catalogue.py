"""Products and stock from the commerce upstream, cached for serving recommendations.

Product records change rarely and are cached like any upstream answer (the shop's
cache policy); stock changes with every sale, so it is cached for a short time
(``GATEWAY_RECS_STOCK_TTL_S``) and can be dropped at once (``invalidate_stock``, e.g.
from an ``inventory_levels/update`` webhook or an operator). Entries are kept past
their freshness and served when the shop fails, as the federation does.

Product records are also kept in the process, in a plain dictionary: nothing
invalidates them before their time-to-live, so a local copy aged from the same fetch
answers exactly as the cache would, without a Redis round trip and an unpickling of
each record per request, or (in memory) aiocache's per-call wrappers. Stock, which is
invalidated, is always read from the cache.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from adapters.errors import UpstreamError
from adapters.protocols import CommerceAdapter
from adapters.records import Product
from gateway.upstreams.cache import Entry, UpstreamCache
from gateway.upstreams.federation import Federation
from gateway.upstreams.single_flight import SingleFlight

_LOCAL_MAX = 10_000  # product records kept in the process, beyond which it starts afresh


class ProductCatalogue:
    def __init__(self, federation: Federation, *, stock_ttl_s: float) -> None:
        self._federation = federation
        self._stock_ttl_s = stock_ttl_s
        self._known: set[str] = set()  # product ids whose stock this process cached
        self._local_products: dict[str, Entry] = {}
        # Stock expires for everyone at once: one shop call per product, not per request.
        self._flights: defaultdict[str, SingleFlight[str, Any]] = defaultdict(SingleFlight)

    @property
    def _shop(self) -> CommerceAdapter | None:
        return cast(CommerceAdapter | None, self._federation.adapter("commerce"))

    @property
    def _cache(self) -> UpstreamCache:
        return self._federation.cache

    async def products(self, ids: Sequence[str]) -> dict[str, Product]:
        """The shop's product records for these ids; unknown ids are absent."""
        shop = self._shop
        if shop is None or not ids:
            return {}
        policy = self._federation.policy(shop.name)

        async def fetch(missing: Sequence[str]) -> dict[str, Any]:
            return {p.external_id: p for p in await shop.fetch_products(list(missing))}

        found = await self._cached(
            f"{shop.name}.products",
            ids,
            policy.ttl_s,
            fetch,
            local=self._local_products,
        )
        return {k: v for k, v in found.items() if isinstance(v, Product)}

    async def stock(self, products: Iterable[Product]) -> dict[str, int]:
        """Units available over all locations, per product id (absent: unknown)."""
        shop = self._shop
        wanted = {
            p.external_id: p.inventory_item_id for p in products if p.inventory_item_id is not None
        }
        if shop is None or not wanted:
            return {}

        async def fetch(missing: Sequence[str]) -> dict[str, Any]:
            levels = await shop.fetch_inventory([wanted[i] for i in missing])
            return {
                product_id: sum(level.available or 0 for level in levels[item_id])
                for product_id, item_id in wanted.items()
                if product_id in missing and item_id in levels
            }

        self._known.update(wanted)
        found = await self._cached(f"{shop.name}.inventory", list(wanted), self._stock_ttl_s, fetch)
        return {k: int(v) for k, v in found.items() if isinstance(v, int)}

    async def invalidate_stock(self, product_ids: Iterable[str] | None = None) -> None:
        """Forget the cached stock of these products (default: every one this process
        cached); the next request asks the shop. With Redis, every instance sees it."""
        shop = self._shop
        if shop is None:
            return
        ids = set(product_ids) if product_ids is not None else set(self._known)
        namespace = f"{shop.name}.inventory"
        for product_id in ids:
            await self._cache.invalidate(product_id, [namespace])

    async def _cached(
        self,
        namespace: str,
        ids: Sequence[str],
        ttl_s: float,
        fetch: Callable[[Sequence[str]], Awaitable[Mapping[str, Any]]],
        local: dict[str, Entry] | None = None,
    ) -> dict[str, Any]:
        """Fresh entries from the cache (``local`` first, if given), the rest from
        ``fetch`` (stored for next time); when the shop fails, what the cache still
        holds, or the shop's error."""
        shop = cast(CommerceAdapter, self._shop)
        now = datetime.now(UTC)
        entries: dict[str, Entry] = {}
        if local is not None:
            entries = {i: e for i in ids if (e := local.get(i)) and e.age_s(now) <= ttl_s}
        wanted = [i for i in ids if i not in entries]
        if wanted:
            shared = await self._cache.get_many(namespace, wanted)
            entries.update((str(i), e) for i, e in shared.items())
            if local is not None:
                if len(local) + len(shared) > _LOCAL_MAX:
                    local.clear()
                local.update((str(i), e) for i, e in shared.items())
        found = {i: e.value for i, e in entries.items() if e.age_s(now) <= ttl_s}
        missing = [i for i in dict.fromkeys(ids) if i not in found]
        if not missing:
            return found
        policy = self._federation.policy(shop.name)

        async def fetch_and_keep(wanted: list[str]) -> Mapping[str, Any]:
            fresh = await fetch(wanted)
            if local is not None:
                local.update((i, Entry(v, now)) for i, v in fresh.items())
            await self._cache.set_many(
                namespace,
                {i: Entry(v, now) for i, v in fresh.items()},
                max(policy.stale_ttl_s, ttl_s),
            )
            return fresh

        try:
            fresh = await self._flights[namespace].run(missing, fetch_and_keep)
        except UpstreamError:
            if not entries:
                raise
            return {i: e.value for i, e in entries.items()}
        return {**found, **fresh}

"""Per-key rate limits, shared by every instance when the cache is Redis.

A sliding window counter (the ``limits`` library's): each key's count in the current
minute plus the previous minute's count weighted by how much of it still overlaps
the last 60 seconds. Unlike a fixed window it allows no burst of twice the limit
around a minute's edge, and unlike a log of every hit it keeps two counters per key
whatever the limit. In Redis both counters move in one Lua script, so instances
sharing the cache share the limit; ``memory://`` keeps it per process.

Requests are counted in leases: an instance takes several of a key's requests from
the counter at once and spends them locally for up to a second, so a busy key costs
one Redis round trip per lease instead of one per request. A lease is counted when
taken, so the limit is never exceeded; when a lease no longer fits, requests are
counted one by one up to the limit. A lease's size follows the key's pace on this
instance: it doubles when spent within its second (up to 1 % of the limit) and falls
to what was used when it expires, so the tokens lost unspent are at most the drop in
pace from one second to the next, on each instance. Limits under 200 a minute are
counted request by request (exact).

A request may count as several (``cost``: a GraphQL operation counts by its query
cost): it is spent from the lease when the lease has that many left, and otherwise
counted on its own, in one round trip, as are requests larger than a lease may be.

If Redis cannot be reached, requests are let through (and logged): an outage of
the shared counter must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from starlette.responses import Response

from gateway.metrics import RATE_LIMITED

logger = logging.getLogger("gateway.rate_limit")

_KEY_PREFIX = "gateway:ratelimit"
_SOONEST_RETRY_S = 0.001  # a refusal never says "retry in 0 s"
_LEASE_SHARE = 100  # a lease is at most 1/100 of the per-minute limit
_LEASE_S = 1.0  # unspent lease tokens expire after this long


@dataclass(slots=True)
class _Lease:
    size: int
    left: int
    expires: float  # on the monotonic clock


class RateLimiter:
    """``acquire`` one request for a key against its per-minute limit."""

    def __init__(self, cache_url: str) -> None:
        self._pool: aioredis.ConnectionPool | None = None
        self._storage: MemoryStorage | RedisStorage
        if cache_url.startswith(("redis://", "rediss://")):
            # Our own pool, on the redis package the cache already uses, so aclose()
            # can release it (limits' storage has no close of its own).
            self._pool = aioredis.ConnectionPool.from_url(cache_url)
            self._storage = RedisStorage(
                f"async+{cache_url}",
                implementation="redispy",
                key_prefix=_KEY_PREFIX,
                wrap_exceptions=True,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        else:
            self._storage = MemoryStorage()
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self._items: dict[int, RateLimitItem] = {}
        self._leases: dict[str, _Lease] = {}  # key -> this instance's current lease
        self._no_lease_until: dict[str, float] = {}  # key -> when a lease may fit again
        self._leasing: dict[str, asyncio.Future[None]] = {}  # key -> lease being counted
        self._failing = False

    async def acquire(
        self, key: str, per_minute: int, *, cost: int = 1, name: str | None = None
    ) -> float | None:
        """None if ``cost`` more requests may go ahead; else the seconds until the key
        may retry.

        ``name`` labels the refusal in ``gateway_rate_limited_total`` (default: ``key``).
        """
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute)
        most = per_minute // _LEASE_SHARE
        if most <= 1 or cost > most:
            return await self._count(item, key, name, cost)
        while True:
            now = time.monotonic()
            lease = self._leases.get(key)
            if lease is not None and lease.left >= cost and lease.expires > now:
                lease.left -= cost
                return None
            if self._no_lease_until.get(key, 0.0) > now:
                break  # none fits: count one by one, concurrently, without queueing
            leasing = self._leasing.get(key)
            if leasing is None:
                leasing = self._leasing[key] = asyncio.get_running_loop().create_future()
                try:
                    size = max(cost, self._next_size(lease, most, now, cost))
                    if await self._take_lease(item, key, size, cost):
                        return None
                finally:
                    del self._leasing[key]
                    leasing.set_result(None)
                break
            # One lease at a time per key: 32 requests finding it spent at once must
            # not take 32 leases. Then try again, from the new lease if there is one.
            await asyncio.shield(leasing)
        return await self._count(item, key, name, cost)

    @staticmethod
    def _next_size(lease: _Lease | None, most: int, now: float, cost: int) -> int:
        if lease is None:
            return 1
        used = lease.size - lease.left
        if lease.left < cost and lease.expires > now:
            return min(most, lease.size * 2)  # spent within its second: the pace is up
        return max(1, min(most, used))

    async def _take_lease(self, item: RateLimitItem, key: str, size: int, cost: int) -> bool:
        """Count ``size`` requests (this one's ``cost`` included) at once; False if they
        do not fit."""
        now = time.monotonic()
        try:
            taken = await self._strategy.hit(item, key, cost=size)
        except StorageError as exc:
            self._failed(exc)
            taken = True  # let requests through without asking the store each time
        else:
            self._recovered()
        if taken:
            # Tokens left in the lease this one replaces were counted: keep them.
            old = self._leases.get(key)
            carry = old.left if old is not None and old.expires > now else 0
            self._leases[key] = _Lease(size, size - cost + carry, now + _LEASE_S)
            self._no_lease_until.pop(key, None)
        else:
            self._leases.pop(key, None)
            self._no_lease_until[key] = now + _LEASE_S
        return taken

    async def _count(
        self, item: RateLimitItem, key: str, name: str | None, cost: int
    ) -> float | None:
        """Count this request alone; None if it may go ahead, else seconds to a retry."""
        try:
            if await self._strategy.hit(item, key, cost=cost):
                self._recovered()
                return None
            stats = await self._strategy.get_window_stats(item, key)
        except StorageError as exc:
            self._failed(exc)
            return None
        RATE_LIMITED.labels(name or key).inc()
        return max(stats.reset_time - time.time(), _SOONEST_RETRY_S)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        elif isinstance(self._storage, MemoryStorage) and self._storage.timer is not None:
            self._storage.timer.cancel()  # its expiry sweep, if one is pending

    def _failed(self, exc: StorageError) -> None:
        if not self._failing:  # once per outage, not once per request
            logger.warning("rate limit store unavailable; requests are not limited: %s", exc)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            logger.info("rate limit store available again")
        self._failing = False


def retry_after_seconds(retry_after: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least 1."""
    return max(1, math.ceil(retry_after))


def rate_limited_response(retry_after: float) -> Response:
    """The 429 answer to a request over its key's limit, as a GraphQL-style JSON error."""
    seconds = retry_after_seconds(retry_after)
    error = {
        "message": f"Rate limit exceeded; retry in {seconds} s",
        "extensions": {"code": "RATE_LIMITED", "retryAfter": seconds},
    }
    return Response(
        orjson.dumps({"errors": [error]}),
        status_code=429,
        media_type="application/json",
        headers={"Retry-After": str(seconds)},
    )

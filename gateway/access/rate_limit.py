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

If Redis cannot be reached (or its circuit is open), requests are counted in this
process instead (per worker, each with the whole limit), and logged once per
interval: an outage of the shared counter must neither take the API down nor lift
the limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.util import WindowStats

from gateway.observability.metrics import RATE_LIMITED
from gateway.upstreams.redis_client import RedisGuard, open_client

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

    def __init__(self, redis: RedisGuard | str | None = None) -> None:
        """On the process's Redis (its guard), or in process (None, ``memory://``); a
        ``redis://`` URL opens a client of the limiter's own (tests, tools)."""
        self._owned: RedisGuard | None = None
        if isinstance(redis, str):
            if redis.startswith(("redis://", "rediss://")):
                client = open_client(redis, timeout_s=0.25, retries=2, health_check_interval_s=5)
                redis = self._owned = RedisGuard(client, timeout_s=0.5)
            else:
                redis = None
        self._guard = redis
        # Counts in this process: the only ones without Redis, the fallback with it.
        self._memory = MemoryStorage()
        self._local = SlidingWindowCounterRateLimiter(self._memory)
        self._shared: SlidingWindowCounterRateLimiter | None = None
        if redis is not None:
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=_KEY_PREFIX,
                connection_pool=redis.client.connection_pool,  # type: ignore[arg-type]
            )
            self._shared = SlidingWindowCounterRateLimiter(storage)
        self._items: dict[int, RateLimitItem] = {}
        self._leases: dict[str, _Lease] = {}  # key -> this instance's current lease
        self._no_lease_until: dict[str, float] = {}  # key -> when a lease may fit again
        self._leasing: dict[str, asyncio.Future[None]] = {}  # key -> lease being counted

    async def _hit(self, item: RateLimitItem, key: str, cost: int) -> bool:
        """Count ``cost`` requests: in Redis, or in this process while it is unavailable."""
        if self._guard is not None and self._shared is not None:
            shared = self._shared
            taken: bool | None = await self._guard.call(
                "rate_limit", lambda: shared.hit(item, key, cost=cost), None
            )
            if taken is not None:
                return taken
        return await self._local.hit(item, key, cost=cost)

    async def _stats(self, item: RateLimitItem, key: str) -> WindowStats:
        if self._guard is not None and self._shared is not None:
            shared = self._shared
            stats: Any = await self._guard.call(
                "rate_limit", lambda: shared.get_window_stats(item, key), None
            )
            if stats is not None:
                return stats  # type: ignore[no-any-return]
        return await self._local.get_window_stats(item, key)

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
        taken = await self._hit(item, key, size)
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
        if await self._hit(item, key, cost):
            return None
        stats = await self._stats(item, key)
        RATE_LIMITED.labels(name or key).inc()
        return max(stats.reset_time - time.time(), _SOONEST_RETRY_S)

    async def aclose(self) -> None:
        if self._owned is not None:
            await self._owned.aclose()
        if self._memory.timer is not None:
            self._memory.timer.cancel()  # its expiry sweep, if one is pending


def retry_after_seconds(retry_after: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least 1."""
    return max(1, math.ceil(retry_after))

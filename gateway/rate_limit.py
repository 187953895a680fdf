"""Per-key rate limits, shared by every instance when the cache is Redis.

A sliding window counter (the ``limits`` library's): each key's count in the current
minute plus the previous minute's count weighted by how much of it still overlaps
the last 60 seconds. Unlike a fixed window it allows no burst of twice the limit
around a minute's edge, and unlike a log of every hit it keeps two counters per key
whatever the limit. In Redis both counters move in one Lua script, so instances
sharing the cache share the limit; ``memory://`` keeps it per process.

Requests are counted in leases: an instance takes ~1 % of a key's per-minute limit
from the counter at once and spends it locally for up to a second, so a busy key costs
one Redis round trip per lease instead of one per request. A lease is counted when
taken, so the limit is never exceeded; when a full lease no longer fits, single
requests are counted one by one up to the limit. Tokens a lease leaves unspent are
lost, but only while the key uses under ~60 % of its limit, so they never cause a
refusal. Limits under 200 a minute lease one request at a time (exact).

If Redis cannot be reached, requests are let through (and logged): an outage of
the shared counter must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

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
_LEASE_SHARE = 100  # a lease is 1/100 of the per-minute limit
_LEASE_S = 1.0  # unspent lease tokens expire after this long


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
        # key -> (tokens left in its lease, when the lease expires on the monotonic clock)
        self._leases: dict[str, tuple[int, float]] = {}
        self._leasing: dict[str, asyncio.Future[None]] = {}  # key -> lease being counted
        self._failing = False

    async def acquire(self, key: str, per_minute: int, *, name: str | None = None) -> float | None:
        """None if the request may go ahead; else the seconds until the key may retry.

        ``name`` labels the refusal in ``gateway_rate_limited_total`` (default: ``key``).
        """
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute)
        lease = per_minute // _LEASE_SHARE
        if lease <= 1:
            return await self._count(item, key, 1, name)
        while True:
            left, expires = self._leases.get(key, (0, 0.0))
            if left > 0 and expires > time.monotonic():
                self._leases[key] = (left - 1, expires)
                return None
            leasing = self._leasing.get(key)
            if leasing is None:
                break
            # One lease at a time per key: 32 requests finding it spent at once must
            # not take 32 leases. Then try again, from the new lease if there is one.
            await asyncio.shield(leasing)
        leasing = self._leasing[key] = asyncio.get_running_loop().create_future()
        try:
            return await self._count(item, key, lease, name)
        finally:
            del self._leasing[key]
            leasing.set_result(None)

    async def _count(
        self, item: RateLimitItem, key: str, lease: int, name: str | None
    ) -> float | None:
        """Count a lease of ``lease`` requests (this one included), or failing that this
        request alone; None if it may go ahead, else the seconds until a retry."""
        try:
            if lease > 1 and await self._strategy.hit(item, key, cost=lease):
                self._leases[key] = (lease - 1, time.monotonic() + _LEASE_S)
                self._recovered()
                return None
            if await self._strategy.hit(item, key):
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

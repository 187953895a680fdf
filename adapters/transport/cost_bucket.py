"""A model of a cost-limited upstream's leaky bucket (Shopify GraphQL), kept on our side.

Before a query is sent, its planned cost is taken from the bucket; when the bucket
does not hold it, the caller waits for the points to restore instead of being answered
``THROTTLED``. Reservations queue in order: a take may push the level below zero and
waits until the restore rate has paid the debt back, so concurrent callers are served
first come, first served without a lock held across the wait. A wait that does not fit
the caller's budget takes nothing and raises ``UpstreamRateLimited`` at once.

After each answer the model is corrected by what the upstream reported
(``throttleStatus``): its size and restore rate are learnt, the unused part of the
reservation is refunded, and the level is never above what the upstream says is left.

With the gateway's guarded Redis (its timeout, circuit breaker and throttled warnings,
``gateway/upstreams/redis_client.py``) the level lives in Redis (one hash per upstream,
updated by Lua scripts on Redis's own clock), so every instance of the gateway draws from one bucket
as the upstream does. When Redis fails, the bucket falls back to the local model: an
outage degrades to per-instance pacing, never to failed calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from adapters.errors import UpstreamRateLimited

T = TypeVar("T")


class GuardedRedis(Protocol):
    """Redis behind the gateway's guard: ``call`` answers ``default`` when Redis is down,
    slow or its circuit open, so an outage costs one timeout, not one per query."""

    @property
    def client(self) -> Any: ...

    async def call(self, what: str, op: Callable[[], Awaitable[T]], default: T) -> T: ...


__all__ = ["CostBucket", "ThrottleStatus"]


# KEYS: the bucket's hash, its flying queries (token -> lease end) and their costs.
# Leases that ended are dropped first: their calls are over, whatever became of their
# instance. Shared by both scripts: sets ``now``, ``flying`` (points in flight) and
# ``level`` and ``at`` as stored.
_PREAMBLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local top, rate = tonumber(ARGV[2]), tonumber(ARGV[3])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('HDEL', KEYS[3], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local flying = 0
for _, c in ipairs(redis.call('HVALS', KEYS[3])) do flying = flying + tonumber(c) end
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or top)
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or now)
"""
# ARGV: cost, maximum, restore rate, budget (s), ttl (s), margin (points that must
# remain beyond the cost), token, lease (s). Answers the wait in seconds as a string;
# negative: refused (the wait did not fit).
_TAKE = (
    _PREAMBLE
    + """
level = math.min(top - flying, level + math.max(0, now - at) * rate)
local cost = tonumber(ARGV[1])
local wait = 0
local margin = tonumber(ARGV[6])
if level < cost + margin then wait = (cost + margin - level) / rate end
if wait > tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return tostring(-wait - 0.000001)
end
redis.call('HSET', KEYS[1], 'level', tostring(level - cost), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], ARGV[5])
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[8]), ARGV[7])
  redis.call('HSET', KEYS[3], ARGV[7], tostring(cost))
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return tostring(wait)
"""
)
# ARGV: refund, maximum, rate, the upstream's reported level (or -1 for none), ttl,
# the token of the query answered ('' for none).
_SETTLE = (
    _PREAMBLE
    + """
if ARGV[6] ~= '' then
  flying = flying - tonumber(redis.call('HGET', KEYS[3], ARGV[6]) or 0)
  redis.call('HDEL', KEYS[3], ARGV[6])
  redis.call('ZREM', KEYS[2], ARGV[6])
end
level = math.min(top - flying, level + math.max(0, now - at) * rate + tonumber(ARGV[1]))
local reported = tonumber(ARGV[4])
if reported >= 0 then level = math.min(level, reported) end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return tostring(level)
"""
)
_TTL_S = 3600
# A flying query's lease beyond its budget: past it, the query is over either way.
_LEASE_S = 5.0
# A query is sent when the model says the bucket holds its cost and this much restore
# more: the model and the upstream's bucket drift apart by rounding and by when each
# charges. The model charges a query when it is reserved, the shop when it arrives; a
# query delayed between the two (a busy event loop) lets the model count restore the
# shop's full bucket wasted, and at 0.05 s a loaded send met THROTTLED about once in 40
# queries. The margin costs no throughput: once paced, every query waits for cost and
# margin alike, and the margin only stays in the bucket as slack.
_MARGIN_S = 0.25


@dataclass(frozen=True, slots=True)
class ThrottleStatus:
    """What the upstream says of its bucket after a call."""

    maximum: float
    available: float
    restore_rate: float


class CostBucket:
    """The points this gateway may still spend on one upstream, and the waits for more."""

    def __init__(
        self,
        upstream: str,
        maximum: float,
        restore_rate: float,
        *,
        redis: GuardedRedis | None = None,
        key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.maximum = maximum
        self.restore_rate = restore_rate
        self._level = maximum
        self._clock = clock
        self._at = clock()
        self._redis = redis
        self._key = key or f"gateway:v1:cost-bucket:{upstream}"
        self._keys = (self._key, f"{self._key}:flying", f"{self._key}:flying-costs")
        # Queries reserved and not yet answered, by token: the shop may not have charged
        # them yet, so its bucket can hold at most the maximum less these.
        self._flying: dict[str, float] = {}
        self.waited_s = 0.0  # total time callers waited for points, for tests and metrics

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def _restore(self) -> None:
        now = self._clock()
        top = self.maximum - sum(self._flying.values())
        self._level = min(top, self._level + (now - self._at) * self.restore_rate)
        self._at = now

    def _take_locally(self, cost: float, budget_s: float, token: str) -> float:
        self._restore()
        margin = self.restore_rate * _MARGIN_S
        wait = max(0.0, (cost + margin - self._level) / self.restore_rate)
        if wait > budget_s:
            # Negative means refused; an expired budget with no wait must not read as -0.0,
            # which is not below zero and would send the call unreserved.
            return -wait - 1e-9
        self._level -= cost
        if token:
            self._flying[token] = cost
        return wait

    async def _take_shared(
        self, redis: GuardedRedis, cost: float, budget_s: float, token: str
    ) -> float | None:
        answer = await redis.call(
            "cost bucket take",
            lambda: redis.client.eval(
                _TAKE,
                3,
                *self._keys,
                cost,
                self.maximum,
                self.restore_rate,
                budget_s,
                _TTL_S,
                self.restore_rate * _MARGIN_S,
                token,
                max(1.0, budget_s) + _LEASE_S,
            ),
            None,
        )
        if answer is None:  # Redis is down: this instance paces itself meanwhile
            return None
        return float(answer.decode() if isinstance(answer, bytes) else answer)

    async def take(self, cost: float, budget_s: float, token: str = "") -> float:
        """Reserve ``cost`` points, waiting (at most ``budget_s``) for them to restore;
        answers the time waited. Raises ``UpstreamRateLimited`` when the wait would not
        fit, without reserving anything. ``token`` names the query until ``settle``: in
        flight, its cost is kept out of what the bucket can restore to."""
        cost = min(cost, self.maximum)  # a bucket never holds more than its size
        redis = self._redis
        wait = await self._take_shared(redis, cost, budget_s, token) if redis else None
        if wait is None:
            wait = self._take_locally(cost, budget_s, token)
        if wait < 0:
            raise UpstreamRateLimited(
                self.upstream,
                f"query cost {cost:.0f} needs {-wait:.2f}s of bucket restore, beyond the budget",
                retry_after_s=round(-wait, 3),
                status_code=None,
            )
        if wait > 0:
            self.waited_s += wait
            try:
                await asyncio.sleep(wait)
            except BaseException:
                # Cancelled before the query was sent: the shop charged nothing, and a
                # reservation left in flight would shrink the bucket (for good locally).
                await self.settle(cost, None, token)
                raise
        return wait

    async def settle(self, refund: float, status: ThrottleStatus | None, token: str = "") -> None:
        """After an answer (of the query ``take`` named ``token``): learn the bucket's
        figures, give back what the call did not use, and stay at or below the level the
        upstream reported."""
        if status is not None:
            self.maximum, self.restore_rate = status.maximum, status.restore_rate
        reported = status.available if status is not None else -1.0
        self._flying.pop(token, None)  # landed (or taken when Redis was down)
        if self._redis is not None:
            redis = self._redis

            async def settle() -> bool:
                await redis.client.eval(
                    _SETTLE,
                    3,
                    *self._keys,
                    max(0.0, refund),
                    self.maximum,
                    self.restore_rate,
                    reported,
                    _TTL_S,
                    token,
                )
                return True

            if await redis.call("cost bucket settle", settle, False):
                return
            # Redis is down: the local model below still learns from the answer.
        self._restore()
        self._level = min(self.maximum, self._level + max(0.0, refund))
        if reported >= 0:
            self._level = min(self._level, reported)

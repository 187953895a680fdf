"""Keeping strictly inside an upstream's published rate limit: ``calls`` per rolling
``per_s`` seconds.

HubSpot (100 calls per 10 s for a private app) and Segment's Profiles API (100 calls a
second) answer 429 beyond their limits. A send asks thousands of calls of them at once;
instead of meeting the 429s and their ``Retry-After``, every attempt first takes one of
the limit's ``calls`` tokens, waiting within the call's deadline (a wait that outlives
it fails as ``UpstreamRateLimited``, having taken nothing).

The upstream counts a call when it arrives, and we cannot see that moment: only that it
lies between our sending the call and our reading its answer. So a token is held while
its call is in flight and comes back ``per_s`` (and a hair) after the answer was read.
Two calls on the same token then arrive at least ``per_s`` apart, and as there are only
``calls`` tokens, no rolling window of ``per_s`` ever sees more than ``calls`` of ours,
however the event loop, the machine's load or the network delay a call between our
sending it and its arrival. The price is the calls' latency on each token's round:
100 per (1 s + 50 ms) for Segment at 50 ms a call, 95 % of its limit.

With the gateway's guarded Redis the tokens live in Redis (two sorted sets, flying and
cooling, updated by Lua scripts on Redis's clock), so every instance draws from one
limit, as the upstream sees one client; a token whose instance died in flight comes back
when its lease (the call's budget) ends. When Redis fails, each instance keeps its own
tokens meanwhile: an outage degrades to per-instance pacing, never to failed calls.

Every call of this instance, shared or not, is also counted in its own tokens, and a
shared token is taken only when one of its own is free too. So the switch to its own
tokens when Redis fails starts from the calls it made through Redis in the last window,
and the switch back from the calls Redis never saw: one instance never sends more than
``calls`` in a window across an outage (N instances may, during one, send N times it).
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from adapters.errors import UpstreamRateLimited
from adapters.transport.cost_bucket import GuardedRedis

__all__ = ["CallPacer", "Pacing"]

# KEYS: flying, cooling. ARGV: calls, token, lease (s), ttl (s).
# Answers "0" when the token was taken; else the seconds until the first cooling token
# is back, or "-1" when every token is in flight (no time known: ask again soon).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return '0'
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then return tostring(tonumber(first[2]) - now) end
return '-1'
"""
# KEYS: flying, cooling. ARGV: token, window (s), ttl (s).
_GIVE_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""
# How often the head of the queue asks again while every token is in flight.
_POLL_S = 0.005


@dataclass(frozen=True, slots=True)
class Pacing:
    """An upstream's limit of ``calls`` per rolling ``per_s``, and the hair kept beyond
    the window for the clocks' rounding."""

    calls: int
    per_s: float
    margin_s: float = 0.0

    @classmethod
    def under(cls, calls: int, per_s: float) -> Pacing:
        return cls(calls, per_s, max(0.002, per_s * 0.005))

    @property
    def window_s(self) -> float:
        return self.per_s + self.margin_s


class CallPacer:
    """The tokens of one upstream's rate limit; shared between instances through Redis."""

    def __init__(
        self,
        upstream: str,
        pacing: Pacing,
        *,
        redis: GuardedRedis | None = None,
        key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.pacing = pacing
        self._redis = redis
        key = key or f"gateway:v1:pacer:{upstream}"
        self._keys = (f"{key}:flying", f"{key}:cooling")
        self._clock = clock
        self._flying = 0
        self._cooling: list[float] = []  # heap of the times cooling tokens come back
        self._queue: asyncio.Lock | None = None  # waiters in turn; the first one asks
        self._given_back: asyncio.Event | None = None
        self.waited_s = 0.0  # total time calls waited for a token, for tests and metrics

    @property
    def shared(self) -> bool:
        return self._redis is not None

    @asynccontextmanager
    async def slot(self, budget_s: float) -> AsyncIterator[None]:
        """Hold a token for one attempt: taken within ``budget_s`` (else
        ``UpstreamRateLimited``), given back to cool when the attempt ends."""
        token = await self._take(budget_s)
        try:
            yield
        finally:
            await self._give_back(token)

    # Taking -------------------------------------------------------------------
    async def _take(self, budget_s: float) -> tuple[str, bool]:
        started = self._clock()
        ends = started + budget_s
        if self._queue is None:
            self._queue = asyncio.Lock()
        try:
            async with asyncio.timeout(max(0.0, budget_s)):
                async with self._queue:
                    token = await self._first_free(ends)
        except TimeoutError:
            raise self._refusal(None) from None
        self.waited_s += self._clock() - started
        return token

    async def _first_free(self, ends: float) -> tuple[str, bool]:
        """At the head of the queue: ask until a token is free; ``(token, shared)``."""
        token = secrets.token_hex(8)
        while True:
            wait, shared = self._local_wait(), None  # own calls first (module doc)
            if wait == 0.0:
                shared = await self._ask(token, ends)
                if shared is None or shared == 0.0:  # None: Redis is down, own tokens only
                    self._flying += 1
                    return token, shared is not None
                wait = shared
            if wait > 0 and self._clock() + wait > ends:
                raise self._refusal(wait)
            if wait > 0:
                await asyncio.sleep(wait)
            elif shared is not None:  # every shared token in flight: Redis says no time
                await asyncio.sleep(_POLL_S)
            else:  # every one of ours in flight: the next give-back wakes us
                await self._released().wait()

    async def _ask(self, token: str, ends: float) -> float | None:
        """Redis's answer: 0 taken, > 0 the wait, < 0 unknown; None without Redis."""
        redis = self._redis
        if redis is None:
            return None
        lease = max(1.0, ends - self._clock()) + self.pacing.window_s
        answer = await redis.call(
            "call pacer take",
            lambda: redis.client.eval(
                _TAKE, 2, *self._keys, self.pacing.calls, token, lease, self._ttl
            ),
            None,
        )
        if answer is None:
            return None
        return float(answer.decode() if isinstance(answer, bytes) else answer)

    def _local_wait(self) -> float:
        """0 when one of this instance's own tokens is free, else the wait for the first
        cooling one (< 0: every one is in flight)."""
        now = self._clock()
        while self._cooling and self._cooling[0] <= now:
            heapq.heappop(self._cooling)
        if self._flying + len(self._cooling) < self.pacing.calls:
            return 0.0
        return self._cooling[0] - now if self._cooling else -1.0

    # Giving back --------------------------------------------------------------
    async def _give_back(self, token: tuple[str, bool]) -> None:
        name, shared = token
        self._flying -= 1
        heapq.heappush(self._cooling, self._clock() + self.pacing.window_s)
        self._released().set()
        self._given_back = None
        if not shared:
            return
        redis = self._redis
        assert redis is not None
        done = await redis.call(
            "call pacer give back",
            lambda: redis.client.eval(
                _GIVE_BACK, 2, *self._keys, name, self.pacing.window_s, self._ttl
            ),
            None,
        )
        # Not given back (Redis is down): the token's lease in Redis brings it back.
        del done

    def _released(self) -> asyncio.Event:
        if self._given_back is None:
            self._given_back = asyncio.Event()
        return self._given_back

    @property
    def _ttl(self) -> int:
        return max(60, int(self.pacing.window_s * 4))

    def _refusal(self, wait: float | None) -> UpstreamRateLimited:
        detail = f"{wait:.2f}s away" if wait is not None else "not free in time"
        return UpstreamRateLimited(
            self.upstream,
            f"the next call token is {detail}, beyond the call's budget",
            retry_after_s=round(wait, 3) if wait is not None else None,
            status_code=None,
        )

"""Keeping under an upstream's published rate limit: ``calls`` per rolling ``per_s``.

HubSpot (100 calls per 10 s for a private app) and Segment's Profiles API (100 calls a
second) answer 429 beyond their limits. A send asks thousands of calls of them at once;
instead of meeting the 429s and their ``Retry-After``, every attempt first takes a slot
from the upstream's pacer, waiting within the call's deadline, and a wait that does not
fit the deadline takes nothing and fails at once (``UpstreamRateLimited``).

The pacer counts as the upstream does, a rolling window, with two cautions, because the
upstream counts a call when it arrives, not when we send it, and the time between the
two varies (a busy event loop, the network):

- the window it keeps is ``per_s`` plus a margin, so two calls ``calls`` apart are
  never closer than the window even when the later one travels faster;
- slots are spread evenly (one every ``(per_s + margin) / calls``), with a burst of a
  few after an idle spell, so a hundred calls never leave together and arrive as a
  clump at the window's edge.

A slot is a reservation in a queue (times in order, first come first served), so no
lock is held across a wait. With the gateway's guarded Redis the queue lives in Redis
(a Lua script on Redis's clock), so every instance draws from one window as the upstream
sees one client; when Redis fails, each instance paces itself meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from adapters.errors import UpstreamRateLimited
from adapters.transport.cost_bucket import GuardedRedis

__all__ = ["CallPacer", "Pacing"]

# KEYS[1]: the pacer's list of reserved times (oldest first); KEYS[2]: its next even slot.
# ARGV: calls, window (s, margin included), spacing (s), burst, budget (s), ttl (s).
# Answers the wait in seconds as a string; negative: refused (the wait did not fit).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local calls, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local spacing, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local at = now
local even = tonumber(redis.call('GET', KEYS[2]) or now)
at = math.max(at, even - (burst - 1) * spacing)
if redis.call('LLEN', KEYS[1]) >= calls then
  local oldest = tonumber(redis.call('LINDEX', KEYS[1], -calls))
  at = math.max(at, oldest + window)
end
if at - now > tonumber(ARGV[5]) then return tostring(-(at - now) - 0.000001) end
redis.call('RPUSH', KEYS[1], tostring(at))
redis.call('LTRIM', KEYS[1], -calls, -1)
redis.call('SET', KEYS[2], tostring(math.max(even, at) + spacing))
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return tostring(at - now)
"""


@dataclass(frozen=True, slots=True)
class Pacing:
    """How a pacer spends an upstream's limit of ``calls`` per ``per_s``."""

    calls: int
    per_s: float
    # Kept beyond the window: the spread between when we send and when it counts.
    margin_s: float
    # Slots that may leave together after an idle spell.
    burst: int

    @classmethod
    def under(cls, calls: int, per_s: float) -> Pacing:
        """A little under the limit: a margin of 6 % of the window (at least 20 ms) and
        bursts of a tenth of it."""
        return cls(calls, per_s, max(0.02, per_s * 0.06), max(1, calls // 10))

    @property
    def window_s(self) -> float:
        return self.per_s + self.margin_s

    @property
    def spacing_s(self) -> float:
        return self.window_s / self.calls


class CallPacer:
    """The slots one upstream's calls leave in; shared between instances through Redis."""

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
        self._keys = (f"{key}:slots", f"{key}:even")
        self._clock = clock
        self._slots: deque[float] = deque(maxlen=pacing.calls)
        self._even = clock()
        self.waited_s = 0.0  # total time calls waited for a slot, for tests and metrics

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def _reserve_locally(self, budget_s: float) -> float:
        pacing, now = self.pacing, self._clock()
        at = max(now, self._even - (pacing.burst - 1) * pacing.spacing_s)
        if len(self._slots) >= pacing.calls:
            at = max(at, self._slots[0] + pacing.window_s)
        if at - now > budget_s:
            # Negative means refused; never -0.0, which would read as a free slot.
            return -(at - now) - 1e-9
        self._slots.append(at)  # the deque keeps the newest ``calls`` slots
        self._even = max(self._even, at) + pacing.spacing_s
        return at - now

    async def _reserve_shared(self, redis: GuardedRedis, budget_s: float) -> float | None:
        pacing = self.pacing
        answer = await redis.call(
            "call pacer reserve",
            lambda: redis.client.eval(
                _RESERVE,
                2,
                *self._keys,
                pacing.calls,
                pacing.window_s,
                pacing.spacing_s,
                pacing.burst,
                budget_s,
                max(60, int(pacing.window_s * 4)),
            ),
            None,
        )
        if answer is None:  # Redis is down: this instance paces itself meanwhile
            return None
        return float(answer.decode() if isinstance(answer, bytes) else answer)

    async def wait(self, budget_s: float) -> float:
        """Take the next slot, waiting for it (at most ``budget_s``); answers the time
        waited. Raises ``UpstreamRateLimited`` when the slot is beyond the budget, and
        then takes none."""
        wait = await self._reserve_shared(self._redis, budget_s) if self._redis else None
        if wait is None:
            wait = self._reserve_locally(budget_s)
        if wait < 0:
            raise UpstreamRateLimited(
                self.upstream,
                f"the next call slot is {-wait:.2f}s away, beyond the call's budget",
                retry_after_s=round(-wait, 3),
                status_code=None,
            )
        if wait > 0:
            self.waited_s += wait
            await asyncio.sleep(wait)
        return wait

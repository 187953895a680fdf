"""The process's Redis client, configured the way redis-py advises for a cache that
must survive a Redis restart, and the guard every call to it goes through.

The client: short socket and connect timeouts (a frozen Redis costs a fraction of a
second, not redis-py's default 5 s), a health check on connections idle for a while,
and a retry with backoff on connection errors and timeouts, so a connection broken by
a restart is replaced on its next use instead of failing that request.

The guard (``RedisGuard.call``) makes Redis an accelerator rather than a dependency:
each call is time-bounded, and any availability failure (refused, reset, timeout)
answers the caller's default (a miss) instead of raising. A circuit breaker like the
upstreams' stops calling a Redis that keeps failing, so an outage costs one short
timeout, not one per request; a probe every ``reset_timeout_s`` brings it back.
Invalidations that could not reach Redis are recorded: keys read as misses in this
process until they are deleted, which happens as soon as Redis answers again (the
guard probes on its own while any are pending, traffic or not). Other instances do
not know what this one owes: they may read such an entry between Redis's return and
this instance's next probe (at most ``reset_timeout_s``), never longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.errors import CircuitOpen
from adapters.transport.breaker import BreakerState, CircuitBreaker
from gateway.observability import metrics

logger = logging.getLogger("gateway.redis")

T = TypeVar("T")
MAX_UNFINISHED = 100_000  # invalidations remembered; beyond, entries expire by their TTL
_REPLAY_CHUNK = 500
# Redis did not answer (or not in time): the call counts against the breaker.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    OSError,
    TimeoutError,  # asyncio.timeout's
)
_ANY_ERROR: tuple[type[BaseException], ...] = (RedisError, *_UNAVAILABLE)


def open_client(
    url: str,
    *,
    timeout_s: float,
    retries: int,
    health_check_interval_s: float,
    pubsub: bool = False,
) -> aioredis.Redis:
    """A client for ``url`` with bounded timeouts and retries on broken connections.

    ``pubsub``: for a subscriber's long reads, which would time out between messages
    under a socket timeout (connecting stays bounded; a broken one is reconnected).
    """
    return aioredis.Redis.from_url(
        url,
        socket_timeout=None if pubsub else timeout_s,
        socket_connect_timeout=timeout_s,
        socket_keepalive=True,
        health_check_interval=int(max(1, health_check_interval_s)),
        retry=Retry(ExponentialWithJitterBackoff(cap=timeout_s, base=0.005), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class RedisGuard:
    """The shared client, its circuit breaker and the invalidations it owes."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        timeout_s: float,
        failure_threshold: int = 3,
        reset_timeout_s: float = 1.0,
        warn_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker(
            "redis",
            failure_threshold=failure_threshold,
            reset_timeout_s=reset_timeout_s,
            clock=clock,
        )
        self._clock = clock
        self._warn_every_s = warn_every_s
        self._warned_at: float | None = None
        self._suppressed = 0
        self.unfinished: set[str] = set()  # keys whose delete did not reach Redis
        self.failures = 0  # calls Redis did not answer (in time), since the start
        # The same by error: a refused or broken connection is not a timeout (which a
        # starved process sees too, Redis or not).
        self.failures_by_error: Counter[str] = Counter()
        self._recovery: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()  # set by a call that found Redis answering
        self._state = BreakerState.CLOSED

    @property
    def available(self) -> bool:
        return self.breaker.state is BreakerState.CLOSED

    async def call(
        self, what: str, op: Callable[[], Awaitable[T]], default: T, *, optional: bool = False
    ) -> T:
        """``op()``'s answer, or ``default`` when Redis is down, slow or its circuit open.

        ``optional``: a call a read can do without (then it caches nothing) is made only
        while the circuit is closed, never as its half-open probe: a frozen Redis answers
        a probe only at the timeout, and a read that took the probe for each of its calls
        waited one timeout per call (a profile read four, over a second). Reads' cache
        lookups and the recovery task probe; optional calls wait for them."""
        if optional and self.breaker.state is not BreakerState.CLOSED:
            return default
        try:
            self.breaker.before_call()
        except CircuitOpen:
            return default
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await op()
        except asyncio.CancelledError:
            self.breaker.release()
            raise
        except _UNAVAILABLE as exc:
            self.failures += 1
            self.failures_by_error[type(exc).__name__] += 1
            self.breaker.record_failure()
            self._observe()
            self._warn(what, exc)
            self._recover()
            return default
        except RedisError as exc:  # Redis answered (e.g. a script error): it is up
            self.breaker.release()
            self._warn(what, exc)
            return default
        self.breaker.record_success()
        self._observe()
        if self.unfinished:
            self._closed.set()
            self._recover()
        return result

    async def delete(self, keys: Iterable[str]) -> bool:
        """Delete keys, or record them to be deleted when Redis answers again."""
        wanted = list(keys)
        if not wanted:
            return True
        done = await self.call("delete", partial(self.client.delete, *wanted), None)
        if done is None:
            self._owe(wanted)
            return False
        self.unfinished.difference_update(wanted)
        return True

    def _observe(self) -> None:
        """Publish the circuit's state when it changed (not on every call: hot path)."""
        state = self.breaker.state
        if state is not self._state:
            self._state = state
            metrics.record_circuit("redis", state)

    def owed(self, key: str) -> bool:
        """Whether ``key`` was invalidated but Redis may still hold it (read it as a miss)."""
        return key in self.unfinished

    def _owe(self, keys: Iterable[str]) -> None:
        for key in keys:
            if len(self.unfinished) >= MAX_UNFINISHED:
                logger.warning("too many invalidations owed; the rest expire by their TTL")
                break
            self.unfinished.add(key)
        self._recover()

    def _recover(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(
                self._recovering(), name="redis-recovery"
            )

    async def _recovering(self) -> None:
        """Probe until the circuit closes, then delete what is owed."""
        refused = 0  # replays Redis answered with an error (read-only replica, ACL)
        while True:
            if not self.available:
                # A request's call may find Redis back first: then replay at once.
                self._closed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.breaker.reset_timeout_s):
                        await self._closed.wait()
                if not self.available:
                    await self.call("probe", self.client.ping, None)
                continue
            if not self.unfinished:
                return
            chunk = list(self.unfinished)[:_REPLAY_CHUNK]
            if await self.call("replay", partial(self.client.delete, *chunk), None) is None:
                if self.available:
                    # Redis answered, with an error (READONLY after a failover, NOPERM):
                    # the breaker stays closed, so back off here or this loop spins,
                    # thousands of DELs a second. The keys stay owed (read as misses).
                    refused += 1
                    await asyncio.sleep(min(30.0, self.breaker.reset_timeout_s * 2**refused))
                continue  # else the breaker counted it; probe again after its cool-down
            refused = 0
            self.unfinished.difference_update(chunk)
            if not self.unfinished:
                logger.info("owed cache invalidations replayed")

    async def recovered(self) -> None:
        """Wait until the circuit is closed and nothing is owed (at once if so already)."""
        if self._recovery is not None and not self._recovery.done():
            await asyncio.shield(self._recovery)

    def _warn(self, what: str, exc: BaseException) -> None:
        """One line per interval, with how many failures it stands for."""
        now = self._clock()
        if self._warned_at is not None and now - self._warned_at < self._warn_every_s:
            self._suppressed += 1
            return
        logger.warning(
            "redis unavailable; serving without the cache",
            extra={
                "operation": what,
                "error": type(exc).__name__,
                "suppressed": self._suppressed,
                "circuit": self.breaker.state.value,
            },
        )
        self._warned_at = now
        self._suppressed = 0

    async def ready(self, timeout_s: float = 0.15) -> bool:
        """Whether Redis answers a PING within ``timeout_s`` (at once False while its
        circuit is open: a readiness probe must answer fast whatever is down)."""
        if self.breaker.state is BreakerState.OPEN:
            return False
        try:
            async with asyncio.timeout(min(timeout_s, self.timeout_s)):
                await self.client.ping()
        except _ANY_ERROR:
            return False
        return True

    async def aclose(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        await self.client.aclose()


__all__ = ["RedisGuard", "open_client"]

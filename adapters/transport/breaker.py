"""A circuit breaker per upstream: stop calling an upstream that keeps failing.

```
CLOSED --N consecutive failures--> OPEN --reset_timeout_s--> HALF_OPEN
   ^                                 ^                          |  one probe admitted,
   |                                 +------probe failed--------+  others refused
   +-----------------------------probe succeeded----------------+
```

Hand-written rather than taken from a library: of the candidates, aiobreaker has not
been released since 2021, pybreaker is synchronous at heart (its async path relies on
Tornado) and purgatory (async, last released 2024) admits every request in half-open
instead of a single probe, measures time with the wall clock and routes state changes
through a message bus and unit of work built for shared Redis state. What we need is
about sixty lines, needs no locking (one event loop owns it) and is simple to observe.

Only availability failures count (timeouts, refused connections, 5xx); an upstream
that answers, even with a 4xx or a malformed body, is up. The caller reports each
outcome with ``record_success``, ``record_failure`` or ``release`` (no verdict, e.g.
a 429 or a cancelled call), and must report one after every admitted ``before_call``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from adapters.errors import CircuitOpen

__all__ = ["BreakerState", "CircuitBreaker"]

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        upstream: str,
        *,
        failure_threshold: int,
        reset_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._changed_at = clock()
        self._listeners: list[Callable[[CircuitBreaker], object]] = []

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.upstream} {self.state} failures={self._failures}>"

    @property
    def state(self) -> BreakerState:
        """The state a call made now would meet (an open circuit whose cool-down has
        passed reads as half-open)."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def seconds_in_state(self) -> float:
        """How long the circuit has been in the state ``state`` reads."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            return self._clock() - (self._opened_at + self.reset_timeout_s)
        return self._clock() - self._changed_at

    def subscribe(self, listener: Callable[[CircuitBreaker], object]) -> None:
        """Call ``listener(breaker)`` after every change of state (to publish it: other
        worker processes cannot see this one's breakers). A listener must not block."""
        self._listeners.append(listener)

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def before_call(self) -> None:
        """Admit the call or raise ``CircuitOpen`` without contacting the upstream."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            self._move(BreakerState.HALF_OPEN)
        if self._state is BreakerState.OPEN:
            raise CircuitOpen(self.upstream, self._opened_at + self.reset_timeout_s - self._clock())
        if self._state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                raise CircuitOpen(self.upstream, 0.0)
            self._probe_in_flight = True

    def record_success(self) -> None:
        self._probe_in_flight = False
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._move(BreakerState.OPEN)

    def release(self) -> None:
        """End an admitted call without a verdict: a half-open circuit admits a new probe."""
        self._probe_in_flight = False

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout_s

    def _move(self, state: BreakerState) -> None:
        logger.warning(
            "circuit %s -> %s",
            self._state.value,
            state.value,
            extra={
                "upstream": self.upstream,
                "breaker_from": self._state.value,
                "breaker_to": state.value,
                "failures": self._failures,
            },
        )
        self._state = state
        self._changed_at = self._clock()
        for listener in self._listeners:
            try:
                listener(self)
            except Exception:  # an observer's fault never fails the call being made
                logger.exception("circuit listener failed", extra={"upstream": self.upstream})

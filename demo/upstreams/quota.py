"""A sample's rate limit as the real service words it: at most ``calls`` requests in any
rolling ``per_s`` seconds, counted when a request arrives.

HubSpot (a private app on the Professional tier: 100 calls per 10 s, 1,000,000 a day)
announces what is left on every answer (``X-HubSpot-RateLimit-*``); Segment's Profiles
API takes 100 calls a second. When the limit is enforced, a request beyond it is
answered 429 with ``Retry-After`` (the time until the oldest call in the window leaves
it) and is not counted; when it is not (the test suite's shared samples, where one
test's calls must not throttle the next test), it is only announced.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DAILY_MAX",
    "HUBSPOT_LIMIT",
    "SEGMENT_LIMIT",
    "Admission",
    "RateLimit",
    "RollingWindow",
    "hubspot_headers",
]

DAILY_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    calls: int
    per_s: float


HUBSPOT_LIMIT = RateLimit(100, 10.0)
SEGMENT_LIMIT = RateLimit(100, 1.0)


@dataclass(frozen=True, slots=True)
class Admission:
    """What the window said of one request."""

    admitted: bool
    remaining: int  # calls left in the window after this one
    limit: int
    retry_after_s: float = 0.0
    daily_remaining: int = DAILY_MAX


class RollingWindow:
    """The calls of the last ``per_s`` seconds, thread-safe (the samples' server thread
    counts while a test thread reads or changes the limit)."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        enforced: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.limit = limit
        self.enforced = enforced
        self._arrivals: deque[float] = deque()
        self._today = 0
        self.refused = 0  # requests answered 429 by this window

    def configure(self, *, limit: RateLimit | None = None, enforced: bool | None = None) -> None:
        with self._lock:
            if limit is not None:
                self.limit = limit
            if enforced is not None:
                self.enforced = enforced

    def reset(self) -> None:
        with self._lock:
            self._arrivals.clear()
            self.refused = 0

    def admit(self, calls: int = 0) -> Admission:
        """Count one arriving request (``calls``: the window's size if not the limit's,
        the announced-quota knob) and say whether it is admitted."""
        with self._lock:
            now = self._clock()
            size = calls or self.limit.calls
            window = self._arrivals
            while window and window[0] <= now - self.limit.per_s:
                window.popleft()
            if self.enforced and len(window) >= size:
                self.refused += 1
                wait = window[len(window) - size] + self.limit.per_s - now
                # Whole milliseconds, rounded up: a client waiting exactly this long is in.
                return Admission(False, 0, size, math.ceil(wait * 1000) / 1000)
            window.append(now)
            self._today += 1
            return Admission(
                True, max(0, size - len(window)), size, 0.0, max(0, DAILY_MAX - self._today)
            )


def hubspot_headers(admission: Admission, per_s: float) -> list[tuple[str, str]]:
    """The headers HubSpot announces its limits with."""
    return [
        ("X-HubSpot-RateLimit-Interval-Milliseconds", str(round(per_s * 1000))),
        ("X-HubSpot-RateLimit-Max", str(admission.limit)),
        ("X-HubSpot-RateLimit-Remaining", str(admission.remaining)),
        ("X-HubSpot-RateLimit-Daily", str(DAILY_MAX)),
        ("X-HubSpot-RateLimit-Daily-Remaining", str(admission.daily_remaining)),
    ]

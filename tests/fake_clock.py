"""A hand-driven monotonic clock, for code that takes ``clock=`` (circuit breakers, token
refresh, key caches): a test moves time on instead of sleeping through it."""

from __future__ import annotations


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

"""A fixed-window rate limit as HubSpot announces it: calls left in the current interval
and in the day, reported on every answer (``X-HubSpot-RateLimit-*``), never enforced
(the ``rate_limit_next`` knob decides when a 429 comes)."""

from __future__ import annotations

import threading
import time

# HubSpot's Professional tier for a private app: 190 calls per 10 s, 1,000,000 a day.
INTERVAL_MS = 10_000
INTERVAL_MAX = 190
DAILY_MAX = 1_000_000


class RateWindow:
    """Calls counted per interval and per (process-lifetime) day; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._in_window = 0
        self._today = 0

    def headers(self, limit: int = 0) -> list[tuple[str, str]]:
        """Count this call; the headers announcing what is left (``limit``: the
        interval's maximum, 0 for HubSpot's)."""
        size = limit or INTERVAL_MAX
        with self._lock:
            now = time.monotonic()
            if (now - self._started) * 1000 >= INTERVAL_MS:
                self._started, self._in_window = now, 0
            self._in_window += 1
            self._today += 1
            left, today = max(0, size - self._in_window), max(0, DAILY_MAX - self._today)
        return [
            ("X-HubSpot-RateLimit-Interval-Milliseconds", str(INTERVAL_MS)),
            ("X-HubSpot-RateLimit-Max", str(size)),
            ("X-HubSpot-RateLimit-Remaining", str(left)),
            ("X-HubSpot-RateLimit-Daily", str(DAILY_MAX)),
            ("X-HubSpot-RateLimit-Daily-Remaining", str(today)),
        ]

"""Call counters of a sample service, keyed by route template, and the raw paths.

Tests read them to prove batching (one ``batch/read`` instead of N ``GET``\\ s)
and caching (no second call at all); the raw paths, exactly as the request line
carried them (before any decoding), prove which route a client's call reached.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

RECENT_PATHS = 1000  # raw paths kept, newest last


class CallCounter:
    """Requests received, in total and per ``"<METHOD> <route template>"``;
    thread-safe. SOAP services also count per operation."""

    def __init__(self, *, operations: bool = False) -> None:
        self._lock = threading.Lock()
        self._by_endpoint: Counter[str] = Counter()
        self._by_operation: Counter[str] | None = Counter() if operations else None
        self._paths: deque[str] = deque(maxlen=RECENT_PATHS)

    def record(self, endpoint: str, raw_path: str | None = None) -> None:
        with self._lock:
            self._by_endpoint[endpoint] += 1
            if raw_path is not None:
                self._paths.append(raw_path)

    def paths(self) -> list[str]:
        """The raw paths of the latest requests (``METHOD /raw/path``), oldest first."""
        with self._lock:
            return list(self._paths)

    def record_operation(self, operation: str) -> None:
        with self._lock:
            if self._by_operation is not None:
                self._by_operation[operation] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._by_endpoint.values())

    def count(self, endpoint: str) -> int:
        with self._lock:
            return self._by_endpoint[endpoint]

    def operation(self, name: str) -> int:
        with self._lock:
            return self._by_operation[name] if self._by_operation is not None else 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            answer: dict[str, Any] = {
                "total": sum(self._by_endpoint.values()),
                "by_endpoint": dict(self._by_endpoint),
                "paths": list(self._paths),
            }
            if self._by_operation is not None:
                answer["by_operation"] = dict(self._by_operation)
            return answer

    def reset(self) -> None:
        with self._lock:
            self._by_endpoint.clear()
            self._paths.clear()
            if self._by_operation is not None:
                self._by_operation.clear()

"""Call counters of a sample service, keyed by route template.

Tests read them to prove batching (one ``batch/read`` instead of N ``GET``\\ s)
and caching (no second call at all).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class CallCounter:
    """Requests received, in total and per ``"<METHOD> <route template>"``;
    thread-safe. SOAP services also count per operation."""

    def __init__(self, *, operations: bool = False) -> None:
        self._lock = threading.Lock()
        self._by_endpoint: Counter[str] = Counter()
        self._by_operation: Counter[str] | None = Counter() if operations else None

    def record(self, endpoint: str) -> None:
        with self._lock:
            self._by_endpoint[endpoint] += 1

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
            }
            if self._by_operation is not None:
                answer["by_operation"] = dict(self._by_operation)
            return answer

    def reset(self) -> None:
        with self._lock:
            self._by_endpoint.clear()
            if self._by_operation is not None:
                self._by_operation.clear()

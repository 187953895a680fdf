"""How fresh the data is: the Unix times behind the freshness gauges of metrics.py.

Each gauge holds a time, never an age, so the age (``time() - gauge`` in an alert) keeps
growing while nothing arrives. A gauge only moves forward: an older answer served from
the cache after a fresh one does not make the newest data served older.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prometheus_client import Gauge

from gateway.observability import metrics

__all__ = ["arrived", "fetched", "served", "synced"]

# The last value set per gauge child, so that a gauge moves forward only; a plain dict,
# as every caller is on the event loop (or a CLI's only thread).
_last: dict[tuple[str, tuple[str, ...]], float] = {}
# The newest fetch served per upstream, compared as it comes (served runs per request).
_served: dict[str, datetime] = {}
_NEVER = datetime.min.replace(tzinfo=UTC)


def _forward(gauge: Gauge, labels: tuple[str, ...], when: float) -> None:
    key = (gauge._name, labels)
    if when > _last.get(key, 0.0):
        _last[key] = when
        gauge.labels(*labels).set(when)


def fetched(upstream: str) -> None:
    """The upstream answered a fetch now."""
    _forward(metrics.UPSTREAM_LAST_SUCCESS, (upstream,), time.time())


def served(upstream: str, fetched_at: datetime) -> None:
    """Data fetched at ``fetched_at`` was served (fresh, cached or stale)."""
    if fetched_at > _served.get(upstream, _NEVER):
        _served[upstream] = fetched_at
        metrics.SERVED_NEWEST.labels(upstream).set(fetched_at.timestamp())


def arrived(kind: str, source: str, when: float | None = None) -> None:
    """Stored data of ``kind`` arrived from ``source`` (now, or at ``when``)."""
    _forward(metrics.STORED_NEWEST, (kind, source), time.time() if when is None else when)


def synced(source: str) -> None:
    """A sync of ``source`` finished without failing, now."""
    _forward(metrics.SYNC_LAST_SUCCESS, (source,), time.time())

"""The adapters' reports (quota headroom, Retry-After, schema drift) as metrics and logs.

Given to ``build_adapters`` by gateway/services.py. A drift is logged once per upstream,
path and kind in the life of the process (with the path and kind, never a value) and
counted every time; the field paths an upstream can make up are bounded, so a service
that renames everything cannot grow the metric without limit.
"""

from __future__ import annotations

import logging
import threading

from adapters.transport.telemetry import Quota
from gateway.observability import metrics

__all__ = ["UpstreamTelemetry"]

logger = logging.getLogger(__name__)
# Distinct drift paths counted per upstream; later ones are counted as "(other)".
_MAX_PATHS = 100


class UpstreamTelemetry:
    """``adapters.transport.telemetry.Telemetry`` onto Prometheus and the log."""

    def __init__(self, max_paths: int = _MAX_PATHS) -> None:
        self._max_paths = max_paths
        self._seen: dict[str, set[tuple[str, str]]] = {}
        # The SOAP adapter reports from zeep's worker context too: one lock, held briefly.
        self._lock = threading.Lock()

    def quota(self, upstream: str, quota: Quota) -> None:
        metrics.UPSTREAM_QUOTA_REMAINING.labels(upstream, quota.name).set(quota.remaining)
        metrics.UPSTREAM_QUOTA_LIMIT.labels(upstream, quota.name).set(quota.limit)

    def retry_after(self, upstream: str, seconds: float) -> None:
        metrics.UPSTREAM_RETRY_AFTER.labels(upstream).inc()
        metrics.UPSTREAM_RETRY_AFTER_SECONDS.labels(upstream).set(seconds)

    def drift(self, upstream: str, path: str, kind: str) -> None:
        with self._lock:
            seen = self._seen.setdefault(upstream, set())
            first = (path, kind) not in seen
            if first and len(seen) >= self._max_paths:
                path, first = "(other)", ("(other)", kind) not in seen
            seen.add((path, kind))
        metrics.SCHEMA_DRIFT.labels(upstream, path, kind).inc()
        if first:
            logger.warning(
                "upstream schema drift: %s %s",
                kind,
                path,
                extra={"upstream": upstream, "drift_path": path, "drift_kind": kind},
            )

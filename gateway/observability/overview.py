"""What an operator asks first, read from the gateway's own metrics and stores: how fast
and how reliably each upstream answers, how often the cache serves, who is being rate
limited, how far the event stream lags, and how the last syncs and export went.

The figures come from the same Prometheus exposition as ``/metrics`` (every worker's,
in multiprocess mode), so the console and a scraper never disagree; latency quantiles
are read from the histogram's buckets (an upper bound: "p95 ≤ 250 ms"). Sync runs come
from ``sync_runs`` and the cursors, the last export from its manifest in the target.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.export.manifest import Folder, TableResult
from gateway.export.service import ExportReport
from gateway.export.writer import filesystem
from gateway.ingest.sync_runs import SyncState, sync_states
from gateway.observability import metrics


@dataclass(frozen=True, slots=True)
class Latency:
    count: int
    mean_ms: float | None
    p50_ms: float | None  # the upper bound of the bucket holding the median; None: > largest
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class UpstreamFigures:
    upstream: str
    latency: Latency
    errors: dict[str, int]
    hits: int
    misses: int
    stale: int

    @property
    def hit_ratio(self) -> float | None:
        looked = self.hits + self.misses + self.stale
        return self.hits / looked if looked else None


@dataclass(frozen=True, slots=True)
class StreamFigures:
    transport: str
    pending: int  # delivered, not yet acknowledged
    waiting: int  # not yet delivered
    oldest_s: float


@dataclass(frozen=True, slots=True)
class ExportFigures:
    run_id: str | None = None
    finished_at: datetime | None = None
    lines: tuple[str, ...] = ()
    problem: str | None = None  # the target could not be read: why, in one line


@dataclass(frozen=True, slots=True)
class OverviewReport:
    upstreams: list[UpstreamFigures]
    operations: dict[str, Latency]
    rate_limited: list[tuple[str, int]]  # key name, requests refused (since start)
    streams: list[StreamFigures]
    syncs: list[SyncState]
    export: ExportFigures
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def hit_ratio(self) -> float | None:
        hits = sum(u.hits for u in self.upstreams)
        looked = sum(u.hits + u.misses + u.stale for u in self.upstreams)
        return hits / looked if looked else None


class Overview:
    """Reads the overview; cheap enough to be read on every page view."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        export_dir: str | None,
        multiprocess_dir: str | None,
    ) -> None:
        self._sessions = sessions
        self._export_dir = export_dir
        self._multiprocess_dir = multiprocess_dir

    async def read(self) -> OverviewReport:
        body, _ = metrics.exposition(self._multiprocess_dir)
        figures = metric_figures(body.decode())
        syncs = await sync_states(self._sessions)
        # The target may be an object store: its listing must not hold the event loop.
        export = await asyncio.to_thread(last_export, self._export_dir)
        return OverviewReport(*figures, syncs=syncs, export=export)


def last_export(target: str | None) -> ExportFigures:
    """The newest export run's summary lines, from its manifest (written last)."""
    if not target:
        return ExportFigures(problem="no export target is configured")
    try:
        fs, root = filesystem(target)
        manifest = Folder(fs, root).latest()
    except (OSError, ValueError) as exc:
        return ExportFigures(problem=f"the export target could not be read ({type(exc).__name__})")
    if manifest is None:
        return ExportFigures(problem="no export has finished in this target yet")
    started = datetime.fromisoformat(manifest["started_at"])
    finished = datetime.fromisoformat(manifest["finished_at"])
    report = ExportReport(
        run_id=manifest["run_id"],
        resumed=False,
        pseudonymised=bool(manifest.get("pseudonymised")),
        tables=tuple(TableResult.from_json(t) for t in manifest["tables"].values()),
        seconds=max((finished - started).total_seconds(), 0.0),
    )
    return ExportFigures(report.run_id, finished, tuple(report.lines()))


def metric_figures(
    exposition: str,
) -> tuple[list[UpstreamFigures], dict[str, Latency], list[tuple[str, int]], list[StreamFigures]]:
    """Upstreams, operations, rate-limited keys and streams from the text exposition."""
    samples: dict[str, list[Sample]] = defaultdict(list)
    for family in text_string_to_metric_families(exposition):
        samples[family.name].extend(family.samples)
    upstream_latency = _histograms(samples["gateway_upstream_request_duration_seconds"], "upstream")
    errors: dict[str, dict[str, int]] = defaultdict(dict)
    for s in _named(samples["gateway_upstream_errors"], "_total"):
        errors[s.labels["upstream"]][s.labels["code"]] = int(s.value)
    lookups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in _named(samples["gateway_cache_lookups"], "_total"):
        lookups[s.labels["upstream"]][s.labels["result"]] += int(s.value)
    names = sorted(upstream_latency.keys() | errors.keys() | lookups.keys())
    upstreams = [
        UpstreamFigures(
            name,
            upstream_latency.get(name, Latency(0, None, None, None)),
            dict(sorted(errors[name].items())),
            lookups[name]["hit"],
            lookups[name]["miss"],
            lookups[name]["stale"],
        )
        for name in names
    ]
    limited = sorted(
        (
            (s.labels["key"], int(s.value))
            for s in _named(samples["gateway_rate_limited"], "_total")
        ),
        key=lambda item: (-item[1], item[0]),
    )
    return (
        upstreams,
        _histograms(samples["gateway_request_duration_seconds"], "operation"),
        [item for item in limited if item[1] > 0],
        _streams(samples),
    )


def _named(samples: Iterable[Sample], suffix: str) -> Iterable[Sample]:
    return (s for s in samples if s.name.endswith(suffix))


def _histograms(samples: list[Sample], label: str) -> dict[str, Latency]:
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for s in samples:
        key = s.labels.get(label, "")
        if s.name.endswith("_bucket"):
            buckets[key].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_sum"):
            sums[key] = s.value
        elif s.name.endswith("_count"):
            counts[key] = s.value
    found = {}
    for key, count in counts.items():
        if not count:
            continue
        ordered = sorted(buckets[key])
        found[key] = Latency(
            int(count),
            sums.get(key, 0.0) / count * 1000,
            _quantile(ordered, count, 0.5),
            _quantile(ordered, count, 0.95),
        )
    return found


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """The upper bound (ms) of the first bucket holding the q-quantile; None beyond the
    largest finite bucket."""
    for bound, cumulative in buckets:
        if cumulative >= q * count:
            return None if math.isinf(bound) else bound * 1000
    return None


def _streams(samples: dict[str, list[Sample]]) -> list[StreamFigures]:
    lag: dict[str, dict[str, int]] = defaultdict(dict)
    for s in samples["gateway_stream_lag_entries"]:
        lag[s.labels["transport"]][s.labels["state"]] = int(s.value)
    oldest = {s.labels["transport"]: s.value for s in samples["gateway_stream_lag_oldest_seconds"]}
    return [
        StreamFigures(
            transport,
            lag[transport].get("pending", 0),
            lag[transport].get("waiting", 0),
            oldest.get(transport, 0.0),
        )
        for transport in sorted(lag.keys() | oldest.keys())
    ]

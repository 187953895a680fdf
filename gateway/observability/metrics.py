"""Prometheus metrics: what operators watch (latency by operation, each upstream's
latency, errors and circuit, the cache's hits and misses).

With several uvicorn workers, `gateway serve` points prometheus-client's
multiprocess mode at a shared directory, so `/metrics` on any worker reports all.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from adapters.transport.breaker import BreakerState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Time to answer one API request, by GraphQL operation (or endpoint).",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
OPERATION_ERRORS = Counter(
    "gateway_operation_errors_total",
    "GraphQL operations that answered errors, by operation and error code (once per code).",
    ["operation", "code"],
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_request_duration_seconds",
    "Time one upstream fetch took, retries included.",
    ["upstream"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Upstream fetches that failed, by error code.",
    ["upstream", "code"],
)
CIRCUIT_STATE = Gauge(
    "gateway_upstream_circuit_state",
    "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open.",
    ["upstream"],
    multiprocess_mode="max",
)
CACHE_LOOKUPS = Counter(
    "gateway_cache_lookups_total",
    "Cache lookups of upstream data: hit (fresh), miss, or stale (served after a failure).",
    ["upstream", "result"],
)
RATE_LIMITED = Counter(
    "gateway_rate_limited_total",
    "Requests refused by the per-key rate limit, by API key name.",
    ["key"],
)
TRANSACTION_RETRIES = Counter(
    "gateway_db_transaction_retries_total",
    "Transactions run again after a deadlock, serialization failure or locked database.",
    ["operation", "reason"],
)
# ESP events acknowledged (200) and not stored because a field no retry can fix (the
# address is none, a field is malformed): by what each would have done to its recipient.
# An unsubscribe or spam report among them ("withdraw") is a statement the gateway lost.
WEBHOOK_EVENTS_REJECTED = Counter(
    "gateway_webhook_events_rejected_total",
    "ESP events acknowledged and not stored for a field no retry can fix, by what each "
    "would have done: withdraw (an unsubscribe or spam report lost), undeliverable, none.",
    ["source", "consequence"],
)
_CIRCUIT_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def record_circuit(upstream: str, state: BreakerState) -> None:
    CIRCUIT_STATE.labels(upstream).set(_CIRCUIT_VALUES[state])


def exposition(multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The text exposition format, merged over worker processes when they share a dir."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


# The event stream consumer (gateway/ingest/streams/): what it read, what became of it,
# how far the group is behind, and how long a batch takes from read to acknowledgement.
STREAM_CONSUMED = Counter(
    "gateway_stream_consumed_total", "Stream messages read by the consumer.", ["transport"]
)
STREAM_OUTCOMES = Counter(
    "gateway_stream_events_total",
    "Stream messages by outcome: stored, duplicate (messageId seen before), erased, "
    "no_consent, dead_lettered, retried.",
    ["transport", "outcome"],
)
STREAM_PENDING = Gauge(
    "gateway_stream_lag_entries",
    "Messages of the group not yet acknowledged: pending (delivered) or waiting.",
    ["transport", "state"],
    multiprocess_mode="max",
)
STREAM_OLDEST_AGE = Gauge(
    "gateway_stream_lag_oldest_seconds",
    "Age of the oldest message not yet acknowledged (0 when none).",
    ["transport"],
    multiprocess_mode="max",
)
STREAM_BATCH_SECONDS = Histogram(
    "gateway_stream_batch_duration_seconds",
    "One batch from read to acknowledgement: parse, transaction, ack.",
    ["transport"],
    buckets=_LATENCY_BUCKETS,
)


# The last warehouse export and retention run (gateway/export/, gateway/privacy/retention.py);
# `gateway export` writes them to GATEWAY_EXPORT_METRICS_FILE for a textfile collector.
EXPORT_ROWS = Gauge(
    "gateway_export_last_run_rows",
    "Rows the last export wrote, by table and operation (upsert or delete).",
    ["table", "op"],
    multiprocess_mode="mostrecent",
)
EXPORT_SECONDS = Gauge(
    "gateway_export_last_run_seconds",
    "How long the last export took.",
    multiprocess_mode="mostrecent",
)
EXPORT_FINISHED = Gauge(
    "gateway_export_last_run_finished_timestamp_seconds",
    "When the last export finished (Unix time).",
    multiprocess_mode="mostrecent",
)
RETENTION_ROWS = Gauge(
    "gateway_retention_last_run_rows",
    "What the last retention run removed (or would have, dry), by what and action.",
    ["what", "action", "dry_run"],
    multiprocess_mode="mostrecent",
)
RETENTION_FINISHED = Gauge(
    "gateway_retention_last_run_finished_timestamp_seconds",
    "When the last retention run finished (Unix time).",
    multiprocess_mode="mostrecent",
)


# What the upstreams announce of their rate limits (adapters/transport/telemetry.py):
# alert before the 429s start, when remaining / limit falls under a tenth.
UPSTREAM_QUOTA_REMAINING = Gauge(
    "gateway_upstream_quota_remaining",
    "Calls or points an upstream says are left, by quota (calls: Shopify's call limit, "
    "points: GraphQL throttleStatus, interval and daily: HubSpot's rate limits).",
    ["upstream", "quota"],
    multiprocess_mode="mostrecent",
)
UPSTREAM_QUOTA_LIMIT = Gauge(
    "gateway_upstream_quota_limit",
    "The size of that quota, as the upstream announced it.",
    ["upstream", "quota"],
    multiprocess_mode="mostrecent",
)
UPSTREAM_RETRY_AFTER = Counter(
    "gateway_upstream_retry_after_total",
    "Answers carrying Retry-After (a 429 or a 503), by upstream.",
    ["upstream"],
)
UPSTREAM_RETRY_AFTER_SECONDS = Gauge(
    "gateway_upstream_retry_after_seconds",
    "The last Retry-After an upstream asked for.",
    ["upstream"],
    multiprocess_mode="mostrecent",
)
# Schema drift (adapters/payload.py): the field path, never a value.
SCHEMA_DRIFT = Counter(
    "gateway_upstream_schema_drift_total",
    "Answers whose shape differed from the adapter's model, by field path and kind "
    "(missing, type, unknown; unreadable: a SOAP reply that no longer fits the WSDL).",
    ["upstream", "path", "kind"],
)

# Freshness: Unix times, so that an alert reads an age as time() - metric even while
# nothing happens (a stopped sync updates nothing).
UPSTREAM_LAST_SUCCESS = Gauge(
    "gateway_upstream_last_success_timestamp_seconds",
    "When an upstream last answered a fetch.",
    ["upstream"],
    multiprocess_mode="max",
)
SERVED_NEWEST = Gauge(
    "gateway_data_served_newest_timestamp_seconds",
    "When the newest upstream data this gateway served was fetched (a cached or stale "
    "answer is as old as its fetch).",
    ["upstream"],
    multiprocess_mode="max",
)
STORED_NEWEST = Gauge(
    "gateway_data_stored_newest_timestamp_seconds",
    "When the newest stored data of a kind arrived (events: webhook or stream; "
    "contacts: a sync's newest change), by source.",
    ["kind", "source"],
    multiprocess_mode="max",
)
SYNC_LAST_SUCCESS = Gauge(
    "gateway_sync_last_success_timestamp_seconds",
    "When a sync of the source last finished without failing.",
    ["source"],
    multiprocess_mode="max",
)
SYNC_RUNS = Counter(
    "gateway_sync_runs_total", "Sync runs by source and status (ok, failed).", ["source", "status"]
)
SYNC_MISMATCH = Gauge(
    "gateway_sync_reconciliation_difference",
    "The last sync's distinct ids read minus the upstream's own count (0: match).",
    ["source"],
    multiprocess_mode="mostrecent",
)
EXPORT_FAILURES = Counter(
    "gateway_export_failures_total",
    "Scheduled exports and retention runs that failed, by job.",
    ["job"],
)

"""Incremental sync: pull what each upstream changed since the last run, link it, record it.

For every enabled upstream with a change feed (CRM adapters' ``changed_since``) the
records modified at or after the stored cursor are read, validated and linked through
the identity ``Resolver`` in batches (each batch its own transaction), and the cursor
moves to the newest modification seen only after every batch has committed: a run
that fails half-way leaves the cursor where it was, and the next run re-reads the
window (linking is idempotent for a known source id).

Each source ends with a reconciliation: counts, and a sha256 over the sorted ids read
set beside the number of records the upstream says the window holds; each run is kept
with that line (``sync_runs``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.errors import UpstreamError
from adapters.protocols import Adapter, CrmAdapter
from adapters.records import CrmContact
from gateway.db.models import as_utc, utcnow
from gateway.db.sync_models import SyncCursor
from gateway.errors import InvalidInput
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.linkage.linker import tally
from gateway.identity.linkage.resolution import Resolver
from gateway.identity.records import PreparedRecord, RecordError, prepare
from gateway.identity.source_ids import DEFAULT_SOURCE_IDS, SourceIds
from gateway.ingest.importer import AfterCommit
from gateway.ingest.sync_runs import record_run
from gateway.observability import freshness, metrics
from gateway.privacy.suppressions import Suppressions
from gateway.privacy.tombstones import Tombstones

log = logging.getLogger(__name__)

# Before any upstream's data: the first run of a source reads everything it has.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
# HubSpot filters on epoch milliseconds with GTE: the next window starts one tick after
# the newest change read, so a run with no changes reads nothing.
_TICK = timedelta(milliseconds=1)
DEFAULT_BATCH_SIZE = 500


@dataclass(slots=True)
class SyncReport:
    """What one source's run did; ``line()`` is the reconciliation an operator reads."""

    source: str
    status: str = "ok"  # ok | failed | skipped
    detail: str = ""  # why skipped or failed: an error class or a sentence, never data
    read: int = 0
    created: int = 0  # new customers
    updated: int = 0  # a known source id seen again
    linked: int = 0  # joined an existing customer by rule or score
    review: int = 0  # possible matches left for a person
    rejected: int = 0
    erased: int = 0  # records of forgotten customers, skipped
    ids: set[str] = field(default_factory=set)
    upstream_total: int | None = None
    cursor_before: datetime | None = None
    cursor_after: datetime | None = None
    seconds: float = 0.0

    @property
    def checksum(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.ids)).encode()).hexdigest()

    @property
    def reconciled(self) -> str:
        if self.upstream_total is None:
            return "unverified"
        return "match" if self.upstream_total == len(self.ids) else "mismatch"

    def line(self) -> str:
        if self.status == "skipped":
            return f"{self.source}: skipped ({self.detail})"
        total = "n/a" if self.upstream_total is None else str(self.upstream_total)
        text = (
            f"{self.source}: read {self.read}, created {self.created}, updated {self.updated}, "
            f"linked {self.linked}, review {self.review}, rejected {self.rejected}, "
            f"erased {self.erased}; "
            f"ids sha256:{self.checksum[:16]} {len(self.ids)} distinct vs upstream total "
            f"{total}: {self.reconciled}"
        )
        if self.status == "failed":
            kept = self.cursor_before.isoformat() if self.cursor_before else "none"
            return f"{text}; FAILED ({self.detail}), cursor kept at {kept}"
        moved = self.cursor_after.isoformat() if self.cursor_after else "none"
        return f"{text}; cursor {moved}"


Progress = Callable[[SyncReport], None]


async def _upstream_total(adapter: CrmAdapter, since: datetime) -> int | None:
    """How many records the upstream says the window holds."""
    return await adapter.count_changed_since(since)


def _raw(contact: CrmContact) -> dict[str, Any]:
    born: date | None = contact.date_of_birth
    return {
        "external_id": contact.external_id,
        "email": contact.email,
        "phone": contact.phone,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "date_of_birth": born.isoformat() if born else None,
        "city": contact.city,
        "observed_at": contact.updated_at,
    }


async def load_cursor(sessions: async_sessionmaker[AsyncSession], source: str) -> datetime | None:
    async with sessions() as session:
        stored = await session.scalar(select(SyncCursor.cursor).where(SyncCursor.source == source))
    return as_utc(stored) if stored is not None else None


async def save_cursor(
    sessions: async_sessionmaker[AsyncSession], source: str, cursor: datetime
) -> None:
    async with sessions.begin() as session:
        row = await session.get(SyncCursor, source, with_for_update=True)
        if row is None:
            session.add(SyncCursor(source=source, cursor=cursor, updated_at=utcnow()))
        else:
            # Never backwards: a slow run must not undo a faster one's progress.
            row.cursor = max(as_utc(row.cursor), cursor)
            row.updated_at = utcnow()


class _SourceSync:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        resolver: Resolver,
        adapter: CrmAdapter,
        batch_size: int,
        tombstones: Tombstones | None = None,
        source_ids: SourceIds = DEFAULT_SOURCE_IDS,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self._after_commit = after_commit
        self._tombstones = tombstones
        self._source_ids = source_ids
        self._sessions = sessions
        self._resolver = resolver
        self._adapter = adapter
        self._batch_size = batch_size

    async def run(self, report: SyncReport) -> None:
        since = await load_cursor(self._sessions, report.source) or BEGINNING
        report.cursor_before = since
        # Counted before reading: a change landing mid-read shows up as a mismatch.
        report.upstream_total = await _upstream_total(self._adapter, since)
        newest: datetime | None = None
        batch: list[PreparedRecord] = []
        async for contact in self._adapter.changed_since(since):
            report.read += 1
            report.ids.add(contact.external_id)
            if contact.updated_at is not None:
                newest = max(newest or contact.updated_at, contact.updated_at)
            try:
                batch.append(
                    prepare(_raw(contact), report.source, self._resolver.config, self._source_ids)
                )
            except RecordError as exc:
                report.rejected += 1
                log.warning(
                    "sync record rejected",
                    extra={"source": report.source, "field": exc.field},
                )
                continue
            if len(batch) >= self._batch_size:
                await self._link(batch, report)
                batch = []
        if batch:
            await self._link(batch, report)
        if newest is not None:
            report.cursor_after = max(since, newest + _TICK)
            await save_cursor(self._sessions, report.source, report.cursor_after)
        else:
            report.cursor_after = since

    async def _link(self, batch: list[PreparedRecord], report: SyncReport) -> None:
        # Records of forgotten customers are counted and dropped, never re-created; checked
        # under the batch's key locks, so an erasure committing meanwhile is seen.
        screen = self._tombstones.unblocked if self._tombstones else None
        screened = await self._resolver.link_screened(batch, screen)
        report.erased += screened.dropped
        if self._after_commit is not None and screened.decisions:
            await self._after_commit(screened.decisions)
        tally(screened.decisions, report)


def _measured(report: SyncReport) -> None:
    """The run's metrics: its status, its reconciliation and, when it did not fail, its
    freshness (the time it finished, and the newest change it read)."""
    if report.status == "skipped":
        return
    metrics.SYNC_RUNS.labels(report.source, report.status).inc()
    if report.status != "ok":
        return
    freshness.synced(report.source)
    if report.upstream_total is not None:
        difference = len(report.ids) - report.upstream_total
        metrics.SYNC_MISMATCH.labels(report.source).set(difference)
    if report.cursor_after is not None and report.cursor_after != report.cursor_before:
        freshness.arrived("contacts", report.source, report.cursor_after.timestamp())


def _selected(adapters: Mapping[str, Adapter], sources: Sequence[str] | None) -> list[str]:
    if not sources:
        return list(adapters)
    unknown = [name for name in sources if name not in adapters]
    if unknown:
        raise InvalidInput(
            f"Unknown or disabled source {unknown[0]!r}; enabled: {', '.join(adapters) or 'none'}",
            field="source",
        )
    return list(dict.fromkeys(sources))


async def sync(
    sessions: async_sessionmaker[AsyncSession],
    adapters: Mapping[str, Adapter],
    sources: Sequence[str] | None = None,
    progress: Progress | None = None,
    *,
    config: IdentityConfig = DEFAULT_CONFIG,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tombstones: Tombstones | None = None,
    source_ids: SourceIds = DEFAULT_SOURCE_IDS,
    after_commit: AfterCommit | None = None,
) -> list[SyncReport]:
    """Sync each selected enabled upstream in turn; one report per source, in order.

    An upstream failure ends that source's run (cursor kept) and the others still run.
    A record whose id its upstream cannot have (``source_ids``) is rejected and counted.
    ``after_commit`` runs after each batch commits, with its decisions.
    """
    suppressions = Suppressions(tombstones) if tombstones else None
    resolver = Resolver(sessions, config, suppressions=suppressions)
    reports: list[SyncReport] = []
    for name in _selected(adapters, sources):
        adapter = adapters[name]
        report = SyncReport(source=name)
        started, started_at = time.perf_counter(), utcnow()
        if not isinstance(adapter, CrmAdapter):
            report.status = "skipped"
            report.detail = f"the {adapter.kind} adapter has no change feed"
        else:
            try:
                await _SourceSync(
                    sessions, resolver, adapter, batch_size, tombstones, source_ids, after_commit
                ).run(report)
            except UpstreamError as exc:
                report.status = "failed"
                report.detail = type(exc).__name__
        report.seconds = time.perf_counter() - started
        _measured(report)
        log.info(
            "sync finished",
            extra={
                "source": name,
                "status": report.status,
                # "created" is a LogRecord attribute: these keys must not collide with one.
                "records_read": report.read,
                "customers_created": report.created,
                "identities_updated": report.updated,
                "identities_linked": report.linked,
                "records_rejected": report.rejected,
                "reconciled": report.reconciled,
            },
        )
        # Kept for operators (the console's health page), the line as printed here.
        await record_run(
            sessions,
            source=name,
            status=report.status,
            reconciled=report.reconciled,
            line=report.line(),
            started_at=started_at,
        )
        if progress is not None:
            progress(report)
        reports.append(report)
    return reports

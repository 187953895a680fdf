"""Each sync run, kept: its source, outcome and reconciliation line, so an operator sees
the last runs (the console's health page) without the terminal that started them.

``sync`` records a run per source as it ends, whoever started it (``gateway sync``, a
test, a schedule later); one short transaction each, after the run's own batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import as_utc, utcnow
from gateway.db.sync_models import SyncCursor, SyncRun


@dataclass(frozen=True, slots=True)
class SyncRunRecord:
    source: str
    status: str  # ok | failed | skipped
    reconciled: str  # match | mismatch | unverified
    line: str
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class SyncState:
    """Where one source's change feed stands: its cursor and its last run, if kept."""

    source: str
    cursor: datetime | None
    cursor_updated_at: datetime | None
    last_run: SyncRunRecord | None


async def record_run(
    sessions: async_sessionmaker[AsyncSession],
    *,
    source: str,
    status: str,
    reconciled: str,
    line: str,
    started_at: datetime,
) -> None:
    async with sessions.begin() as session:
        session.add(
            SyncRun(
                source=source,
                status=status,
                reconciled=reconciled,
                line=line,
                started_at=started_at,
                finished_at=utcnow(),
            )
        )


async def sync_states(sessions: async_sessionmaker[AsyncSession]) -> list[SyncState]:
    """Every source with a cursor or a recorded run: its cursor and its newest run."""
    newest = (
        select(SyncRun.source, func.max(SyncRun.id).label("id")).group_by(SyncRun.source).subquery()
    )
    async with sessions() as session:
        runs = {
            row.source: row
            for row in await session.scalars(
                select(SyncRun).join(newest, SyncRun.id == newest.c.id)
            )
        }
        cursors = {row.source: row for row in await session.scalars(select(SyncCursor))}
    states = []
    for source in sorted(runs.keys() | cursors.keys()):
        run, cursor = runs.get(source), cursors.get(source)
        states.append(
            SyncState(
                source,
                as_utc(cursor.cursor) if cursor else None,
                as_utc(cursor.updated_at) if cursor else None,
                SyncRunRecord(
                    run.source,
                    run.status,
                    run.reconciled,
                    run.line,
                    as_utc(run.started_at),
                    as_utc(run.finished_at),
                )
                if run
                else None,
            )
        )
    return states

"""The audit log: which key read or changed which customer, when; never the data.

An ESP's send reads thousands of customers a minute, so reads are not written one
row per request: entries gather in memory and are written in bulk every
``flush_interval_s`` and on shutdown (gateway/row_buffer.py). Changes go through the
same path; the write they audit has already committed by then. A crash can lose at
most the last interval's entries, which is the trade every high-volume access log makes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gateway.db.bulk import insert_tuples, is_postgres
from gateway.db.models import AuditEntry, utcnow
from gateway.row_buffer import RowBuffer

logger = logging.getLogger("gateway.audit")
_MAX_BUFFER = 50_000  # beyond this the oldest unwritten entries are dropped, and logged
# Rows per step on SQLite. A second of an ESP's send (2,000 reads a worker) written in
# one step stalled every request in flight by 10-30 ms once a second. In chunks the loop
# serves requests between them.
_CHUNK = 500
_TABLE = cast(Table, AuditEntry.__table__)
# On Postgres, COPY: about a microsecond a row, against ~16 for a bound INSERT row
# (a 1,000-customer segment page cost 16 ms of the loop's time to audit). Chunks keep
# each step of the loop short all the same.
_COPY_CHUNK = 2000
_COPY_COLUMNS = ("occurred_at", "actor", "operation", "customer_id", "details")


class Action(StrEnum):
    READ = "read"
    CHANGE = "change"
    EXPORT = "export"
    ERASE = "erase"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    occurred_at: datetime
    actor: str
    key_id: str | None
    action: str
    operation: str
    customer_id: uuid.UUID | None


class AuditLog:
    """Buffered writer and reader of ``audit_log`` rows."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], flush_interval_s: float = 1.0
    ) -> None:
        self._sessions = sessions
        self._buffer: RowBuffer[dict[str, Any]] = RowBuffer(
            self._write,
            name="audit",
            logger=logger,
            interval_s=flush_interval_s,
            max_rows=_MAX_BUFFER,
        )

    def record(
        self,
        *,
        actor: str,
        key_id: str | None,
        action: Action,
        operation: str,
        customer_ids: Iterable[uuid.UUID | None],
    ) -> None:
        """Queue one entry per customer (None: an operation on no one customer); returns
        at once (the hot path calls this)."""
        now = utcnow()
        details = {"action": action.value, "key_id": key_id}
        self._buffer.add(
            {
                "occurred_at": now,
                "actor": actor,
                "operation": operation,
                "customer_id": customer_id,
                "details": details,
            }
            for customer_id in customer_ids
        )

    def record_run(self, *, actor: str, key_id: str | None, action: Action, operation: str) -> None:
        """Queue one entry for an operation on no one customer (an export, a retention
        run), so who started it is on record too."""
        self.record(
            actor=actor, key_id=key_id, action=action, operation=operation, customer_ids=(None,)
        )

    async def flush(self) -> None:
        """Write everything queued so far."""
        await self._buffer.flush()

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        async with self._sessions.begin() as session:
            connection = await session.connection()
            if is_postgres(connection):
                await _copy(connection, batch)
                return
            # Multi-row statements (gateway/db/bulk.py), a few hundred rows a trip to
            # the driver, in chunks so that the loop serves requests between them.
            for start in range(0, len(batch), _CHUNK):
                await insert_tuples(
                    connection,
                    _TABLE,
                    _COPY_COLUMNS,
                    [
                        (
                            e["occurred_at"],
                            e["actor"],
                            e["operation"],
                            e["customer_id"],
                            e["details"],
                        )
                        for e in batch[start : start + _CHUNK]
                    ],
                )

    async def aclose(self) -> None:
        """Write everything recorded so far; a write already under way finishes first."""
        await self._buffer.aclose()

    async def query(
        self,
        *,
        customer_id: uuid.UUID | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> Sequence[AuditRecord]:
        """Newest first. Entries still in the buffer are written first, so a reader sees
        its own instance's latest activity."""
        await self.flush()
        statement = select(AuditEntry).order_by(AuditEntry.occurred_at.desc(), AuditEntry.id.desc())
        if customer_id is not None:
            statement = statement.where(AuditEntry.customer_id == customer_id)
        if actor is not None:
            statement = statement.where(AuditEntry.actor == actor)
        if since is not None:
            # In UTC, as stored: SQLite compares the text and ignores an offset.
            statement = statement.where(AuditEntry.occurred_at >= _utc(since))
        async with self._sessions() as session:
            rows = await session.scalars(statement.limit(limit))
            return [
                AuditRecord(
                    occurred_at=_utc(row.occurred_at),
                    actor=row.actor,
                    key_id=(row.details or {}).get("key_id"),
                    action=(row.details or {}).get("action", Action.CHANGE.value),
                    operation=row.operation,
                    customer_id=row.customer_id,
                )
                for row in rows
            ]


def _utc(stamp: datetime) -> datetime:
    """Aware UTC; a naive time (as SQLite hands back) is UTC already."""
    return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)


async def _copy(connection: AsyncConnection, batch: list[dict[str, Any]]) -> None:
    """The entries COPYed; each call's details (one dict for all its customers) turned
    into JSON once."""
    texts: dict[int, str] = {}
    rows = []
    for entry in batch:
        details = entry["details"]
        text = texts.get(id(details))
        if text is None:
            text = texts[id(details)] = json.dumps(details)
        rows.append(
            (entry["occurred_at"], entry["actor"], entry["operation"], entry["customer_id"], text)
        )
    for start in range(0, len(rows), _COPY_CHUNK):
        await insert_tuples(connection, _TABLE, _COPY_COLUMNS, rows[start : start + _COPY_CHUNK])

"""The audit log: which key read or changed which customer, when; never the data.

An ESP's send reads thousands of customers a minute, so reads are not written one
row per request: entries gather in memory and are written in bulk every
``flush_interval_s`` and on shutdown (gateway/row_buffer.py). Changes go through the
same path; the write they audit has already committed by then. A crash can lose at
most the last interval's entries, which is the trade every high-volume access log makes.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gateway.db.bulk import insert_selected, insert_tuples, is_postgres, sqlite_utc_text, utc_of_ns
from gateway.db.models import AuditEntry
from gateway.row_buffer import RowBuffer

logger = logging.getLogger("gateway.audit")
_MAX_BUFFER = 50_000  # beyond this the oldest unwritten entries are dropped, and logged
# Entries a statement on SQLite: their values bound as queued, in the driver's thread.
_CHUNK = 2000
_TABLE = cast(Table, AuditEntry.__table__)
# On Postgres, COPY: about a microsecond a row, against ~16 for a bound INSERT row
# (a 1,000-customer segment page cost 16 ms of the loop's time to audit). Chunks keep
# each step of the loop short all the same.
_COPY_CHUNK = 2000
_COPY_COLUMNS = ("occurred_at", "actor", "operation", "customer_id", "details")
_T = TypeVar("_T")

# A queued entry: (the clock's time in nanoseconds, actor, operation, the customer's
# UUID as 32 hex digits or None, action, key id). Strings and numbers only, made on the
# hot path (every read is audited) without a datetime or a dict, and nothing the garbage
# collector follows once collected. The writer makes the row of it: on SQLite in
# SQLite's own code (_SELECTED), as the impressions writer does.
_Entry = tuple[int, str, str, str | None, str, str | None]
_ENTRY_VALUES = 6

# What each column stores on SQLite, as SQLAlchemy stores it, from an entry's values
# (bound in order as column1..column6): a UTC time as ``YYYY-MM-DD HH:MM:SS.ffffff``, a
# UUID as its 32 hex digits, the details as JSON text. Bound a value at a time through
# each type's processor, as before 7d49a51, an entry cost ~16 us of the event loop's
# thread, and the writes stalled the requests in flight at every 500 (bench/impressions:
# a saturated endpoint's reads wrote ~45 % of the wall time); read from one JSON array
# by json_each, as after, ~4 us of SQLite's parsing an entry.
_SELECTED = (
    sqlite_utc_text("column1"),
    "column2",
    "column3",
    "column4",
    "json_object('action', column5, 'key_id', column6)",
)


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
        self._buffer: RowBuffer[_Entry] = RowBuffer(
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
        now = time.time_ns()
        done = action.value
        self._buffer.add(
            (now, actor, operation, None if customer is None else customer.hex, done, key_id)
            for customer in customer_ids
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

    async def _write(self, batch: list[_Entry]) -> None:
        try:
            await self._write_all(batch)
        except UnicodeEncodeError:
            # Text with a lone surrogate neither database can store (the driver refuses
            # to encode it; nothing of the batch is kept: its transaction is rolled
            # back): the batch again with "?" in its place, rather than refused on
            # every retry.
            await self._write_all(_replaced(batch))

    async def _write_all(self, batch: Sequence[_Entry]) -> None:
        async with self._sessions.begin() as session:
            connection = await session.connection()
            if is_postgres(connection):
                await _copy(connection, batch)
            else:
                values = list(itertools.chain.from_iterable(batch))
                await insert_selected(
                    connection,
                    _TABLE,
                    _COPY_COLUMNS,
                    _SELECTED,
                    values,
                    width=_ENTRY_VALUES,
                    most=_CHUNK,
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


async def _copy(connection: AsyncConnection, batch: Sequence[_Entry]) -> None:
    """The entries COPYed; the details of each (action, key) turned into JSON once."""
    texts: dict[tuple[str, str | None], str] = {}
    rows = []
    for moment, actor, operation, customer, action, key_id in batch:
        text = texts.get((action, key_id))
        if text is None:
            text = texts[action, key_id] = json.dumps({"action": action, "key_id": key_id})
        rows.append((utc_of_ns(moment), actor, operation, customer, text))
    for start in range(0, len(rows), _COPY_CHUNK):
        await insert_tuples(connection, _TABLE, _COPY_COLUMNS, rows[start : start + _COPY_CHUNK])


def _replaced(entries: Sequence[_Entry]) -> list[_Entry]:
    return [cast(_Entry, tuple(map(_text, entry))) for entry in entries]


def _text(value: _T) -> _T:
    if isinstance(value, str):
        return cast(_T, value.encode("utf-8", "replace").decode("utf-8"))
    return value

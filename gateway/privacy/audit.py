"""The audit log: which key read or changed which customer, when; never the data.

An ESP's send reads thousands of customers a minute, so reads are not written one
row per request: entries gather in memory and are written in bulk every
``flush_interval_s`` and on shutdown (gateway/row_buffer.py). Changes go through the
same path; the write they audit has already committed by then. A crash can lose at
most the last interval's entries, which is the trade every high-volume access log makes.

A write that fails is retried with its batch (the buffer keeps it), and a failure may
come after the commit went through: a connection lost with COMMIT's reply. Each entry
therefore carries an id made when it is queued, unique in the table (migration 0031), and
a write stores only the entries not stored yet: on SQLite each statement skips them
(``ON CONFLICT DO NOTHING``); on Postgres COPY, which cannot skip, is refused by the
index, and the batch is then inserted skipping them.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar, cast

from asyncpg.exceptions import UniqueViolationError
from sqlalchemy import Table, select, text
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
_COPY_COLUMNS = ("occurred_at", "actor", "operation", "customer_id", "details", "entry_id")
# The entries already stored skipped, through the partial unique index of the ids
# (``ux_audit_log_entry_id``; an arbiter that is partial is named with its condition).
_SKIP_STORED = "ON CONFLICT (entry_id) WHERE entry_id IS NOT NULL DO NOTHING"
_T = TypeVar("_T")

# A queued entry: (the clock's time in nanoseconds, actor, operation, the customer's
# UUID as 32 hex digits or None, action, key id, the entry's number). Strings and
# numbers only, made on the hot path (every read is audited) without a datetime or a
# dict, and nothing the garbage collector follows once collected. The writer makes the
# row of it: on SQLite in SQLite's own code (_SELECTED), as the impressions writer does.
#
# The entry's id is its log's 64 random bits (made once) then its number from a counter:
# queuing an entry of a 1,000-customer read cost ~210 ns before it, ~230 with it (a
# ``uuid4`` an entry is ~3.5 us on this machine, and its random ids would scatter the
# index's inserts over the whole of it, where these go to the right end of each log's
# range). Two logs (workers, restarts) share ids only if their 64 random bits agree.
_Entry = tuple[int, str, str, str | None, str, str | None, int]
_ENTRY_VALUES = 7

# What each column stores on SQLite, as SQLAlchemy stores it, from an entry's values
# (bound in order as column1..column7; the id's expression is the log's, see AuditLog):
# a UTC time as ``YYYY-MM-DD HH:MM:SS.ffffff``, a UUID as its 32 hex digits, the
# details as JSON text. Bound a value at a time through
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
# Postgres, when COPY found entries stored already: the rows inserted from one array a
# column, skipping those (one statement; a rare path, after a lost reply).
_INSERT_UNLESS_STORED = (
    "INSERT INTO audit_log (occurred_at, actor, operation, customer_id, details, entry_id)"
    " SELECT * FROM unnest(CAST(:at AS timestamptz[]), CAST(:actor AS varchar[]),"
    " CAST(:operation AS varchar[]), CAST(:customer AS uuid[]), CAST(:details AS json[]),"
    f" CAST(:entry AS uuid[])) {_SKIP_STORED}"
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
        # The entries' ids: this log's random half, and a number each (see _Entry); an
        # entry's id is the 128-bit integer ``_id_base + number``.
        self._id_base = secrets.randbits(64) << 64
        self._numbers = itertools.count()
        # SQLite makes an entry's id (32 hex digits, as a UUID column stores it) of its
        # number: ``printf`` takes it as a 64-bit integer.
        prefix = f"{self._id_base >> 64:016x}"
        self._selected = (*_SELECTED, f"'{prefix}' || printf('%016x', column7)")
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
            (now, actor, operation, None if customer is None else customer.hex, done, key_id, n)
            for customer, n in zip(customer_ids, self._numbers)  # noqa: B905 (count is endless)
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
        try:
            async with self._sessions.begin() as session:
                connection = await session.connection()
                if is_postgres(connection):
                    await _copy(connection, _rows(batch, self._id_base))
                else:
                    values = list(itertools.chain.from_iterable(batch))
                    await insert_selected(
                        connection,
                        _TABLE,
                        _COPY_COLUMNS,
                        self._selected,
                        values,
                        width=_ENTRY_VALUES,
                        most=_CHUNK,
                        conflict=_SKIP_STORED,
                    )
        except UniqueViolationError:
            # Postgres: entries of the batch stored already, by an earlier write of it
            # whose commit went through unacknowledged (nothing of this one was kept:
            # its transaction is rolled back). The batch again, without them; COPY stays
            # the write of every other time, the cheapest there is.
            logger.warning("audit entries stored by an earlier write not written again")
            async with self._sessions.begin() as session:
                connection = await session.connection()
                await _insert_unless_stored(connection, _rows(batch, self._id_base))

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


_Row = tuple[datetime, str, str, str | None, str, str]


def _rows(batch: Sequence[_Entry], id_base: int) -> list[_Row]:
    """The entries as Postgres rows (``_COPY_COLUMNS``); the details of each (action,
    key) turned into JSON once, the id's 32 hex digits made of the entry's number (by
    ``to_bytes().hex()``: ~90 ns, against ~165 for a formatted string)."""
    texts: dict[tuple[str, str | None], str] = {}
    rows = []
    for moment, actor, operation, customer, action, key_id, number in batch:
        details = texts.get((action, key_id))
        if details is None:
            details = texts[action, key_id] = json.dumps({"action": action, "key_id": key_id})
        entry_id = (id_base + number).to_bytes(16, "big").hex()
        rows.append((utc_of_ns(moment), actor, operation, customer, details, entry_id))
    return rows


async def _copy(connection: AsyncConnection, rows: Sequence[_Row]) -> None:
    for start in range(0, len(rows), _COPY_CHUNK):
        await insert_tuples(connection, _TABLE, _COPY_COLUMNS, rows[start : start + _COPY_CHUNK])


async def _insert_unless_stored(connection: AsyncConnection, rows: Sequence[_Row]) -> None:
    for start in range(0, len(rows), _COPY_CHUNK):
        columns = list(zip(*rows[start : start + _COPY_CHUNK], strict=True))
        names = ("at", "actor", "operation", "customer", "details", "entry")
        await connection.execute(
            text(_INSERT_UNLESS_STORED), dict(zip(names, map(list, columns), strict=True))
        )


def _replaced(entries: Sequence[_Entry]) -> list[_Entry]:
    return [cast(_Entry, tuple(map(_text, entry))) for entry in entries]


def _text(value: _T) -> _T:
    if isinstance(value, str):
        return cast(_T, value.encode("utf-8", "replace").decode("utf-8"))
    return value

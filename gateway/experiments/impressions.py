"""Every served recommendation list, recorded without a round trip per request.

Serving queues a plain tuple (list id, customer, the clock's time, strategy, experiment
and variant, send, product ids) and returns: no datetime, no JSON, no object per item on
the request path. The rows are made of them and written in bulk every
``flush_interval_s`` through the same buffer as the audit log (gateway/row_buffer.py).
Every request served leaves a row, so the write is the cheapest the database offers:
COPY on Postgres, and on SQLite driver-level inserts of 1,000 rows a statement that
turn raw values into the forms SQLAlchemy stores (a UUID's 32 hex digits, a UTC time as
``YYYY-MM-DD HH:MM:SS.ffffff``, JSON text) in SQLite's own code. A customer erased
(or merged away) between serving and the write leaves a row the foreign key refuses:
the batch is then written without that customer's rows, rather than retried for ever.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple, cast

import orjson
from asyncpg.exceptions import IntegrityConstraintViolationError
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gateway.db.bulk import insert_tuples, is_postgres
from gateway.db.models import Customer
from gateway.db.recommendation_models import RecommendationImpression
from gateway.row_buffer import RowBuffer

logger = logging.getLogger("gateway.impressions")
_IDS_PER_QUERY = 500
# Rows per SQLite statement (9,000 parameters; SQLite allows 32,766 since 3.32, 999
# before). Each statement is a trip to the driver's thread and back (~150 us of CPU): at
# 100 rows a statement that was ~1.5 us a row, a third of the writer's cost.
_ROWS = 1000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 100
_REST = (512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
_TABLE = cast(Table, RecommendationImpression.__table__)
SURFACES = ("graphql", "api", "render")


class Impression(NamedTuple):
    """One served list, in the table's column order; serving queues it as a plain tuple
    of these fields (the cheapest value to build), ``served_at`` as ``time.time()``."""

    list_id: str
    customer_id: uuid.UUID
    served_at: float
    surface: str
    strategy: str
    experiment: str | None
    variant: str | None
    send_id: str | None
    items: tuple[str, ...]


# What serving queues: the fields of an ``Impression``, as a plain tuple.
_Row = tuple[str, uuid.UUID, float, str, str, str | None, str | None, str | None, tuple[str, ...]]
_COLUMNS = Impression._fields  # the table's columns, in the tuple's order


class ImpressionLog:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        flush_interval_s: float = 1.0,
        *,
        enabled: bool = True,
    ) -> None:
        self._sessions = sessions
        self.enabled = enabled
        self._buffer: RowBuffer[Impression | _Row] = RowBuffer(
            self._write, name="impressions", logger=logger, interval_s=flush_interval_s
        )

    def record(self, impression: Impression | _Row) -> None:
        """Queue one served list (an ``Impression`` or a tuple of its fields); returns
        at once."""
        if self.enabled:
            self._buffer.append(impression)

    async def flush(self) -> None:
        """Write everything queued so far (results read after this see this process's)."""
        await self._buffer.flush()

    async def aclose(self) -> None:
        await self._buffer.aclose()

    async def _write(self, batch: list[Impression | _Row]) -> None:
        try:
            await self._insert(batch)
        except (IntegrityError, IntegrityConstraintViolationError):
            # A customer gone since: keep the rows of those still stored.
            kept = await self._of_existing(batch)
            if len(kept) < len(batch):
                logger.info(
                    "impressions of customers erased or merged meanwhile not written",
                    extra={"dropped": len(batch) - len(kept)},
                )
            await self._insert(kept)

    async def _insert(self, batch: Sequence[Impression | _Row]) -> None:
        if not batch:
            return
        async with self._sessions.begin() as session:
            connection = await session.connection()
            if is_postgres(connection):
                await insert_tuples(connection, _TABLE, _COLUMNS, [_postgres(i) for i in batch])
            else:
                await _sqlite(connection, batch)

    async def _of_existing(self, batch: Sequence[Impression | _Row]) -> list[Impression | _Row]:
        ids = list({row[1] for row in batch})
        found: set[uuid.UUID] = set()
        async with self._sessions() as session:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                part = ids[start : start + _IDS_PER_QUERY]
                found.update(
                    await session.scalars(select(Customer.id).where(Customer.id.in_(part)))
                )
        return [row for row in batch if row[1] in found]


def _postgres(row: Impression | _Row) -> tuple[object, ...]:
    # COPY takes the values as they are, but a time as a datetime and a json column its text.
    list_id, customer, moment, *rest, items = row
    stamp = datetime.fromtimestamp(moment, UTC)
    return (list_id, customer, stamp, *rest, orjson.dumps(items).decode())


async def _sqlite(connection: AsyncConnection, batch: Sequence[Impression | _Row]) -> None:
    dumps = orjson.dumps
    # Many rows a statement, not an executemany of one row each: the driver lets go of
    # the GIL around every step of a statement, and each step of an executemany then
    # waited for the busy event loop to hand it back (two thread switches a row).
    # Statements of _ROWS rows, then the rest in halving sizes: a few statement texts,
    # all in the driver's statement cache. Each statement's values are made just before
    # it runs, straight into its flat list of parameters: the loop is held a statement's
    # rows at a time, and no tuple is made per row. The values go in raw (the id's 16
    # bytes, the time in whole microseconds, the items' JSON as bytes) and the statement
    # makes the stored forms (_statement): that work is SQLite's, in the driver's thread
    # without the GIL, not the serving loop's (1.9 us a row of the loop's time before).
    position = 0
    for size in (_ROWS, *_REST):
        while len(batch) - position >= size:
            flat: list[object] = []
            for (
                list_id,
                customer,
                moment,
                surface,
                strategy,
                experiment,
                variant,
                send,
                items,
            ) in batch[position : position + size]:
                # Whole seconds, then the fraction's microseconds rounded half to even:
                # as datetime.fromtimestamp (SQLAlchemy's time) rounds, to the
                # microsecond (round(moment * 1e6) is a microsecond off at times).
                whole = int(moment)
                flat += (
                    list_id,
                    customer.bytes,
                    whole * 1_000_000 + round((moment - whole) * 1_000_000),
                    surface,
                    strategy,
                    experiment,
                    variant,
                    send,
                    dumps(items),
                )
            await connection.exec_driver_sql(_statement(size), tuple(flat))
            position += size


@functools.cache
def _statement(rows: int) -> str:
    """An insert of ``rows`` rows of raw values, stored as SQLAlchemy stores them on
    SQLite: a UUID as 32 lowercase hex digits, a UTC time as ``YYYY-MM-DD
    HH:MM:SS.ffffff``, JSON as text."""
    one = f"({', '.join('?' * len(_COLUMNS))})"
    stored = (
        "column1",
        "lower(hex(column2))",
        "strftime('%Y-%m-%d %H:%M:%S', column3 / 1000000, 'unixepoch')"
        " || printf('.%06d', column3 % 1000000)",
        "column4",
        "column5",
        "column6",
        "column7",
        "column8",
        "CAST(column9 AS TEXT)",
    )
    return (
        f"INSERT INTO {_TABLE.name} ({', '.join(_COLUMNS)}) "
        f"SELECT {', '.join(stored)} FROM (VALUES {', '.join([one] * rows)})"
    )

"""The export's SQL: cursors, the end of a run's window, the rows changed in a window (as
Arrow batches), the rows deleted in it, and the live ids a reconciliation compares.

A window is ``lo <= changed_at < hi``.  ``hi`` is chosen so that every row stamped before
it is already committed: on Postgres ``changed_at`` is the writing transaction's start,
so ``hi`` is the oldest start of a transaction still open (or now); on SQLite the one
write lock is taken for an instant, so no writer is half way.  A row committed later is
stamped at or after ``hi`` and falls in the next window; none is lost or taken twice.

Postgres rows come as Arrow batches through ADBC (``gateway.export.postgres``: a binary
COPY decoded in C++); SQLite rows (and Postgres's where ADBC is missing) through the
SQLAlchemy driver, turned into Arrow a batch at a time.  Both give the same Arrow types
(``tables.ARROW_TYPES``) and the same values: a test holds them to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.export_models import ExportCursor, ExportDeletion
from gateway.db.locks import committed_before, run_lock
from gateway.db.models import utcnow
from gateway.export import postgres
from gateway.export.deletions import logged_deletions
from gateway.export.tables import ANALYTICS, ARROW_TYPES, Kind, TableSpec
from gateway.export.threads import off_loop

logger = logging.getLogger("gateway.export")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Consumer = Callable[[pa.RecordBatch], None]
BATCH_ROWS = 100_000
# A window this big is read through ADBC; a smaller one (an incremental run's) through
# the driver, faster than the fast path's connection is set up.
FAST_FROM_ROWS = 20_000
# The flag ``changed_query`` adds to the events it reads for upserts and deletions at once.
EXPORTED = "_exported"
_TOMBSTONE = ["id", "changed_at"]
_GRANTED = f"SELECT customer_id FROM consents WHERE purpose = '{ANALYTICS}' AND granted = true"


def _sqlite_expr(name: str, kind: Kind) -> str:
    """SQLite's column as Arrow reads it."""
    if kind is Kind.TIME:
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's format, and the triggers').
        # The whole seconds without the fraction: SQLite keeps milliseconds, and rounded
        # .999500 up into the next second.
        seconds = f"CAST(strftime('%s', substr({name}, 1, 19)) AS INTEGER) * 1000000"
        return f"{seconds} + CAST(substr({name}, 21, 6) AS INTEGER)"
    if kind is Kind.UUID:  # 32 hex digits: the dashed form Postgres answers
        parts = " || '-' || ".join(
            f"substr({name}, {a}, {n})" for a, n in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
        )
        return f"CASE WHEN {name} IS NULL THEN NULL ELSE lower({parts}) END"
    return name


def _postgres_expr(name: str, kind: Kind, driver: bool) -> str:
    """Postgres's column as Arrow reads it: uuids and JSON as their text (ADBC would
    answer 16 bytes and an extension type, the driver a UUID and a parsed dict); for
    the driver, times as microseconds since the epoch (exact: ``extract`` answers a
    numeric since Postgres 14): asyncpg made a timezone-aware datetime of each, and
    Arrow read them back, two thirds of the CPU of a small window's events."""
    if kind is Kind.TIME and driver:
        return f"(extract(epoch from {name}) * 1000000)::int8"
    return f"{name}::text" if kind in (Kind.UUID, Kind.JSON) else name


def _read_type(kind: Kind) -> pa.DataType:
    """The Arrow type the driver's values are read as (times as microseconds, cast
    afterwards)."""
    return pa.int64() if kind is Kind.TIME else ARROW_TYPES[kind]


def conform(batch: pa.RecordBatch, spec: TableSpec) -> pa.RecordBatch:
    """The batch in the table's Arrow types (the driver's microseconds as UTC timestamps,
    Postgres's int4 as int64)."""
    arrays = []
    for column in spec.columns:
        array = batch.column(column.name)
        wanted = ARROW_TYPES[column.kind]
        arrays.append(array if array.type == wanted else array.cast(wanted))
    return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in spec.columns])


@dataclass(frozen=True, slots=True)
class Survey:
    """What a run learns of its windows before it reads them."""

    large: dict[str, bool]  # read through the fast path, in a lane
    deleted: dict[str, pa.Table]  # ``id`` and ``changed_at`` of each table's deletions


class ExportStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        fast_from: int | None = FAST_FROM_ROWS,
        fast_uri: str | None = None,
    ) -> None:
        """``fast_from``: on Postgres a window of at least this many rows is read through
        ADBC (None: never; the tests compare the two paths), connecting to ``fast_uri``
        (a libpq URI; default: the engine's database)."""
        self._engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._fast_from = fast_from
        fast = self.postgres and fast_from is not None and postgres.available()
        uri = fast_uri or postgres.libpq_uri(engine.url)
        self._arrow = postgres.ArrowReader(uri) if fast else None

    def close(self) -> None:
        """Close the fast path's connections (the end of a run)."""
        if self._arrow is not None:
            self._arrow.close()

    # --- cursors and windows ---------------------------------------------------------

    async def cursors(self, target: str) -> dict[str, datetime]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(ExportCursor.table_name, ExportCursor.cursor).where(
                    ExportCursor.target == target
                )
            )
            return {row[0]: row[1] for row in rows}

    async def advance(self, target: str, cursors: Mapping[str, datetime], run_id: str) -> None:
        """Move ``target``'s cursors of these tables, and forget the deletions every
        target's cursor has passed: one transaction (one commit) for the whole run."""
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(ExportCursor).where(
                    ExportCursor.target == target, ExportCursor.table_name.in_(list(cursors))
                )
            )
            await connection.execute(
                insert(ExportCursor),
                [
                    {
                        "target": target,
                        "table_name": table,
                        "cursor": cursor,
                        "run_id": run_id,
                        "updated_at": utcnow(),
                    }
                    for table, cursor in cursors.items()
                ],
            )
            # Every table at once: a deletion goes when each target's cursor is past it.
            passed = (
                select(func.min(ExportCursor.cursor))
                .where(ExportCursor.table_name == ExportDeletion.table_name)
                .scalar_subquery()
            )
            await connection.execute(
                delete(ExportDeletion).where(ExportDeletion.deleted_at < passed)
            )

    async def reset(self, target: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(ExportCursor).where(ExportCursor.target == target))

    def exclusive(self, target: str) -> contextlib.AbstractAsyncContextManager[bool]:
        """Whether this caller is the only exporter into ``target`` now (across instances
        on Postgres: ``gateway.db.locks``)."""
        return run_lock(self._engine, f"export:{target}")

    async def window_end(self) -> datetime:
        """Before this moment every stamped row is committed (see the module's doc)."""
        return await committed_before(self._engine)

    # --- changed rows ----------------------------------------------------------------

    def _expr(self, name: str, kind: Kind, driver: bool = False) -> str:
        return _postgres_expr(name, kind, driver) if self.postgres else _sqlite_expr(name, kind)

    def _select(
        self, spec: TableSpec, where: str, driver: bool, *, joined: str = "", flag: str = ""
    ) -> str:
        table = spec.name
        columns = ", ".join(
            f"{self._expr(f'{table}.{c.name}', c.kind, driver)} AS {c.name}" for c in spec.columns
        )
        flagged = f", {flag} AS {EXPORTED}" if flag else ""
        return f"SELECT {columns}{flagged} FROM {table}{joined} WHERE {where}"

    def _literal(self, moment: datetime) -> str:
        if self.postgres:
            return f"'{moment.astimezone(UTC).isoformat()}'::timestamptz"
        return f"'{moment.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}'"

    def changed_query(
        self,
        spec: TableSpec,
        lo: datetime,
        hi: datetime,
        *,
        flagged: bool = False,
        driver: bool = False,
    ) -> str:
        """The rows of ``spec`` to upsert for the window (events: only with consent, and
        all of a customer's events once they grant it).  ``flagged`` (events): every
        event of the window instead, with ``EXPORTED`` false for those without consent,
        which leave the export: one pass over the window for both.  ``driver``: the
        columns as the driver path reads them (``_postgres_expr``)."""
        low, high = self._literal(lo), self._literal(hi)
        window = f"events.changed_at >= {low} AND events.changed_at < {high}"
        if spec.name != "events":
            return self._select(spec, window.replace("events.", f"{spec.name}."), driver)
        newly = f"{_GRANTED} AND changed_at >= {low} AND changed_at < {high}"
        older = self._select(
            spec,
            f"events.changed_at < {low} AND events.customer_id IN ({newly})",
            driver,
            flag="true" if flagged else "",
        )
        if not flagged:
            return (
                self._select(spec, f"{window} AND events.customer_id IN ({_GRANTED})", driver)
                + f" UNION ALL {older}"
            )
        # One consent row at most (unique per customer and purpose): no event twice.
        joined = (
            f" LEFT JOIN consents ON consents.customer_id = events.customer_id AND "
            f"consents.purpose = '{ANALYTICS}' AND consents.granted = true"
        )
        flag = "consents.customer_id IS NOT NULL"
        return self._select(spec, window, driver, joined=joined, flag=flag) + f" UNION ALL {older}"

    async def changed(
        self,
        spec: TableSpec,
        lo: datetime,
        hi: datetime,
        consume: Consumer,
        *,
        large: bool | None = None,
        unexported: list[pa.Table] | None = None,
    ) -> int:
        """Hand the window's rows to ``consume`` in batches, in a worker thread; the number
        of rows.  ``large``: whether it is a window for the fast path (``survey``), if
        known.  ``unexported`` (events): gets the ``id`` and ``changed_at`` of the window's
        events no longer exported, found in the same pass (``changed_query``)."""
        flagged = unexported is not None and spec.name == "events"
        handed = 0

        def take(batch: pa.RecordBatch) -> None:
            nonlocal handed
            rows = conform(batch, spec)
            exported = batch.column(EXPORTED) if flagged else None
            # Filtered only when some leave: a filter copies every column of the batch.
            if unexported is not None and exported is not None and not pc.all(exported).as_py():
                gone = rows.filter(pc.invert(exported))
                unexported.append(pa.Table.from_batches([gone.select(_TOMBSTONE)]))
                rows = rows.filter(exported)
            if rows.num_rows:
                handed += rows.num_rows
                consume(rows)

        if large is None and self._arrow is not None:
            large = (await self.survey({spec.name: (lo, hi)}, deletions=False)).large[spec.name]
        if self._arrow is not None and large:
            try:
                await self._arrow.read(self.changed_query(spec, lo, hi, flagged=flagged), take)
                return handed
            except postgres.FastPathUnavailable as exc:
                logger.warning(
                    "export: ADBC could not connect (%s); reading through the driver", exc
                )
                self._arrow = None  # for this store's later reads too
        query = self.changed_query(spec, lo, hi, flagged=flagged, driver=True)
        async for batch in self._driver_batches(spec, query, flagged):
            await off_loop(partial(take, batch))
        return handed

    async def _driver_batches(
        self, spec: TableSpec, query: str, flagged: bool
    ) -> AsyncIterator[pa.RecordBatch]:
        types = [_read_type(c.kind) for c in spec.columns]
        names = [c.name for c in spec.columns]
        if flagged:
            types, names = [*types, pa.bool_()], [*names, EXPORTED]
        async for rows in self._driver_rows(query):
            columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
            arrays = [
                pa.array(_bools(values) if kind == pa.bool_() else list(values), type=kind)
                for values, kind in zip(columns, types, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    async def _driver_rows(self, query: str) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """The rows in slices of ``BATCH_ROWS``: on Postgres from asyncpg's own cursor
        (its records as they come, without SQLAlchemy's rows: half the time of a small
        window), elsewhere through SQLAlchemy."""
        async with self._engine.connect() as connection:
            if not self.postgres:
                result = await connection.stream(text(query))
                async for rows in result.partitions(BATCH_ROWS):
                    yield rows
                return
            # SQLAlchemy's own transaction, not asyncpg's: when a failed run drops this
            # generator mid-way, the pool's reset rolls back what it knows of. A raw
            # read-only transaction outlived it, and the connection's next user got a
            # savepoint inside it ("cannot execute DELETE in a read-only transaction").
            async with connection.begin():
                await connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                raw: Any = (await connection.get_raw_connection()).driver_connection
                cursor = await raw.cursor(query)
                while rows := await cursor.fetch(BATCH_ROWS):
                    yield rows

    # --- deleted rows ----------------------------------------------------------------

    async def survey(
        self, windows: Mapping[str, tuple[datetime, datetime]], *, deletions: bool = True
    ) -> Survey:
        """Which windows are large, and (``deletions``) the rows deleted in each: one
        pooled connection and two or three statements for every table of a run."""
        threshold = FAST_FROM_ROWS if self._fast_from is None else self._fast_from
        async with self._engine.connect() as connection:
            large = await self._large(connection, windows, threshold)
            deleted = await logged_deletions(connection, windows) if deletions else {}
            await connection.rollback()
        return Survey(large, deleted)

    async def _large(
        self,
        connection: AsyncConnection,
        windows: Mapping[str, tuple[datetime, datetime]],
        rows: int,
    ) -> dict[str, bool]:
        """Whether at least ``rows`` rows of each table changed in its window: counted on
        the ``changed_at`` index alone (consent not asked), reading no more of them."""
        if rows <= 0:
            return dict.fromkeys(windows, True)
        counts = " UNION ALL ".join(
            f"SELECT '{name}', count(*) FROM (SELECT 1 FROM {name} WHERE changed_at >= "
            f"{self._literal(lo)} AND changed_at < {self._literal(hi)} LIMIT {int(rows)}) AS w{i}"
            for i, (name, (lo, hi)) in enumerate(windows.items())
        )
        found = {name: int(n) for name, n in await connection.execute(text(counts))}
        return {name: found.get(name, 0) >= rows for name in windows}

    # --- reconciliation --------------------------------------------------------------

    async def live_ids(self, spec: TableSpec) -> list[str]:
        """Every id of ``spec`` an export should hold now, as text (events with consent)."""
        where = f"customer_id IN ({_GRANTED})" if spec.name == "events" else "true"
        query = f"SELECT {self._expr(spec.key.name, spec.key.kind)} FROM {spec.name} WHERE {where}"
        async with self._engine.connect() as connection:
            return [str(i) for i in await connection.scalars(text(query))]


def ids_checksum(ids: Sequence[object]) -> str:
    """Order-free: the SHA-256 of the sorted ids, one a line."""
    digest = hashlib.sha256()
    for value in sorted(str(i) for i in ids):
        digest.update(value.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _bools(values: Sequence[object]) -> list[bool | None]:
    # SQLite answers 0 and 1.
    return [None if v is None else bool(v) for v in values]

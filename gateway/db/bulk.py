"""Bulk writes: COPY on Postgres (an order of magnitude faster than INSERT executemany),
plain multi-row inserts elsewhere.  Both run on the caller's connection and transaction."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from asyncpg.exceptions import UniqueViolationError
from sqlalchemy import ARRAY, Table, any_, bindparam, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

_CHUNK = 2000  # bind parameters per IN list (SQLite), well under its limit
# A multi-row INSERT's rows at most, and its parameters at most this or SQLite's limit
# (``sqlite_parameters_at_most``). Each statement is one trip to the driver's thread.
_VALUES_ROWS = 500
_VALUES_PARAMETERS = 32_000
# What the gateway's SQLite statements need: RETURNING (3.35), and the bound parameters
# every build since 3.32 allows by default: SQLAlchemy sizes its multi-row inserts by
# that (an ESP batch's events with RETURNING), a stream's 1,000 events a statement bind
# 7,000, an IN list of ``_CHUNK`` values and the query's own.
SQLITE_VERSION_NEEDED = (3, 35, 0)
SQLITE_PARAMETERS_NEEDED = 32_766
_VALUES_REST = (256, 128, 64, 32, 16, 8, 4, 2, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_postgres(connection: AsyncConnection) -> bool:
    return connection.dialect.name == "postgresql"


def utc_of_ns(nanoseconds: int) -> datetime:
    """A ``time.time_ns()`` reading as an aware UTC datetime, truncated to the
    microsecond (as ``sqlite_utc_text`` truncates): for the COPY of rows queued with
    the clock's integer time."""
    return _EPOCH + timedelta(microseconds=nanoseconds // 1000)


def sqlite_utc_text(nanoseconds: str) -> str:
    """SQLite: the SQL expression turning ``nanoseconds`` since the epoch (an integer
    expression) into the text SQLAlchemy stores a UTC time as on SQLite,
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (truncated to the microsecond), for writers that
    queue the clock's integer time and convert nothing in Python (``insert_selected``)."""
    return (
        f"strftime('%Y-%m-%d %H:%M:%S', {nanoseconds} / 1000000000, 'unixepoch')"
        f" || printf('.%06d', {nanoseconds} / 1000 % 1000000)"
    )


async def insert_rows(
    connection: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert rows that all have the same keys in the same order."""
    if not rows:
        return
    await insert_tuples(connection, table, list(rows[0]), [tuple(row.values()) for row in rows])


async def insert_tuples(
    connection: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    records: Sequence[tuple[Any, ...]],
) -> None:
    """Insert rows given as tuples in ``columns`` order (no per-row dict to build)."""
    if not records:
        return
    if is_postgres(connection):
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        if not driver.is_in_transaction():
            # SQLAlchemy's asyncpg adapter sends BEGIN with its first statement: a COPY
            # straight to the driver before any would commit on its own, outside the
            # caller's transaction, and a failure after it would not take it back (the
            # audit log's retried batch was written twice, every chunk before the one
            # that failed).
            await connection.exec_driver_sql("SELECT 1")
        await driver.copy_records_to_table(table.name, columns=list(columns), records=records)
    elif connection.dialect.paramstyle == "qmark" and not _defaults_missing(table, columns):
        await insert_values(connection, table, columns, records)
    else:
        names = list(columns)
        await connection.execute(
            table.insert(), [dict(zip(names, record, strict=True)) for record in records]
        )


async def insert_values(
    connection: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    records: Sequence[tuple[Any, ...]],
) -> None:
    """Insert rows given as tuples in ``columns`` order with multi-row INSERT statements
    (SQLite), each value made what the column stores by its type's own bind processor.

    Not an executemany: aiosqlite runs it in the driver's thread, which lets go of the GIL
    around each row's step and must take it back from the event loop's thread for the
    next; under load every row waited for the busy loop (3,000 audit entries took 13-38 s
    with the loop holding the GIL 10 ms at a time), and SQLite's one write lock was held
    all along: another writer (the other worker's audit or impressions) waited past its
    busy timeout, "database is locked", retried with a larger batch, and the buffers
    dropped rows. Here the GIL changes hands a few times a statement of hundreds of rows
    (a loop that lets go of it briefly and often can still starve the driver's thread:
    fewer trips make that rarer, not impossible). The writers of a row every request go
    further (``insert_selected``): nothing converted in Python a value at a time."""
    if not records:
        return
    width = len(columns)
    if any(len(record) != width for record in records):
        # The values are laid end to end: a tuple one short beside one one long would
        # shift every value after it into the wrong column, silently.
        wrong = next(len(record) for record in records if len(record) != width)
        raise ValueError(f"a record of {wrong} values for {width} columns")
    processors = [table.c[name].type._cached_bind_processor(connection.dialect) for name in columns]
    plain = all(process is None for process in processors)
    preparer, names = connection.dialect.identifier_preparer, tuple(columns)
    at = 0
    for size in _statement_sizes(len(records), width, _VALUES_ROWS):
        flat: list[Any] = []
        for record in records[at : at + size]:
            if plain:
                flat += record
            else:
                flat += [
                    value if process is None else process(value)
                    for process, value in zip(processors, record, strict=True)
                ]
        sql = _values_statement(preparer, table, names, size)
        try:
            await connection.exec_driver_sql(sql, tuple(flat))
        except DBAPIError as error:
            # Named by one row, not hundreds of placeholders: the message of a failed
            # audit flush (logged, and retried each second while SQLite is locked)
            # was 8.7 kB, where an executemany's named one row.
            one = _values_statement(preparer, table, names, 1)
            error.statement = f"{one} ... ({size} rows)"
            raise
        at += size


@functools.cache
def sqlite_parameters_at_most() -> int:
    """The bound parameters one statement may hold on this process's SQLite library, as
    a new connection reads it: the limit it was compiled with (32,766 by default since
    3.32, 250,000 in Debian's build, lower in some), not a guess from its version."""
    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        return probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def _statement_sizes(rows: int, width: int, most: int) -> Iterator[int]:
    """How many rows each multi-row statement of ``rows`` rows of ``width`` values takes:
    as many as allowed, then the rest in powers of two (a few statement texts, each
    prepared once and kept in the driver's cache, not one for every remainder)."""
    parameters = min(_VALUES_PARAMETERS, sqlite_parameters_at_most())
    per = max(1, min(most, parameters // width))
    for size in (per, *(n for n in _VALUES_REST if n < per)):
        count, rows = divmod(rows, size)
        yield from [size] * count


async def insert_selected(
    connection: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    selected: Sequence[str],
    values: Sequence[Any],
    *,
    width: int,
    most: int = 1000,
    conflict: str = "",
) -> None:
    """SQLite: insert rows of ``width`` values laid end to end in ``values``, which the
    driver binds as they are (text, numbers, NULL, bytes), each stored column being the
    SQL expression ``selected`` names over the row's values (``column1``, ``column2``,
    ...: SQLite's names for a VALUES list's): ``INSERT INTO t (columns) SELECT selected
    FROM (VALUES (?, ...), ...)``, ``most`` rows a statement.

    For the writers of a row every request (audit log, impressions), which queue plain
    values: bound by the driver in C and turned into the stored forms (a time from
    nanoseconds, JSON) by SQLite, in the driver's thread, one trip to that thread a
    statement (not an executemany: see ``insert_values``). Before, such writers bound
    one JSON array a statement, read back by ``json_each``: each ``json_extract``
    parsed its row's text again, ~0.6 us a column (6.8 us an impression row, against
    3.7 bound). Text with a lone surrogate cannot be bound: the driver raises
    ``UnicodeEncodeError`` and nothing of that statement is written. ``conflict``: an
    upsert clause ending each statement (``ON CONFLICT (...) DO NOTHING``)."""
    if len(values) % width:
        raise ValueError(f"{len(values)} values are not rows of {width}")
    names, chosen = tuple(columns), tuple(selected)
    at = 0
    for size in _statement_sizes(len(values) // width, width, most):
        sql = _selected_statement(table.name, names, chosen, width, size, conflict)
        try:
            await connection.exec_driver_sql(sql, tuple(values[at : at + size * width]))
        except DBAPIError as error:
            one = _selected_statement(table.name, names, chosen, width, 1, conflict)
            error.statement = f"{one} ... ({size} rows)"
            raise
        at += size * width


@functools.lru_cache(maxsize=64)
def _selected_statement(
    table: str,
    columns: tuple[str, ...],
    selected: tuple[str, ...],
    width: int,
    rows: int,
    conflict: str = "",
) -> str:
    one = f"({', '.join('?' * width)})"
    # Before an upsert clause, a WHERE: SQLite's parser would otherwise read its ON as a
    # join's (its documented ambiguity of INSERT ... SELECT ... ON CONFLICT).
    upsert = f" WHERE true {conflict}" if conflict else ""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(selected)}"
        f" FROM (VALUES {', '.join([one] * rows)}){upsert}"
    )


@functools.lru_cache(maxsize=256)
def _values_statement(preparer: Any, table: Table, columns: tuple[str, ...], rows: int) -> str:
    one = f"({', '.join('?' * len(columns))})"
    names = ", ".join(preparer.quote(name) for name in columns)
    return f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES {', '.join([one] * rows)}"


def _defaults_missing(table: Table, columns: Sequence[str]) -> bool:
    """Whether a column left out has a default SQLAlchemy would compute (a multi-row
    statement of our own would leave it NULL); the database's own defaults apply."""
    given = set(columns)
    return any(c.default is not None and c.name not in given for c in table.columns)


async def copy_unless_duplicate(
    connection: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    records: Sequence[tuple[Any, ...]],
) -> bool:
    """COPY rows the caller believes new, in a savepoint (Postgres): False, with nothing
    written and the transaction still usable, when one breaks a unique key after all (a
    writer committed it since the caller looked)."""
    if not records:
        return True
    try:
        async with connection.begin_nested():
            await insert_tuples(connection, table, columns, records)
    except UniqueViolationError:
        return False
    return True


async def allocate_ids(connection: AsyncConnection, table: Table, count: int) -> list[int]:
    """Serial ids taken from the table's sequence up front, so the rows can be COPYed
    (COPY returns nothing) and still be referenced by the rows written after them."""
    result = await connection.execute(
        text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
        {"table": table.name, "n": count},
    )
    return [int(value) for value in result.scalars()]


async def update_by_id(
    connection: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Update rows by primary key ``id``: one UPDATE over unnested arrays on Postgres
    (an executemany of thousands cost a bind and an execution per row on both sides),
    an executemany elsewhere."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != "id"]
    if is_postgres(connection):
        names = ["id", *columns]
        arrays = ", ".join(
            f"CAST(:{name} AS {table.c[name].type.compile(dialect=connection.dialect)}[])"
            for name in names
        )
        await connection.execute(
            text(
                f"UPDATE {table.name} AS t SET {', '.join(f'{c} = u.{c}' for c in columns)} "
                f"FROM unnest({arrays}) AS u({', '.join(names)}) WHERE t.id = u.id"
            ),
            {name: [row[name] for row in rows] for name in names},
        )
        return
    statement = (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({c: bindparam(f"new_{c}") for c in columns})
    )
    await connection.execute(
        statement, [{"row_id": row["id"], **{f"new_{c}": row[c] for c in columns}} for row in rows]
    )


T = TypeVar("T")


def chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def matching(connection: AsyncConnection, column: Any, values: Iterable[Any]) -> Iterator[Any]:
    """WHERE clauses for ``column IN values``: one array parameter on Postgres (one plan,
    one round trip), chunked IN lists elsewhere."""
    distinct = set(values)
    if not distinct:
        return
    if is_postgres(connection):
        # Order does not matter to an array parameter; sorting tens of thousands does cost.
        array = list(distinct)
        yield column == any_(bindparam(None, array, type_=ARRAY(column.type), unique=True))
        return
    for part in chunks(sorted(distinct)):
        yield column.in_(part)


@contextlib.asynccontextmanager
async def custom_plans(connection: AsyncConnection) -> AsyncIterator[None]:
    """Reads planned for their own arrays inside the block (Postgres), not by a cached
    generic plan: after five runs on a pooled connection Postgres may switch
    ``column = ANY($1)`` to one that assumes a short array, and on a small table that is
    a scan comparing every row with every value (1,000 addresses over 2,000 customers:
    59 ms, against 0.3 ms planned for the array). Reset on leaving it: the foreign-key
    checks of the writes after are cached plans too, and re-planned per row they cost
    more than they save."""
    if not is_postgres(connection):
        yield
        return
    await connection.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    yield
    await connection.execute(text("SET LOCAL plan_cache_mode TO DEFAULT"))


async def rows_where_in(
    connection: AsyncConnection,
    columns: Sequence[Any],
    key: Any,
    values: Iterable[Any],
    *,
    also: tuple[Any, Sequence[Any]] | None = None,
    order_by: Any = None,
) -> list[Sequence[Any]]:
    """``SELECT columns WHERE key IN values`` as plain tuples (columns of one table).

    On Postgres through the driver itself, with one array parameter: SQLAlchemy's row
    processing cost about 2 µs a row, ten times the driver's, and an import batch reads
    tens of thousands of rows (block keys, candidates, observations).  ``also``: a second
    (column, values) condition on the same rows.  Chunked IN lists
    through SQLAlchemy elsewhere, where ``order_by`` orders the rows of each key (of each
    chunk), not the whole."""
    distinct = list(set(values))
    if not distinct:
        return []
    if is_postgres(connection):
        table = key.table.name
        array = key.type.compile(dialect=connection.dialect)
        arguments: list[Any] = [distinct]
        where = f"{key.name} = ANY($1::{array}[])"
        if also is not None:
            other = also[0].type.compile(dialect=connection.dialect)
            where += f" AND {also[0].name} = ANY($2::{other}[])"
            arguments.append(list(also[1]))
        order = f" ORDER BY {order_by.name}" if order_by is not None else ""
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        rows: list[Sequence[Any]] = await driver.fetch(
            f"SELECT {', '.join(c.name for c in columns)} FROM {table} WHERE {where}{order}",
            *arguments,
        )
        return rows
    found: list[Sequence[Any]] = []
    for start in range(0, len(distinct), _CHUNK):
        part = sorted(distinct[start : start + _CHUNK])
        statement = select(*columns).where(key.in_(part))
        if also is not None:
            statement = statement.where(also[0].in_(also[1]))
        if order_by is not None:
            statement = statement.order_by(order_by)
        found += [tuple(row) for row in await connection.execute(statement)]
    return found

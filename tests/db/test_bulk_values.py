"""SQLite's multi-row INSERTs (gateway/db/bulk.py ``insert_values``) store what
SQLAlchemy's executemany stored for the same rows, in every table of the schema."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Computed,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
    event,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import gateway.db.access_models
import gateway.db.export_models
import gateway.db.identity_models
import gateway.db.recommendation_models
import gateway.db.score_models
import gateway.db.sync_models  # noqa: F401  (their tables in the metadata)
from gateway.db import bulk
from gateway.db.bulk import insert_tuples, insert_values
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Base, UtcDateTime

_ZONES = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))]
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)


def _strategy(column: Any) -> st.SearchStrategy[Any]:
    kind = column.type
    if isinstance(kind, UtcDateTime):
        # Naive, UTC and other offsets: each is made UTC by UtcDateTime on the way in.
        moments = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1))
        base: st.SearchStrategy[Any] = st.builds(
            lambda moment, zone: moment.replace(tzinfo=zone), moments, _ZONES
        )
    elif isinstance(kind, Uuid):
        base = st.uuids()
    elif isinstance(kind, JSON):
        base = _JSON
    elif isinstance(kind, Boolean):
        base = st.booleans()
    elif isinstance(kind, BigInteger):
        base = st.integers(-(2**63), 2**63 - 1)
    elif isinstance(kind, SmallInteger | Integer):
        base = st.integers(-(2**31), 2**31 - 1)
    elif isinstance(kind, Float):
        base = st.floats(allow_nan=False) | st.integers(-5, 5)
    elif isinstance(kind, LargeBinary):
        base = st.binary(max_size=8)
    elif isinstance(kind, String | Text):
        base = st.text(max_size=8)
    else:
        raise AssertionError(f"no strategy for {column.table.name}.{column.name}: {kind!r}")
    return st.none() | base if column.nullable else base


def _columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if not isinstance(c.server_default, Computed)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('bulk') / 'bulk.db'}"
    upgrade(url)
    engine = create_engine(url)
    yield engine
    asyncio.run(engine.dispose())


async def _stored(
    connection: AsyncConnection,
    table: Table,
    columns: list[str],
    old: bool,
    rows: list[tuple[Any, ...]],
) -> Any:
    """What the rows become in the table (each value and its storage class), or the
    error class; rolled back either way."""
    await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    await connection.commit()
    transaction = await connection.begin()
    try:
        try:
            if old:
                await connection.execute(
                    table.insert(), [dict(zip(columns, row, strict=True)) for row in rows]
                )
            else:
                await insert_values(connection, table, columns, rows)
        except IntegrityError:
            return IntegrityError
        # changed_at: the time of the write, by trigger (migration 0011), not a value given.
        picks = ", ".join(f'"{c}", typeof("{c}")' for c in columns if c != "changed_at")
        result = await connection.exec_driver_sql(
            f'SELECT {picks} FROM "{table.name}" ORDER BY rowid'
        )
        return [tuple(row) for row in result]
    finally:
        await transaction.rollback()


@pytest.mark.parametrize("table", Base.metadata.sorted_tables, ids=lambda t: t.name)
def test_each_table_stores_what_the_executemany_stored(engine: AsyncEngine, table: Table) -> None:
    columns = _columns(table)
    rows = st.lists(
        st.tuples(*(_strategy(table.c[name]) for name in columns)), min_size=1, max_size=4
    )

    @settings(max_examples=40, suppress_health_check=list(HealthCheck))
    @given(rows)
    def check(records: list[tuple[Any, ...]]) -> None:
        async def both() -> tuple[Any, Any]:
            async with engine.connect() as connection:
                old = await _stored(connection, table, columns, True, records)
                new = await _stored(connection, table, columns, False, records)
                return old, new

        old, new = asyncio.run(both())
        assert new == old

    check()


@settings(max_examples=60, suppress_health_check=list(HealthCheck))
@given(
    count=st.integers(0, 1_300),
    width=st.integers(1, 70),
    limit=st.sampled_from([999, 32_000]),
)
def test_every_row_is_written_once_in_order_within_the_limits(
    count: int, width: int, limit: int
) -> None:
    """The statements' sizes (as many rows as fit, then the rest in halving sizes)
    write each row exactly once, in the order given, no statement over the limits."""
    metadata = MetaData()
    table = Table(
        "wide",
        metadata,
        Column("n", Integer),
        *(Column(f"c{i}", Integer) for i in range(width - 1)),
    )
    columns = [c.name for c in table.columns]
    records = [tuple(range(n, n + width)) for n in range(count)]
    sizes: list[int] = []

    async def run() -> list[tuple[Any, ...]]:
        engine = create_engine("sqlite+aiosqlite://")

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def spy(*args: Any) -> None:
            statement, parameters = args[2], args[3]
            if statement.startswith("INSERT"):
                assert len(parameters) <= limit
                sizes.append(len(parameters) // width)

        try:
            async with engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
                with mock.patch.object(bulk, "_VALUES_PARAMETERS", limit):
                    await insert_values(connection, table, columns, records)
                result = await connection.execute(select(table).order_by(text("rowid")))
                return [tuple(row) for row in result]
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == records
    assert sum(sizes) == count
    assert all(size <= 500 for size in sizes)
    # A few statements, not one a row: the whole ones, then one per halving at most.
    full = max(1, min(500, limit // width))
    assert len(sizes) <= count // full + 9


async def test_a_record_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    """As the executemany did (``zip(strict=True)``): a tuple one short next to one
    one long would otherwise shift every value after it into the wrong column."""
    metadata = MetaData()
    table = Table("pairs", metadata, Column("a", Integer), Column("b", Integer))
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pairs.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        with pytest.raises(ValueError, match="values for 2 columns"):
            async with engine.begin() as connection:
                await insert_tuples(connection, table, ("a", "b"), [(1, 2, 3), (4,)])
        async with engine.connect() as connection:
            assert (await connection.execute(select(table))).all() == []
    finally:
        await engine.dispose()


async def test_a_failed_statement_is_named_in_a_line_not_by_its_hundreds_of_rows(
    tmp_path: Path,
) -> None:
    """The error's message names the statement: all 500 rows' placeholders made it
    8.7 kB for an audit chunk (the audit log logs each failed flush, and retries it
    every second while the database is locked), where an executemany's named one row."""
    metadata = MetaData()
    table = Table(
        "five",
        metadata,
        Column("a", Integer, primary_key=True),
        *(Column(c, Integer) for c in "bcde"),
    )
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'five.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        records = [(n, 0, 0, 0, 0) for n in range(1_000)]
        records.insert(700, (5, 0, 0, 0, 0))
        with pytest.raises(IntegrityError) as raised:
            async with engine.begin() as connection:
                await insert_tuples(connection, table, ("a", "b", "c", "d", "e"), records)
        message = str(raised.value)
        assert "UNIQUE constraint failed: five.a" in message
        assert "INSERT INTO five (a, b, c, d, e) VALUES (?, ?, ?, ?, ?)" in message
        assert len(message) < 500, message
    finally:
        await engine.dispose()


def test_a_copy_is_part_of_the_callers_transaction() -> None:
    """On Postgres the rows go to the driver's COPY, past SQLAlchemy, which sends BEGIN
    only with its first statement: a COPY first committed on its own, and the caller's
    rollback (a later chunk failing, the batch then retried) left it written twice."""
    from gateway.db.models import AuditEntry
    from tests.conftest import create_postgres_database, drop_postgres_database

    url = create_postgres_database("gateway_copy_transaction")
    table: Table = AuditEntry.__table__  # type: ignore[assignment]
    columns = ("occurred_at", "actor", "operation", "customer_id", "details")
    rows = [(datetime.now(UTC), "copy", "op", None, "{}")] * 3

    async def stored() -> int | None:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                async with connection.begin() as transaction:
                    await insert_tuples(connection, table, columns, rows)
                    await transaction.rollback()
                async with connection.begin():
                    await insert_tuples(connection, table, columns, rows)
                count = select(func.count()).select_from(table).where(table.c.actor == "copy")
                return await connection.scalar(count)
        finally:
            await engine.dispose()

    try:
        upgrade(url)
        assert asyncio.run(stored()) == 3
    finally:
        drop_postgres_database(url)

"""The impressions writer on SQLite (gateway/experiments/impressions.py) passes raw values
and lets the statement make the stored forms: what it stores must be what SQLAlchemy
stores for the same impression, byte for byte (results compare ``served_at`` as text
with times SQLAlchemy binds, and look customers up by ``customer_id``), but for the
items' JSON, written by orjson (compact, non-ASCII as is): the same JSON, read back
the same."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import MERGE_OPERATIONS, AuditEntry, Customer
from gateway.db.recommendation_models import RecommendationImpression
from gateway.experiments.impressions import (
    _COLUMNS,
    ImpressionLog,
    _sqlite,
    _stored_forms,
    items_json,
    merges_since,
)
from tests.own_database import own_database_url

__all__ = ["own_database_url"]  # a database of the test's own, as a fixture

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TABLE: Table = RecommendationImpression.__table__  # type: ignore[assignment]
# A NUL in a text column too: the edge refuses it in every input
# (resolvers/graphql/input_text.py; send ids are printable) and PostgreSQL's text cannot
# hold one, but SQLite stores it whole, and so must the writer (SQLite's json_extract,
# which read the rows out of one JSON array before, ended the text there). No lone
# surrogate anywhere: neither database stores one (the last test).
_TEXT = st.characters(exclude_categories=["Cs"])
_ITEM = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
_NAMES = st.none() | st.text(_TEXT, min_size=1, max_size=12)
_IMPRESSIONS = st.tuples(
    st.text(_TEXT, min_size=1, max_size=32),
    # As serving queues it (the UUID's integer), or as other callers do (its digits).
    st.uuids().map(lambda customer: customer.int) | st.uuids().map(lambda customer: customer.hex),
    # Any time a clock may read (nanoseconds, to 2200-01-01), a second's last among them.
    st.integers(0, 7_258_118_400 * 10**9)
    | st.integers(0, 7_258_118_399).map(lambda s: s * 10**9 + 999_999_999),
    st.sampled_from(["graphql", "api", "render"]),
    st.text(_TEXT, min_size=1, max_size=32),
    _NAMES,
    _NAMES,
    _NAMES,
    st.lists(_ITEM, max_size=5).map(items_json),  # as serving queues them
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('impressions') / 'i.db'}"
    upgrade(url)
    engine = create_engine(url)
    yield engine
    asyncio.run(engine.dispose())


async def _stored(connection: AsyncConnection, rows: list[tuple[Any, ...]], raw: bool) -> Any:
    """The rows as stored (each value and its storage class), written by the writer
    (``raw``) or by SQLAlchemy; rolled back."""
    await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # customers not needed
    await connection.commit()
    transaction = await connection.begin()
    try:
        if raw:
            values = [value for row in rows for value in row]
            _stored_forms(values)  # what the writer does first
            await _sqlite(connection, values)
        else:
            await connection.execute(
                _TABLE.insert(),
                [
                    {
                        **dict(zip(_COLUMNS, row, strict=True)),
                        "customer_id": (
                            uuid.UUID(int=row[1]) if isinstance(row[1], int) else uuid.UUID(row[1])
                        ),
                        "served_at": _EPOCH + timedelta(microseconds=row[2] // 1000),
                        "items": json.loads(row[8]),
                    }
                    for row in rows
                ],
            )
        picks = ", ".join(f'"{c}", typeof("{c}")' for c in _COLUMNS)
        found = await connection.exec_driver_sql(
            f'SELECT {picks} FROM "{_TABLE.name}" ORDER BY rowid'
        )
        # The items' JSON parsed: its text is orjson's on one side, json's on the other.
        stored = [tuple(row) for row in found]
        return [(*row[:-2], json.loads(row[-2]), row[-1]) for row in stored]
    finally:
        await transaction.rollback()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_IMPRESSIONS, min_size=1, max_size=6, unique_by=lambda row: row[0]))
def test_the_writer_stores_what_sqlalchemy_stores(
    engine: AsyncEngine, rows: list[tuple[Any, ...]]
) -> None:
    async def both() -> tuple[Any, Any]:
        async with engine.connect() as connection:
            return await _stored(connection, rows, True), await _stored(connection, rows, False)

    written, expected = asyncio.run(both())
    assert written == expected


@contextlib.asynccontextmanager
async def _one_customers_log(
    url: str,
) -> AsyncIterator[tuple[AsyncEngine, uuid.UUID, ImpressionLog]]:
    """An engine on ``url``, one stored customer, and an impressions log that writes
    only when flushed."""
    engine = create_engine(url)
    try:
        customer = uuid.uuid4()
        async with engine.begin() as connection:
            await connection.execute(insert(Customer).values(id=customer))
        yield engine, customer, ImpressionLog(create_sessionmaker(engine), flush_interval_s=3600)
    finally:
        await engine.dispose()


def test_the_log_writes_a_batch_without_the_row_no_database_can_hold(own_database_url: str) -> None:
    """A lone surrogate (a product id as an upstream's JSON may spell it) cannot be
    encoded for either database: that row is dropped and logged, the batch's others are
    written (the whole batch was kept and retried for ever, every later one behind it).
    Serving cleans the items (next test); a row queued otherwise is still refused alone."""
    url = own_database_url

    async def written() -> list[str]:
        async with _one_customers_log(url) as (engine, customer, log):
            for list_id, items in (("a", '["p-1"]'), ("b", '["\ud800"]'), ("c", '["p-2"]')):
                log.record((list_id, customer.hex, 0, "api", "model", None, None, "s", items))
            await log.flush()
            await log.aclose()
            async with engine.connect() as connection:
                query = select(_TABLE.c.list_id).order_by(_TABLE.c.list_id)
                return list(await connection.scalars(query))

    assert asyncio.run(written()) == ["a", "c"]


def test_a_list_already_stored_is_not_written_again_and_holds_up_no_other(
    own_database_url: str,
) -> None:
    """A batch retried after its commit went through unacknowledged (a connection lost
    with the reply) holds lists already stored: they are not written twice, and the
    lists queued with them are written (the batch failed every retry, on both
    databases, and every list served afterwards waited behind it)."""
    url = own_database_url

    async def written() -> tuple[list[tuple[str, str]], int]:
        async with _one_customers_log(url) as (engine, customer, log):

            def record(list_id: str, send: str) -> None:
                log.record((list_id, customer.int, 0, "api", "model", None, None, send, "[]"))

            record("stored", "first")
            await log.flush()
            for list_id, send in (("new-1", "second"), ("stored", "second"), ("new-2", "second")):
                record(list_id, send)
            record("new-1", "third")  # the same list queued twice: its first row kept
            await log.flush()
            left = log._buffer.rows
            await log.aclose()
            async with engine.connect() as connection:
                query = select(_TABLE.c.list_id, _TABLE.c.send_id).order_by(_TABLE.c.list_id)
                return [tuple(row) for row in await connection.execute(query)], left

    rows, left = asyncio.run(written())
    assert rows == [("new-1", "second"), ("new-2", "second"), ("stored", "first")]
    assert left == 0


@given(st.lists(st.text(max_size=8), max_size=6))
def test_a_served_lists_items_are_json_a_database_can_hold(product_ids: list[str]) -> None:
    """Serving makes the items' JSON text as it queues the row: any product id an
    upstream sends (a lone surrogate included, which no database stores) gives JSON
    text that reads back as the ids in order, with "?" for what could not be encoded:
    the list is recorded, not dropped at the write (nor the request failed)."""
    text = items_json(iter(product_ids))
    assert isinstance(text, str)
    text.encode("utf-8")  # storable: no lone surrogate left
    cleaned = [i.encode("utf-8", "replace").decode() for i in product_ids]
    assert json.loads(text) == cleaned


def test_the_merges_are_read_through_their_own_index(own_database_url: str) -> None:
    """A write refused for a customer gone since reads the merges of a range of the audit
    log, which holds a row for every read: the planner must take the merges' partial
    index (migration 0027), not the time index and every read in the range."""
    url = own_database_url

    async def plan() -> str:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                start = datetime.now(UTC) - timedelta(minutes=30)
                reads = [
                    {
                        "occurred_at": start + timedelta(milliseconds=n),
                        "actor": "esp",
                        "operation": "recommendations",
                        "details": {"action": "read"},
                    }
                    for n in range(3000)
                ]
                merges = [
                    {
                        "occurred_at": start + timedelta(seconds=n),
                        "actor": "steward",
                        "operation": operation,
                        "customer_id": uuid.uuid4(),
                        "details": {"merged": str(uuid.uuid4())},
                    }
                    for n, operation in enumerate(MERGE_OPERATIONS * 2)
                ]
                await connection.execute(insert(AuditEntry), reads)
                await connection.execute(insert(AuditEntry), merges)
                await connection.exec_driver_sql("ANALYZE")
                query = merges_since(start, [str(uuid.uuid4())]).compile(
                    dialect=connection.dialect, compile_kwargs={"literal_binds": True}
                )
                explain = "EXPLAIN" if url.startswith("postgresql") else "EXPLAIN QUERY PLAN"
                found = await connection.exec_driver_sql(f"{explain} {query}")
                return " ".join(str(value) for row in found for value in row)
        finally:
            await engine.dispose()

    assert "ix_audit_log_merges" in asyncio.run(plan())

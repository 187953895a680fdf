"""The impressions writer on SQLite (gateway/experiments/impressions.py) passes raw values
and lets the statement make the stored forms: what it stores must be what SQLAlchemy
stores for the same impression, byte for byte (results compare ``served_at`` as text
with times SQLAlchemy binds, and look customers up by ``customer_id``), but for the
items' JSON, written by orjson (compact, non-ASCII as is): the same JSON, read back
the same."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.recommendation_models import RecommendationImpression
from gateway.experiments.impressions import _COLUMNS, _sqlite

_TABLE: Table = RecommendationImpression.__table__  # type: ignore[assignment]
_NAMES = st.none() | st.text(min_size=1, max_size=12)
_IMPRESSIONS = st.tuples(
    st.text(min_size=1, max_size=32),
    st.uuids(),
    # Any time a clock may read, fractions near a whole second (carried) among them.
    st.floats(min_value=0, max_value=7_258_118_400)  # 2200-01-01
    | st.integers(0, 7_258_118_399).map(lambda s: s + 0.9999996),
    st.sampled_from(["graphql", "api", "render"]),
    st.text(min_size=1, max_size=32),
    _NAMES,
    _NAMES,
    _NAMES,
    st.tuples() | st.lists(st.text(max_size=8), max_size=5).map(tuple),
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
            await _sqlite(connection, rows)
        else:
            await connection.execute(
                _TABLE.insert(),
                [
                    {
                        **dict(zip(_COLUMNS, row, strict=True)),
                        "served_at": datetime.fromtimestamp(row[2], UTC),
                        "items": list(row[8]),
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

"""The SQLite library the gateway runs on: refused at start when its statements would
fail on it, and the bulk writers' statements kept within the bound parameters it
allows (gateway/db/engine.py ``require_sqlite``, gateway/db/bulk.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, select, text

from gateway.db import bulk, engine
from gateway.db.bulk import insert_selected, insert_values, sqlite_parameters_at_most
from gateway.db.engine import create_engine, require_sqlite


def test_the_limit_is_the_librarys_own() -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        assert sqlite_parameters_at_most() == probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


@pytest.mark.parametrize(
    ("version", "parameters", "refused"),
    [
        ((3, 34, 1), 250_000, "SQLite 3.35.0 or newer is needed"),
        ((3, 40, 1), 999, "SQLITE_MAX_VARIABLE_NUMBER=999"),
        # A stream's 1,000 events a statement bind 7,000, SQLAlchemy's inserts 32,766.
        ((3, 40, 1), 7_000, "SQLITE_MAX_VARIABLE_NUMBER=7000"),
        ((3, 35, 0), 32_766, None),
    ],
)
def test_a_library_its_statements_would_fail_on_is_refused_at_start(
    version: tuple[int, int, int], parameters: int, refused: str | None
) -> None:
    """At the engine's creation, saying what is missing; not at a write's first
    RETURNING or a long IN list, in the middle of a request."""
    with (
        mock.patch.object(sqlite3, "sqlite_version_info", version),
        mock.patch.object(engine, "sqlite_parameters_at_most", return_value=parameters),
    ):
        if refused is None:
            asyncio.run(create_engine("sqlite+aiosqlite://").dispose())
        else:
            with pytest.raises(RuntimeError, match=refused):
                create_engine("sqlite+aiosqlite://")
    require_sqlite(sqlite3.sqlite_version_info, sqlite_parameters_at_most())  # this one


@pytest.mark.parametrize("writer", ["values", "selected"])
@pytest.mark.parametrize("limit", [2_000, 4_099])
def test_the_writers_statements_stay_within_the_librarys_limit(writer: str, limit: int) -> None:
    """The writers size their statements by the library's limit, not only by their own
    (32,000): every row written once, in order, no statement over it."""
    width = 9
    metadata = MetaData()
    table = Table("nine", metadata, *(Column(f"c{i}", Integer) for i in range(width)))
    columns = [c.name for c in table.columns]
    records = [tuple(range(n, n + width)) for n in range(3_001)]
    largest: list[int] = []

    async def run() -> list[tuple[Any, ...]]:
        database = create_engine("sqlite+aiosqlite://")

        @event.listens_for(database.sync_engine, "before_cursor_execute")
        def spy(*args: Any) -> None:
            if args[2].startswith("INSERT"):
                largest.append(len(args[3]))

        try:
            async with database.begin() as connection:
                await connection.run_sync(metadata.create_all)
                with mock.patch.object(bulk, "sqlite_parameters_at_most", return_value=limit):
                    if writer == "values":
                        await insert_values(connection, table, columns, records)
                    else:
                        flat = [value for record in records for value in record]
                        # SQLite's names for a VALUES list's columns.
                        selected = [f"column{i + 1}" for i in range(width)]
                        await insert_selected(
                            connection, table, columns, selected, flat, width=width, most=1_000
                        )
                found = await connection.execute(select(table).order_by(text("rowid")))
                return [tuple(row) for row in found]
        finally:
            await database.dispose()

    assert asyncio.run(run()) == records
    assert largest
    assert max(largest) <= limit

"""Migration 0023 (``events.session_id``), on Postgres and SQLite: up from 0022 with
calls stored, their session ids are there at once, follow a later change of the
properties, and leave with the column on the way down, the rows staying."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, inspect, text, update
from sqlalchemy.engine import Connection

from gateway.db.engine import create_engine
from gateway.db.migrate import downgrade, upgrade
from gateway.db.models import Event
from tests.db.test_migrations import empty_database  # noqa: F401 (the fixture)

AT = datetime(2026, 12, 5, 12, tzinfo=UTC)
# A session id as a string, as a number, none, and a call without properties at all.
CALLS: list[dict[str, Any]] = [
    {"event": "A", "properties": {"session_id": "s1", "product_id": "p1"}},
    {"event": "B", "properties": {"session_id": 7}},
    {"event": "C", "properties": {"product_id": "p2"}},
    {"event": "D"},
]


def _table() -> Table:
    table: Table = Event.__table__  # type: ignore[assignment]
    return table


def _columns(connection: Connection) -> set[str]:
    return {str(c["name"]) for c in inspect(connection).get_columns("events")}


async def _store(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                _table().insert(),
                [
                    {
                        "source": "segment",
                        "event_id": f"call-{n}",
                        "type": f"track:{call['event']}",
                        "occurred_at": AT,
                        "properties": call,
                        "received_at": AT,
                    }
                    for n, call in enumerate(CALLS)
                ],
            )
    finally:
        await engine.dispose()


async def _sessions(url: str, change: dict[str, Any] | None = None) -> list[str | None]:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            if change is not None:
                await connection.execute(
                    update(_table())
                    .where(_table().c.event_id == "call-3")
                    .values(properties=change)
                )
            found = await connection.execute(text("SELECT session_id FROM events ORDER BY id"))
            return [row[0] for row in found]
    finally:
        await engine.dispose()


async def _count(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(text("SELECT count(*) FROM events")) or 0)
    finally:
        await engine.dispose()


def _inspect_columns(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_columns)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_0023_fills_session_ids_of_stored_calls_and_takes_them_away(
    empty_database: str,  # noqa: F811 (the fixture)
) -> None:
    upgrade(empty_database, "0022")
    asyncio.run(_store(empty_database))
    assert "session_id" not in _inspect_columns(empty_database)
    upgrade(empty_database)
    assert asyncio.run(_sessions(empty_database)) == ["s1", "7", None, None]
    # The column follows the properties (a rewrite, an anonymisation), as no path has to.
    moved = {"event": "D", "properties": {"session_id": "s2"}}
    assert asyncio.run(_sessions(empty_database, moved)) == ["s1", "7", None, "s2"]
    downgrade(empty_database, "0022")
    assert "session_id" not in _inspect_columns(empty_database)
    assert asyncio.run(_count(empty_database)) == len(CALLS)
    upgrade(empty_database)
    assert asyncio.run(_sessions(empty_database)) == ["s1", "7", None, "s2"]

"""A database of a test's own (not the session's shared one), on each backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import TextClause

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from tests.conftest import create_postgres_database, drop_postgres_database


@contextmanager
def database_of_its_own(
    kind: str, name: str, tmp_path_factory: pytest.TempPathFactory, *, migrated: bool = True
) -> Iterator[str]:
    """A fresh database (``kind`` "postgres" or "sqlite"), migrated unless told, for
    the block; a Postgres one is dropped after it."""
    if kind == "postgres":
        url = create_postgres_database(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp(name) / 'own.db'}"
    try:
        if migrated:
            upgrade(url)
        yield url
    finally:
        if kind == "postgres":
            drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def own_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of the test's own (not the session's shared one), on each
    backend."""
    with database_of_its_own(request.param, "gateway_own", tmp_path_factory) as url:
        yield url


def run_sql(url: str, statement: TextClause, parameters: Sequence[Mapping[str, Any]] = ()) -> Any:
    """``statement`` on an engine of its own, with each parameter set (or none), in one
    transaction; the rows it returns (a migration test's seeding and reading, in SQL as
    the revision saw the tables)."""

    async def run() -> Any:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(statement, list(parameters) or None)
                return result.all() if result.returns_rows else None
        finally:
            await engine.dispose()

    return asyncio.run(run())

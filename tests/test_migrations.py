"""Migrations: up, down to base and up again, on Postgres and SQLite; no drift from the models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from gateway.db.engine import create_engine
from gateway.db.models import Base
from gateway.migrate import downgrade, upgrade
from tests.conftest import create_postgres_database, drop_postgres_database

TABLES = {
    "customers",
    "identities",
    "attributes",
    "consents",
    "events",
    "templates",
    "audit_log",
    "sync_cursors",
    "identity_records",
    "identity_block_keys",
    "identity_links",
    "identity_reviews",
    "api_keys",
    "tombstones",
    "recommendation_lists",
    "recommendation_items",
    "recommendation_neighbours",
}


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "postgres":
        url = create_postgres_database("gateway_migrations")
        yield url
        drop_postgres_database(url)
    else:
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('migrations') / 'm.db'}"


def _inspect(url: str, probe: object) -> object:
    async def run() -> object:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(probe)  # type: ignore[arg-type]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


def _drift(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    upgrade(empty_database)
    assert _inspect(empty_database, _tables) == TABLES
    downgrade(empty_database, "base")
    assert _inspect(empty_database, _tables) == set()
    upgrade(empty_database)
    assert _inspect(empty_database, _tables) == TABLES


def test_models_and_migrations_agree(empty_database: str) -> None:
    upgrade(empty_database)
    assert _inspect(empty_database, _drift) == []

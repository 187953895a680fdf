"""0025: on Postgres the statement-level foreign key checks of identity_records and
identity_block_keys wait for nothing while a transaction says
``gateway.early_identity_rows = 'on'`` (an import copying the rows of identities it
took from the sequence, before inserting those); otherwise, and before 0025, a row
naming a missing identity is refused. Down and up again work, on SQLite too."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from gateway.db.engine import create_engine
from gateway.db.migrate import downgrade, upgrade
from tests.db.test_migrations import empty_database  # noqa: F401 (the fixture)

_EARLY = "SET LOCAL gateway.early_identity_rows = 'on'"


async def _write_rows_first(url: str, *, early: bool) -> int:
    """Block key and record rows of identity 7, then its customer and identity, in one
    transaction; how many identities committed."""
    engine = create_engine(url)
    customer = str(uuid.uuid4()) if url.startswith("sqlite") else uuid.uuid4()
    try:
        async with engine.begin() as connection:
            if early:
                await connection.execute(text(_EARLY))
            await connection.execute(
                text("INSERT INTO identity_block_keys (identity_id, key_hash) VALUES (7, 1)")
            )
            await connection.execute(
                text(
                    "INSERT INTO identity_records (identity_id, observed_at) "
                    "VALUES (7, CURRENT_TIMESTAMP)"
                )
            )
            if early:
                await connection.execute(text("SET LOCAL gateway.early_identity_rows = 'off'"))
            await connection.execute(
                text(
                    "INSERT INTO customers (id, created_at, updated_at) "
                    "VALUES (:id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": customer},
            )
            await connection.execute(
                text(
                    "INSERT INTO identities (id, customer_id, source, external_id, created_at) "
                    "VALUES (7, :id, 'crm', 'a', CURRENT_TIMESTAMP)"
                ),
                {"id": customer},
            )
        async with engine.connect() as connection:
            count = await connection.scalar(text("SELECT count(*) FROM identity_records"))
            await connection.execute(text("DELETE FROM identities"))
            await connection.execute(text("DELETE FROM customers"))
            await connection.commit()
            return int(count or 0)
    finally:
        await engine.dispose()


def test_0025_lets_an_import_write_new_identities_rows_before_them(
    empty_database: str,  # noqa: F811 (the fixture)
) -> None:
    postgres = empty_database.startswith("postgresql")
    upgrade(empty_database, "0024")
    if postgres:
        with pytest.raises(IntegrityError):  # before 0025: refused even when asked
            asyncio.run(_write_rows_first(empty_database, early=True))
    upgrade(empty_database)
    if postgres:
        assert asyncio.run(_write_rows_first(empty_database, early=True)) == 1
        with pytest.raises(IntegrityError):  # not asked: checked as before
            asyncio.run(_write_rows_first(empty_database, early=False))
    downgrade(empty_database, "0024")
    if postgres:
        with pytest.raises(IntegrityError):
            asyncio.run(_write_rows_first(empty_database, early=True))
    upgrade(empty_database)
    if postgres:
        assert asyncio.run(_write_rows_first(empty_database, early=True)) == 1

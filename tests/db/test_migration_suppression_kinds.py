"""0024: email suppressions gain a kind (a withdrawal or a hard bounce) in their key, on
Postgres and SQLite: the rows kept so far are withdrawals; an address may then hold
both; down, the bounces go and the withdrawals stay; up again works."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.db.engine import create_engine
from gateway.db.migrate import downgrade, upgrade
from tests.db.test_migrations import empty_database  # noqa: F401 (the fixture)

_INSERT = (
    "INSERT INTO email_suppressions (digest, {kind}source, recorded_at) "
    "VALUES ('d1', {value}'sendgrid', CURRENT_TIMESTAMP)"
)


async def _run(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


def _key(url: str) -> list[str]:
    def probe(connection: Connection) -> list[str]:
        found: list[str] = inspect(connection).get_pk_constraint("email_suppressions")[
            "constrained_columns"
        ]
        return found

    async def run() -> list[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(probe)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_0024_keys_suppressions_by_address_and_kind(
    empty_database: str,  # noqa: F811 (the fixture)
) -> None:
    upgrade(empty_database, "0023")
    asyncio.run(_run(empty_database, _INSERT.format(kind="", value="")))
    upgrade(empty_database)
    assert _key(empty_database) == ["digest", "kind"]
    select = "SELECT digest, kind FROM email_suppressions ORDER BY kind"
    assert asyncio.run(_run(empty_database, select)) == [("d1", "withdraw")]
    bounce = _INSERT.format(kind="kind, ", value="'undeliverable', ")
    asyncio.run(_run(empty_database, bounce))  # the same address, the other kind
    with pytest.raises(IntegrityError):  # the same kind twice: still one row
        asyncio.run(_run(empty_database, bounce))
    assert asyncio.run(_run(empty_database, select)) == [
        ("d1", "undeliverable"),
        ("d1", "withdraw"),
    ]
    downgrade(empty_database, "0023")
    assert _key(empty_database) == ["digest"]
    assert asyncio.run(_run(empty_database, "SELECT digest FROM email_suppressions")) == [("d1",)]
    upgrade(empty_database)
    assert asyncio.run(_run(empty_database, select)) == [("d1", "withdraw")]

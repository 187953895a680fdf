"""0028: an attribute names the identity that reported it. Stored rows of a customer with
one identity of the row's source get it; a customer with two of that source (merged) and
the gateway's own sources get none; down and up again keeps the rows and the unique
observation index (SQLite's batch copy would have dropped it)."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import Uuid, bindparam, text

from gateway.db.engine import create_engine
from gateway.db.migrate import downgrade, upgrade
from tests.db.test_migrations import empty_database  # noqa: F401 (the fixture)

_ID = bindparam("id", type_=Uuid())


async def _seed(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """One customer of one shop identity, one of two (merged), each with a shop e-mail
    and an address set through the API."""
    single, merged = uuid.uuid4(), uuid.uuid4()
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for customer in (single, merged):
                await connection.execute(
                    text(
                        "INSERT INTO customers (id, created_at, updated_at) "
                        "VALUES (:id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ).bindparams(_ID),
                    {"id": customer},
                )
                for source in ("shopify", "api"):
                    await connection.execute(
                        text(
                            "INSERT INTO attributes (customer_id, name, value, source, "
                            "observed_at) VALUES (:id, 'email', 'a@example.com', :source, "
                            "CURRENT_TIMESTAMP)"
                        ).bindparams(_ID),
                        {"id": customer, "source": source},
                    )
            for customer, external in ((single, "s1"), (merged, "m1"), (merged, "m2")):
                await connection.execute(
                    text(
                        "INSERT INTO identities (customer_id, source, external_id, created_at)"
                        " VALUES (:id, 'shopify', :external, CURRENT_TIMESTAMP)"
                    ).bindparams(_ID),
                    {"id": customer, "external": external},
                )
    finally:
        await engine.dispose()
    return single, merged


async def _named(url: str) -> dict[tuple[uuid.UUID, str], str | None]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT a.customer_id, a.source, i.external_id FROM attributes a "
                    "LEFT JOIN identities i ON i.id = a.identity_id"
                )
            )
            return {(uuid.UUID(str(c)), source): external for c, source, external in rows}
    finally:
        await engine.dispose()


async def _observation_index(url: str) -> bool:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            query = (
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'uq_attributes_observation'"
                if engine.dialect.name == "postgresql"
                else "SELECT count(*) FROM sqlite_master WHERE name = 'uq_attributes_observation'"
            )
            return bool(await connection.scalar(text(query)))
    finally:
        await engine.dispose()


def test_0028_names_the_identity_where_one_identity_of_the_source_reported_it(
    empty_database: str,  # noqa: F811 (the fixture)
) -> None:
    upgrade(empty_database, "0027")
    single, merged = asyncio.run(_seed(empty_database))
    upgrade(empty_database)
    expected = {
        (single, "shopify"): "s1",
        (single, "api"): None,
        (merged, "shopify"): None,
        (merged, "api"): None,
    }
    assert asyncio.run(_named(empty_database)) == expected
    downgrade(empty_database, "0027")
    assert asyncio.run(_observation_index(empty_database))
    upgrade(empty_database)
    assert asyncio.run(_named(empty_database)) == expected
    assert asyncio.run(_observation_index(empty_database))

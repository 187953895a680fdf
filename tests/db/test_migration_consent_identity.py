"""0022: consent statements of a customer that is one identity name it; a merged
customer's (several identities) name none; down and up again keeps the rows."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import Uuid, bindparam, text

from gateway.db.engine import create_engine
from gateway.db.migrate import downgrade, upgrade
from tests.db.test_migrations import empty_database  # noqa: F401 (the fixture)

_ID = bindparam("id", type_=Uuid())


async def _seed(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """One customer of one identity, one of two, each with a statement."""
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
                await connection.execute(
                    text(
                        "INSERT INTO consent_history "
                        "(customer_id, purpose, granted, source, recorded_at) "
                        "VALUES (:id, 'email_marketing', true, 'api', CURRENT_TIMESTAMP)"
                    ).bindparams(_ID),
                    {"id": customer},
                )
            for customer, external in ((single, "s1"), (merged, "m1"), (merged, "m2")):
                await connection.execute(
                    text(
                        "INSERT INTO identities (customer_id, source, external_id, created_at)"
                        " VALUES (:id, 'crm', :external, CURRENT_TIMESTAMP)"
                    ).bindparams(_ID),
                    {"id": customer, "external": external},
                )
    finally:
        await engine.dispose()
    return single, merged


async def _named(url: str) -> dict[uuid.UUID, str | None]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT h.customer_id, i.external_id FROM consent_history h "
                    "LEFT JOIN identities i ON i.id = h.identity_id"
                )
            )
            return {uuid.UUID(str(customer)): external for customer, external in rows}
    finally:
        await engine.dispose()


def test_0022_names_the_identity_of_a_single_identity_customers_statements(
    empty_database: str,  # noqa: F811 (the fixture)
) -> None:
    upgrade(empty_database, "0021")
    single, merged = asyncio.run(_seed(empty_database))
    upgrade(empty_database)
    assert asyncio.run(_named(empty_database)) == {single: "s1", merged: None}
    downgrade(empty_database, "0021")
    upgrade(empty_database)
    assert asyncio.run(_named(empty_database)) == {single: "s1", merged: None}

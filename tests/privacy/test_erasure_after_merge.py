"""Erasure after a merge, on SQLite and Postgres: the person never comes back.

Found by an attacker: ``mergeCustomers`` rebuilt the golden e-mail only from stored
``email`` attribute rows, which upserts and the seed never wrote, so the merged
customer lost its e-mail; ``forgetCustomer`` then tombstoned only source ids, and
``upsertCustomer`` with the erased address created the person again. Phones were never
tombstoned, and anonymous Segment events carrying an erased e-mail stayed stored.

Here: the API, the seed and the migration; test_erasure_after_merge_ingest has the
webhooks, the import and stored events.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from demo.people.population import population
from demo.seed import seed
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Attribute, Customer
from tests.conftest import (
    create_postgres_database,
    drop_postgres_database,
    unique_email,
)
from tests.gql_client import error_codes, gql
from tests.privacy.merged_people import (
    FORGET,
    MERGE,
    UPSERT,
    merged_person,
    unique_phone,
    upsert,
)


async def test_a_merge_keeps_both_customers_email_and_phone(gw: httpx.AsyncClient) -> None:
    person = await merged_person(gw)
    customer = await gql(
        gw,
        "query($id: ID!) { customer(id: $id) { email phone attributes { name value } } }",
        id=person.merged,
    )
    merged = customer["data"]["customer"]
    assert merged["email"] in {person.email_a, person.email_b}  # not lost
    assert merged["phone"] in {person.phone_a, person.phone_b}
    kept = {(a["name"], a["value"]) for a in merged["attributes"]}
    assert {("email", person.email_a), ("email", person.email_b)} <= kept
    assert {("phone", person.phone_a), ("phone", person.phone_b)} <= kept


async def test_after_merge_and_forget_no_identifier_brings_the_person_back(
    gw: httpx.AsyncClient,
) -> None:
    person = await merged_person(gw)
    forgotten = await gql(gw, FORGET, id=person.merged)
    assert "errors" not in forgotten, forgotten
    # Two e-mails, two phones, three source ids.
    assert forgotten["data"]["forgetCustomer"]["tombstones"] >= 7

    attempts: dict[str, dict[str, Any]] = {
        "email a": {"email": person.email_a},
        "email b (merged in)": {"email": person.email_b.upper()},
        "phone a": {"phone": person.phone_a},
        "phone b (merged in)": {"phone": person.phone_b},
        "hubspot id": {"identities": [{"source": "hubspot", "externalId": person.hubspot_id}]},
        "shopify id (merged in)": {
            "identities": [{"source": "shopify", "externalId": person.shopify_id}]
        },
    }
    for what, fields in attempts.items():
        body = await upsert(gw, **fields)
        assert error_codes(body) == [("ERASED", ["upsertCustomer"])], (what, body)
    # Nor an existing customer taking an erased phone.
    other = (await upsert(gw))["data"]["upsertCustomer"]
    body = await gql(gw, UPSERT, input={"email": other["email"], "phone": person.phone_b})
    assert error_codes(body) == [("ERASED", ["upsertCustomer"])], body
    assert body["errors"][0]["extensions"]["field"] == "phone"


async def test_seeded_customers_merged_and_forgotten_stay_forgotten(
    gw: httpx.AsyncClient, database_url: str
) -> None:
    """The demo seed wrote no e-mail provenance: a merge of two seeded people lost
    both addresses, and the erasure that followed left them free to come back."""
    first, second = population(1000)[990:992]
    engine = create_engine(database_url)
    try:
        await seed(create_sessionmaker(engine), [first, second])
    finally:
        await engine.dispose()
    ids = []
    for person in (first, second):
        found = await gql(gw, "query($e: String!) { customer(email: $e) { id } }", e=person.email)
        ids.append(found["data"]["customer"]["id"])
    merged = await gql(gw, MERGE, into=ids[0], **{"from": ids[1]})
    assert merged["data"]["mergeCustomers"]["email"] in {first.email, second.email}, merged
    assert "errors" not in await gql(gw, FORGET, id=ids[0])
    for person in (first, second):
        for fields in ({"email": person.email}, {"phone": person.phone}):
            body = await upsert(gw, **fields)
            assert error_codes(body) == [("ERASED", ["upsertCustomer"])], (fields, body)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_migration_gives_golden_emails_and_phones_their_provenance(
    backend: str, tmp_path: Path
) -> None:
    """Customers written before every path kept e-mail provenance get it (source
    ``profile``), so a merge of theirs keeps their e-mail too."""
    import asyncio

    from sqlalchemy import insert

    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        if backend == "sqlite"
        else create_postgres_database("gateway_backfill")
    )
    try:
        upgrade(url, "0006")
        customer, email, phone = uuid.uuid4(), unique_email("legacy"), unique_phone()

        async def write() -> None:
            engine = create_engine(url)
            async with engine.begin() as connection:
                await connection.execute(
                    insert(Customer).values(id=customer, email=email, phone=phone)
                )
            await engine.dispose()

        async def read() -> set[tuple[str, str | None, str]]:
            engine = create_engine(url)
            async with engine.connect() as connection:
                rows = await connection.execute(
                    select(Attribute.name, Attribute.value, Attribute.source).where(
                        Attribute.customer_id == customer
                    )
                )
                found = {(r.name, r.value, r.source) for r in rows}
            await engine.dispose()
            return found

        asyncio.run(write())
        upgrade(url)
        assert asyncio.run(read()) == {("email", email, "profile"), ("phone", phone, "profile")}
    finally:
        if backend == "postgres":
            drop_postgres_database(url)

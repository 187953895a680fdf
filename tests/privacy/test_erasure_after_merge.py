"""Erasure after a merge, on SQLite and Postgres: the person never comes back.

Found by an attacker: ``mergeCustomers`` rebuilt the golden e-mail only from stored
``email`` attribute rows, which upserts and the seed never wrote, so the merged
customer lost its e-mail; ``forgetCustomer`` then tombstoned only source ids, and
``upsertCustomer`` with the erased address created the person again. Phones were never
tombstoned, and anonymous Segment events carrying an erased e-mail stayed stored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from demo.people.population import population
from demo.seed import seed
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Attribute, Customer, Event
from gateway.ingest.importer import import_file
from gateway.privacy.erasure import Tombstones
from gateway.settings import load_settings
from tests.conftest import (
    api_client,
    create_postgres_database,
    drop_postgres_database,
    unique_email,
    unique_number,
)
from tests.gql_client import error_codes, gql
from tests.in_process import lifespan, services_of
from tests.ingest.test_webhooks import (
    hubspot_change,
    hubspot_request,
    realtime_app,
    segment_request,
    shopify_request,
)

BASE = "http://gw"
UPSERT = (
    "mutation($input: CustomerInput!) { upsertCustomer(input: $input) "
    "{ id email phone identities { source externalId } } }"
)
MERGE = (
    "mutation($into: ID!, $from: ID!) { mergeCustomers(into: $into, from: $from, "
    'reason: "same person") { id email phone attributes(name: "email") { value } } }'
)
FORGET = "mutation($id: ID!) { forgetCustomer(id: $id) { tombstones events } }"


def unique_phone() -> str:
    """A fresh valid UK mobile number in E.164 (+44 7400 plus six digits)."""
    return f"+447400{uuid.uuid4().int % 10**6:06d}"


@dataclass
class Person:
    """Two customers of one person, merged; every identifier either ever had."""

    email_a: str
    email_b: str
    phone_a: str
    phone_b: str
    hubspot_id: str
    shopify_id: str
    segment_id: str
    merged: str = ""


@pytest.fixture
async def gw(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    async with lifespan(app), api_client(app, base_url=BASE) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


async def _upsert(gw: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    return await gql(gw, UPSERT, input={"email": unique_email(), **fields})


async def merged_person(gw: httpx.AsyncClient) -> Person:
    person = Person(
        email_a=unique_email("ada"),
        email_b=unique_email("ada.work"),
        phone_a=unique_phone(),
        phone_b=unique_phone(),
        hubspot_id=unique_number(),
        shopify_id=unique_number(),
        segment_id=f"usr_{uuid.uuid4().hex}",
    )
    a = await _upsert(
        gw,
        email=person.email_a,
        phone=person.phone_a,
        identities=[{"source": "hubspot", "externalId": person.hubspot_id}],
    )
    b = await _upsert(
        gw,
        email=person.email_b,
        phone=person.phone_b,
        identities=[
            {"source": "shopify", "externalId": person.shopify_id},
            {"source": "segment", "externalId": person.segment_id},
        ],
    )
    into, from_ = a["data"]["upsertCustomer"]["id"], b["data"]["upsertCustomer"]["id"]
    merged = await gql(gw, MERGE, into=into, **{"from": from_})
    assert "errors" not in merged, merged
    person.merged = merged["data"]["mergeCustomers"]["id"]
    return person


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
        body = await _upsert(gw, **fields)
        assert error_codes(body) == [("ERASED", ["upsertCustomer"])], (what, body)
    # Nor an existing customer taking an erased phone.
    other = (await _upsert(gw))["data"]["upsertCustomer"]
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
            body = await _upsert(gw, **fields)
            assert error_codes(body) == [("ERASED", ["upsertCustomer"])], (fields, body)


async def test_after_merge_and_forget_webhooks_answer_erased(
    gw: httpx.AsyncClient, database_url: str
) -> None:
    person = await merged_person(gw)
    assert "errors" not in await gql(gw, FORGET, id=person.merged)
    customers, events = await _count(database_url, Customer), await _count(database_url, Event)
    new_id = int(unique_number())
    replies = {
        "shopify, new id, merged-in e-mail": shopify_request(
            {"id": new_id, "email": person.email_b, "first_name": "Back"}, "customers/create"
        ),
        "hubspot, new id, phone": hubspot_request(
            [hubspot_change(new_id, "phone", person.phone_a)], BASE
        ),
        "segment, new user, merged-in phone": segment_request(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": f"usr_{uuid.uuid4().hex}",
                "traits": {"phone": person.phone_b},
            }
        ),
    }
    for what, request in replies.items():
        response = await gw.post(**request)
        assert response.status_code == 200, (what, response.text)
        assert [e["status"] for e in response.json()["events"]] == ["erased"], (what, response.text)
    assert await _count(database_url, Customer) == customers
    assert await _count(database_url, Event) == events


async def test_after_merge_and_forget_an_import_skips_every_identifier(
    gw: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    person = await merged_person(gw)
    assert "errors" not in await gql(gw, FORGET, id=person.merged)
    path = tmp_path / "shop.csv"
    path.write_text(
        "external_id,email,phone\n"
        f"{unique_number()},{person.email_a},\n"
        f"{unique_number()},{unique_email()},{person.phone_b}\n"
        f"{person.shopify_id},{unique_email()},\n"
    )
    tombstones: Tombstones = services_of(gw.app).erasure.tombstones  # type: ignore[attr-defined]
    engine = create_engine(database_url)
    try:
        summary = await import_file(
            create_sessionmaker(engine), path, "shopify", tombstones=tombstones
        )
    finally:
        await engine.dispose()
    assert (summary.read, summary.erased, summary.created, summary.rejected) == (3, 3, 0, [])


async def test_an_erased_address_the_linker_calls_a_placeholder_still_refuses_records(
    gw: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    # Found by an attacker: "email@…" and "…@mailinator.com" never link records, so the
    # webhook and import paths did not check them against the tombstones, and a Segment
    # identify carrying an erased such address created the person again, names and all.
    address = f"email@{uuid.uuid4().hex[:12]}-shop.com"
    upserted = await _upsert(gw, email=address, firstName="Ada", lastName="Lovelace")
    assert "errors" not in await gql(gw, FORGET, id=upserted["data"]["upsertCustomer"]["id"])
    customers = await _count(database_url, Customer)
    response = await gw.post(
        **segment_request(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": f"usr_{uuid.uuid4().hex}",
                "traits": {"email": address.upper(), "first_name": "Ada", "last_name": "L"},
            }
        )
    )
    assert response.status_code == 200, response.text
    assert [e["status"] for e in response.json()["events"]] == ["erased"], response.text
    path = tmp_path / "shop.csv"
    path.write_text(f"external_id,email,first_name\n{unique_number()}, {address} ,Ada\n")
    tombstones: Tombstones = services_of(gw.app).erasure.tombstones  # type: ignore[attr-defined]
    engine = create_engine(database_url)
    try:
        summary = await import_file(
            create_sessionmaker(engine), path, "shopify", tombstones=tombstones
        )
    finally:
        await engine.dispose()
    assert (summary.erased, summary.created) == (1, 0)
    assert await _count(database_url, Customer) == customers


async def test_unlinked_events_naming_the_person_go_with_them_and_stay_out(
    gw: httpx.AsyncClient, database_url: str
) -> None:
    person = await merged_person(gw)
    device = f"anon-{uuid.uuid4().hex}"
    stored: dict[str, dict[str, Any]] = {
        # Anonymous, naming the merged-in e-mail in context.traits.
        "traits": {
            "type": "track",
            "event": "Product Viewed",
            "messageId": str(uuid.uuid4()),
            "anonymousId": f"anon-{uuid.uuid4().hex}",
            "context": {"traits": {"email": person.email_b}},
        },
        # Identified: ties the device to the person.
        "identified": {
            "type": "track",
            "event": "Signed In",
            "messageId": str(uuid.uuid4()),
            "userId": person.segment_id,
            "anonymousId": device,
        },
        # Anonymous, from that device only.
        "device": {
            "type": "track",
            "event": "Cart Viewed",
            "messageId": str(uuid.uuid4()),
            "anonymousId": device,
        },
        # Anonymous, phone in traits.
        "phone": {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "anonymousId": f"anon-{uuid.uuid4().hex}",
            "traits": {"phone": person.phone_a},
        },
    }
    for what, event in stored.items():
        response = await gw.post(**segment_request(event))
        assert response.json()["events"][0]["status"] == "processed", (what, response.text)
    ids = [event["messageId"] for event in stored.values()]
    assert await _events(database_url, ids) == len(ids)
    # A subject access request shows them too.
    exported = await gql(gw, "query($id: ID!) { exportCustomer(id: $id) }", id=person.merged)
    unlinked = exported["data"]["exportCustomer"]["unlinked_events"]
    named = [stored[k]["messageId"] for k in ("traits", "device", "phone")]
    assert sorted(e["event_id"] for e in unlinked) == sorted(named), exported

    forgotten = await gql(gw, FORGET, id=person.merged)
    assert forgotten["data"]["forgetCustomer"]["events"] == len(ids)
    assert await _events(database_url, ids) == 0

    later: dict[str, dict[str, Any]] = {
        "traits e-mail": {"traits": {"email": person.email_a.upper()}},
        "properties e-mail": {"properties": {"email": person.email_b}},
        "device": {"anonymousId": device},
        "phone": {"context": {"traits": {"phone": person.phone_b}}},
    }
    for what, extra in later.items():
        event = {
            "type": "track",
            "event": "Page Viewed",
            "messageId": str(uuid.uuid4()),
            "anonymousId": f"anon-{uuid.uuid4().hex}",
            **extra,
        }
        response = await gw.post(**segment_request(event))
        assert response.json()["events"][0]["status"] == "erased", (what, response.text)
        assert await _events(database_url, [event["messageId"]]) == 0, what
    # Someone else's anonymous activity is still kept.
    other: dict[str, Any] = {
        "type": "track",
        "event": "Page Viewed",
        "messageId": str(uuid.uuid4()),
    }
    other |= {"anonymousId": "anon-other", "traits": {"email": unique_email()}}
    assert (await gw.post(**segment_request(other))).json()["events"][0]["status"] == "processed"


async def _count(database_url: str, model: Any) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        await engine.dispose()


async def _events(database_url: str, message_ids: list[str]) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(
                select(func.count()).where(
                    Event.source == "segment", Event.event_id.in_(message_ids)
                )
            )
            return int(found or 0)
    finally:
        await engine.dispose()


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

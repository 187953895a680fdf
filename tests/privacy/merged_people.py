"""Two customers merged into one person, and the queries the erasure-after-merge tests share."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Event
from gateway.ingest.importer import ImportSummary, import_file
from gateway.privacy.tombstones import Tombstones
from tests.conftest import (
    unique_email,
    unique_number,
)
from tests.gql_client import gql
from tests.in_process import services_of

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


async def upsert(gw: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
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
    a = await upsert(
        gw,
        email=person.email_a,
        phone=person.phone_a,
        identities=[{"source": "hubspot", "externalId": person.hubspot_id}],
    )
    b = await upsert(
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


async def count_rows(database_url: str, model: Any) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        await engine.dispose()


async def stored_events(database_url: str, message_ids: list[str]) -> int:
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


async def import_as_shop(gw: httpx.AsyncClient, database_url: str, path: Path) -> ImportSummary:
    """``gateway import`` of a Shopify file, checked against the gateway's tombstones."""
    tombstones: Tombstones = services_of(gw.app).erasure.tombstones  # type: ignore[attr-defined]
    engine = create_engine(database_url)
    try:
        return await import_file(
            create_sessionmaker(engine), path, "shopify", tombstones=tombstones
        )
    finally:
        await engine.dispose()

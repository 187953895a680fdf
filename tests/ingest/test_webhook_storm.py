"""A webhook storm on Postgres: near-identical records of overlapping customers, each
delivered twice at the same time.  No stored event is answered 5xx, none is lost or
stored twice, and the profiles agree with the identities and events they hold."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bench.faults.storm import storm_customers
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Attribute, Customer, Event, Identity
from gateway.settings import load_settings
from tests.in_process import asgi, lifespan
from tests.ingest.webhook_requests import BASE, realtime_app, shopify_request

PEOPLE = 100
IN_FLIGHT = 40


@pytest.fixture
def postgres(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


async def test_a_storm_of_duplicate_deliveries_is_stored_once_and_never_answered_5xx(
    postgres: str,
) -> None:
    records = storm_customers(PEOPLE)
    deliveries = [shopify_request(record, topic="customers/update") for record in records]
    # What is under test is deduplication under concurrency, not overload: on a starved
    # machine 80 requests can wait longer than the 2 s default for one of the pool's
    # connections and be answered 503 (tests/faults covers that path), so they may wait.
    settings = load_settings(
        database_url=postgres, cache_url="memory://", database_pool_timeout_s=30
    )
    app = realtime_app(settings)
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def twice(client: httpx.AsyncClient, delivery: dict[str, Any]) -> list[httpx.Response]:
        async with gate:
            pair = await asyncio.gather(client.post(**delivery), client.post(**delivery))
            return list(pair)

    async with (
        lifespan(app),
        httpx.AsyncClient(transport=asgi(app), base_url=BASE, timeout=120) as client,
    ):
        pairs = await asyncio.gather(*(twice(client, d) for d in deliveries))

    assert Counter(r.status_code for pair in pairs for r in pair) == {200: 2 * len(records)}
    for pair in pairs:
        # One copy stored the event, the other found it stored.
        assert sorted(r.json()["status"] for r in pair) == ["duplicate", "processed"]
    acknowledged = {d["headers"]["X-Shopify-Webhook-Id"] for d in deliveries}

    engine = create_engine(postgres)
    try:
        async with engine.connect() as connection:
            events = (
                await connection.execute(
                    select(Event.event_id, Event.customer_id).where(
                        Event.event_id.in_(acknowledged)
                    )
                )
            ).all()
            external_ids = [str(r["id"]) for r in records]
            owners = dict(
                (
                    await connection.execute(
                        select(Identity.external_id, Identity.customer_id).where(
                            Identity.source == "shopify", Identity.external_id.in_(external_ids)
                        )
                    )
                ).all()
            )
            customers = dict(
                (
                    await connection.execute(
                        select(Customer.id, Customer.email).where(
                            Customer.id.in_(set(owners.values()))
                        )
                    )
                ).all()
            )
            emails = {r["email"] for r in records}
            holders = list(
                await connection.scalars(select(Customer.id).where(Customer.email.in_(emails)))
            )
            observations = (
                await connection.execute(
                    select(Attribute.customer_id, Attribute.name, Attribute.value).where(
                        Attribute.customer_id.in_(set(owners.values()))
                    )
                )
            ).all()
    finally:
        await engine.dispose()

    # Every acknowledged event stored exactly once, and linked to its record's owner.
    assert sorted(event_id for event_id, _ in events) == sorted(acknowledged)
    by_event = {
        d["headers"]["X-Shopify-Webhook-Id"]: str(r["id"])
        for d, r in zip(deliveries, records, strict=True)
    }
    assert all(owner == owners[by_event[event_id]] for event_id, owner in events)
    # Every record has one owner, which exists, and no customer outside them (one left
    # empty by a fold, a second one made for an address) holds one of the addresses.
    assert len(owners) == len(records)
    assert set(customers) == set(owners.values())
    assert set(holders) <= set(customers)
    values = defaultdict(set)
    for owner, name, value in observations:
        values[owner, name].add(value)
    assert all(email in values[owner, "email"] for owner, email in customers.items())
    # The one observation all four records made is kept once per person.
    names = Counter(owner for owner, name, _ in observations if name == "first_name")
    assert set(names.values()) == {1}

"""Customers with stored Segment calls, made for the store-read tests."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
from sqlalchemy import insert

from gateway.db.engine import create_engine
from gateway.db.models import Event
from tests.conftest import unique_email
from tests.gql_client import gql


async def customer_with_events(
    client: httpx.AsyncClient, behaviour_url: str, events: list[tuple[str, datetime, str]]
) -> str:
    """A new customer who consented to personalisation, with these (event, time,
    session) track calls stored; returns their id."""
    created = await gql(
        client,
        "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }",
        e=unique_email("behaviour"),
    )
    customer_id: str = created["data"]["upsertCustomer"]["id"]
    consent = await gql(
        client,
        "mutation($id: ID!) { setConsent(customerId: $id, purpose: PERSONALISATION, "
        "granted: true) { granted } }",
        id=customer_id,
    )
    assert "errors" not in consent, consent
    if not events:
        return customer_id
    engine = create_engine(behaviour_url)
    async with engine.begin() as connection:
        await connection.execute(
            insert(Event),
            [
                {
                    "customer_id": uuid.UUID(customer_id),
                    "source": "segment",
                    "event_id": str(uuid.uuid4()),
                    "type": f"track:{name}",
                    "occurred_at": at,
                    "properties": {
                        "event": name,
                        "properties": {"session_id": session, "product_id": "p1", "price": 5},
                    },
                }
                for name, at, session in events
            ],
        )
    await engine.dispose()
    return customer_id

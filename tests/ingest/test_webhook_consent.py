"""The Segment webhook keeps no call of a customer with a stored "no" to analytics, by
the event stream's own rule: acknowledged (so Segment does not retry), not stored."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import insert, select

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Attribute, Event
from gateway.privacy.consent import ConsentStore, Purpose
from tests.conftest import unique_email
from tests.gql_client import gql
from tests.ingest.test_esp_webhooks import profile, subscribed
from tests.ingest.webhook_requests import (
    PROFILE,
    segment_request,
    sendgrid_event,
    sendgrid_request,
)


def _identify(user_id: str, email: str, first_name: str) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": str(uuid.uuid4()),
        "userId": user_id,
        "traits": {"email": email, "firstName": first_name},
    }


def _track(user_id: str) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": user_id,
        "event": "Product Viewed",
        "properties": {"sku": "A-1"},
    }


async def _stored(database_url: str, message_ids: list[str]) -> set[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.scalars(
                select(Event.event_id).where(Event.event_id.in_(message_ids))
            )
            return set(rows)
    finally:
        await engine.dispose()


async def test_a_refusal_of_analytics_keeps_the_customers_segment_calls_out(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    refusing, other = f"user-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}"
    email = unique_email("no-analytics")
    for user_id, address in ((refusing, email), (other, unique_email("analytics"))):
        response = await gateway.post(**segment_request(_identify(user_id, address, "Ada")))
        assert response.status_code == 200
    customer = (await gql(gateway, PROFILE, email=email))["data"]["customer"]["id"]
    engine = create_engine(database_url)
    try:
        consents = ConsentStore(create_sessionmaker(engine))
        await consents.record(uuid.UUID(customer), Purpose.ANALYTICS, False, "preferences")
    finally:
        await engine.dispose()

    refused, kept = _track(refusing), _track(other)
    answers = [await gateway.post(**segment_request(call)) for call in (refused, kept)]
    # Acknowledged: Segment must not retry an event that will never be stored.
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["events"][0]["status"] == "no_consent"
    assert answers[1].json()["events"][0]["status"] == "processed"
    assert await _stored(database_url, [refused["messageId"], kept["messageId"]]) == {
        kept["messageId"]
    }

    # An identify's traits still reach the profile (as from the stream); the call is not kept.
    renamed = _identify(refusing, email, "Adah")
    answer = await gateway.post(**segment_request(renamed))
    assert answer.json()["events"][0]["status"] == "no_consent"
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"]["firstName"] == "Adah"
    assert await _stored(database_url, [renamed["messageId"]]) == set()


async def test_an_unsubscribe_from_an_address_merged_away_withdraws_the_persons_consent(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    # Two records of one person, both subscribed, merged: the survivor keeps one address
    # as theirs. An unsubscribe from a mail sent to the other one (before the merge, or
    # by a list that still holds it) is still theirs: it was ignored, and they stayed
    # subscribed.
    old, first = await subscribed(gateway)
    new, second = await subscribed(gateway)
    merged = await gql(
        gateway,
        'mutation($a: ID!, $b: ID!) { mergeCustomers(into: $a, from: $b, reason: "same") '
        "{ id email } }",
        a=second,
        b=first,
    )
    survivor = merged["data"]["mergeCustomers"]
    other = old if survivor["email"] == new else new
    answer = await gateway.post(**sendgrid_request([sendgrid_event(other, "unsubscribe")]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"][0]["customerId"] == survivor["id"]
    found = await profile(gateway, survivor["email"])
    assert found["suppressed"] is True
    assert found["consent"]["emailMarketing"] is False

    # An address two customers were seen with (a family's) names neither: one person's
    # unsubscribe never withdraws another's consent.
    shared = unique_email("family")
    one, two = await subscribed(gateway), await subscribed(gateway)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(Attribute),
                [
                    {
                        "customer_id": uuid.UUID(customer_id),
                        "name": "email",
                        "value": shared,
                        "source": "crm",
                        "observed_at": datetime(2020, 1, 1),
                    }
                    for _, customer_id in (one, two)
                ],
            )
    finally:
        await engine.dispose()
    answer = await gateway.post(**sendgrid_request([sendgrid_event(shared, "unsubscribe")]))
    assert answer.json()["events"][0]["status"] == "ignored"
    for email, _ in (one, two):
        assert (await profile(gateway, email))["suppressed"] is False

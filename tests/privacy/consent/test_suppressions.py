"""An ESP's withdrawal for an address no customer has yet is kept: the customer created
later with that address (through the API, a webhook, an import) starts suppressed,
with the withdrawal's source and time, and a later opt-in still wins."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.ingest.importer import import_file
from gateway.privacy.erasure import Tombstones
from gateway.settings import load_settings
from tests.conftest import unique_email
from tests.gql_client import gql
from tests.ingest.webhook_requests import (
    external_id,
    mandrill_event,
    mandrill_request,
    sendgrid_event,
    sendgrid_request,
    shopify_request,
)

UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id suppressed } }"
PROFILE = (
    "query($email: String!) { customer(email: $email) { id suppressed "
    "consent { emailMarketing } consents { purpose granted source recordedAt } } }"
)
OPT_IN = (
    "mutation($id: ID!) { setConsent(customerId: $id, purpose: EMAIL_MARKETING, "
    'granted: true, source: "preference-centre") { recordedAt } }'
)


async def profile(gw: httpx.AsyncClient, email: str) -> dict[str, Any]:
    body = await gql(gw, PROFILE, email=email)
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["customer"]
    return found


def email_statement(found: dict[str, Any]) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [
        c for c in found["consents"] if c["purpose"] == "EMAIL_MARKETING"
    ]
    assert statements, f"no email-marketing statement: {found}"
    return statements[0]


def moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def unsubscribed_stranger(gw: httpx.AsyncClient, event: str = "unsubscribe") -> str:
    """An address nobody has, unsubscribed through SendGrid: acknowledged, no event kept."""
    email = unique_email("stranger")
    response = await gw.post(**sendgrid_request([sendgrid_event(email, event)]))
    assert response.status_code == 200, response.text
    assert [e["status"] for e in response.json()["events"]] == ["ignored"]
    assert (await gql(gw, PROFILE, email=email))["data"]["customer"] is None  # no one made
    return email


async def test_a_customer_created_after_their_unsubscribe_starts_suppressed(
    gw: httpx.AsyncClient,
) -> None:
    before = time.time()
    email = await unsubscribed_stranger(gw)
    after = time.time()
    created = await gql(gw, UPSERT, email=email.upper())  # the address as another writes it
    assert created["data"]["upsertCustomer"]["suppressed"] is True
    found = await profile(gw, email)
    assert found["suppressed"] is True
    assert found["consent"]["emailMarketing"] is False
    statement = email_statement(found)
    assert statement["source"] == "sendgrid:unsubscribe"
    assert statement["granted"] is False
    assert before - 1 <= moment(statement["recordedAt"]) <= after + 1  # when it arrived

    # An explicit opt-in made afterwards is the newer statement: it wins.
    assert "errors" not in await gql(gw, OPT_IN, id=found["id"])
    again = await profile(gw, email)
    assert again["suppressed"] is False
    assert email_statement(again)["source"] == "preference-centre"


async def test_a_customer_a_webhook_creates_starts_suppressed(gw: httpx.AsyncClient) -> None:
    email = unique_email("reported")
    event = mandrill_event(email, "spam")
    response = await gw.post(**mandrill_request([event]))
    assert response.status_code == 200, response.text
    payload = {"id": external_id(), "email": email, "first_name": "Ada"}
    created = await gw.post(**shopify_request(payload, topic="customers/create"))
    assert created.status_code == 200, created.text
    found = await profile(gw, email)
    assert found["suppressed"] is True
    assert email_statement(found)["source"] == "mandrill:spam"


async def test_an_imported_customer_starts_suppressed(
    gw: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    withdrawn = await unsubscribed_stranger(gw, "group_unsubscribe")
    other = unique_email("untouched")
    path = tmp_path / "people.csv"
    path.write_text(
        f"external_id,email,first_name\n{external_id()},{withdrawn},Ann\n"
        f"{external_id()},{other},Bob\n"
    )
    engine = create_engine(database_url)
    try:
        tombstones = Tombstones.from_settings(load_settings(database_url=database_url))
        summary = await import_file(
            create_sessionmaker(engine), path, "crm-import", tombstones=tombstones
        )
    finally:
        await engine.dispose()
    assert summary.created == 2
    found = await profile(gw, withdrawn)
    assert found["suppressed"] is True
    assert email_statement(found)["source"] == "sendgrid:group_unsubscribe"
    untouched = await profile(gw, other)
    assert untouched["consents"] == []  # only the address that withdrew


async def test_the_newest_withdrawal_of_an_address_is_kept(gw: httpx.AsyncClient) -> None:
    email = await unsubscribed_stranger(gw, "spamreport")
    second = await gw.post(**sendgrid_request([sendgrid_event(email, "unsubscribe")]))
    assert second.status_code == 200, second.text
    created = await gql(gw, UPSERT, email=email)
    assert created["data"]["upsertCustomer"]["suppressed"] is True
    assert email_statement(await profile(gw, email))["source"] == "sendgrid:unsubscribe"

"""An ESP's withdrawal for an address no customer has yet is kept: the customer created
later with that address (through the API, a webhook, an import) starts suppressed,
with the withdrawal's source and time, and a later opt-in still wins."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.ingest.importer import import_file
from gateway.privacy.tombstones import Tombstones
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
from tests.privacy.consent.esp_people import customer_answer, moment, shopify_customer

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
    return await customer_answer(gw, PROFILE, email)


def email_statement(found: dict[str, Any]) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [
        c for c in found["consents"] if c["purpose"] == "EMAIL_MARKETING"
    ]
    assert statements, f"no email-marketing statement: {found}"
    return statements[0]


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


GRANT = (
    "mutation($id: ID!) { setConsent(customerId: $id, purpose: EMAIL_MARKETING, "
    'granted: true, source: "signup") { recordedAt } }'
)
HISTORY = (
    "query($email: String!) { customer(email: $email) { id "
    "consentHistory(purpose: EMAIL_MARKETING) { granted source } } }"
)


async def test_a_stored_customer_taking_on_an_unsubscribed_address_is_suppressed(
    gw: httpx.AsyncClient,
) -> None:
    """An email change: the customer existed (subscribed) before the address unsubscribed,
    and takes it on afterwards. Their cached profile must not keep them mailable."""
    old = unique_email("before-change")
    shop_id = external_id()
    await shopify_customer(
        gw, {"id": shop_id, "email": old, "first_name": "Cy"}, "customers/create"
    )
    customer_id = (await profile(gw, old))["id"]
    assert "errors" not in await gql(gw, GRANT, id=customer_id)
    assert (await profile(gw, old))["suppressed"] is False  # and now cached so

    before = time.time()
    new = await unsubscribed_stranger(gw)
    after = time.time()
    await shopify_customer(
        gw, {"id": shop_id, "email": new, "first_name": "Cy"}, "customers/update"
    )
    found = await profile(gw, new)
    assert found["id"] == customer_id  # the same customer, at their new address
    assert found["suppressed"] is True
    assert found["consent"]["emailMarketing"] is False
    statement = email_statement(found)
    assert (statement["source"], statement["granted"]) == ("sendgrid:unsubscribe", False)
    assert before - 1 <= moment(statement["recordedAt"]) <= after + 1  # when it arrived

    # The address seen again changes nothing: the withdrawal is in the history once.
    await shopify_customer(
        gw, {"id": shop_id, "email": new, "first_name": "Cyd"}, "customers/update"
    )
    history = (await gql(gw, HISTORY, email=new))["data"]["customer"]["consentHistory"]
    assert [(h["granted"], h["source"]) for h in history] == [
        (False, "sendgrid:unsubscribe"),
        (True, "signup"),
    ]


async def test_an_import_giving_a_stored_customer_an_unsubscribed_address_suppresses_them(
    gw: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    old, crm_id = unique_email("imported-before"), external_id()
    path = tmp_path / "people.csv"
    engine = create_engine(database_url)
    try:
        tombstones = Tombstones.from_settings(load_settings(database_url=database_url))
        sessions = create_sessionmaker(engine)
        path.write_text(f"external_id,email,first_name\n{crm_id},{old},Dee\n")
        assert (await import_file(sessions, path, "crm-import", tombstones=tombstones)).created == 1
        customer_id = (await profile(gw, old))["id"]
        assert "errors" not in await gql(gw, GRANT, id=customer_id)
        assert (await profile(gw, old))["suppressed"] is False

        reported = await unsubscribed_stranger(gw, "spamreport")
        path.write_text(f"external_id,email,first_name\n{crm_id},{reported},Dee\n")
        summary = await import_file(sessions, path, "crm-import", tombstones=tombstones)
    finally:
        await engine.dispose()
    assert summary.created == 0
    found = await profile(gw, reported)
    assert found["id"] == customer_id
    assert found["suppressed"] is True
    assert email_statement(found)["source"] == "sendgrid:spamreport"


async def test_an_opt_in_newer_than_the_withdrawal_stands_when_the_address_is_taken_on(
    gw: httpx.AsyncClient,
) -> None:
    """The newest-statement rule, as for a customer created with the address: an opt-in
    made after the address unsubscribed outranks that withdrawal."""
    new = await unsubscribed_stranger(gw)
    old, shop_id = unique_email("opted-in"), external_id()
    await shopify_customer(gw, {"id": shop_id, "email": old}, "customers/create")
    assert "errors" not in await gql(gw, OPT_IN, id=(await profile(gw, old))["id"])
    await shopify_customer(gw, {"id": shop_id, "email": new}, "customers/update")
    found = await profile(gw, new)
    assert found["suppressed"] is False
    assert email_statement(found)["source"] == "preference-centre"

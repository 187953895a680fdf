"""An ESP's recipient field as ESPs may write it: an address that names one mailbox
unambiguously (a display name, a quoted local part that needs no quotes, a domain's
trailing dot) is that address, normalised as every address is; what is not one address
is refused event by event, and a withdrawal refused so is counted
(``gateway_webhook_events_rejected_total``) and logged, without the address."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from tests.conftest import unique_email
from tests.gql_client import gql
from tests.ingest.test_esp_webhooks import profile, subscribed
from tests.ingest.webhook_requests import (
    mandrill_event,
    mandrill_request,
    sendgrid_event,
    sendgrid_request,
)

UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id suppressed } }"
STATEMENTS = (
    "mutation($email: String!) "
    "{ upsertCustomer(input: {email: $email}) { consents { purpose granted source } } }"
)
FORMS = {
    "quoted": '"{local}"@{domain}',
    "trailing dot": "{local}@{upper}.",
    "display name": "Ada <{local}@{domain}>",
    "quoted display name": '"Lovelace, Ada" <{local}@{upper}.>',
}


def written(email: str, form: str) -> str:
    local, domain = email.split("@")
    return FORMS[form].format(local=local, domain=domain, upper=domain.upper())


@pytest.mark.parametrize("form", sorted(FORMS))
async def test_an_unsubscribe_naming_the_address_another_way_suppresses(
    gw: httpx.AsyncClient, form: str
) -> None:
    email, customer_id = await subscribed(gw)
    event = sendgrid_event(written(email, form), "unsubscribe")
    response = await gw.post(**sendgrid_request([event]))
    assert response.status_code == 200, response.text
    (answer,) = response.json()["events"]
    assert (answer["status"], answer["customerId"]) == ("processed", customer_id)
    assert (await profile(gw, email))["suppressed"] is True


async def test_a_mandrill_unsubscribe_with_a_display_name_suppresses(
    gw: httpx.AsyncClient,
) -> None:
    email, _ = await subscribed(gw)
    event = mandrill_event(written(email, "display name"), "unsub")
    response = await gw.post(**mandrill_request([event]))
    assert [e["status"] for e in response.json()["events"]] == ["processed"]
    assert (await profile(gw, email))["suppressed"] is True


async def test_a_stranger_written_another_way_is_kept_suppressed(
    gw: httpx.AsyncClient,
) -> None:
    """The suppression kept for an address nobody has is the normalised address's: the
    customer created later with it starts suppressed."""
    email = unique_email("stranger")
    event = sendgrid_event(written(email, "display name"), "spamreport")
    response = await gw.post(**sendgrid_request([event]))
    assert [e["status"] for e in response.json()["events"]] == ["ignored"]
    created = await gql(gw, UPSERT, email=email)
    assert created["data"]["upsertCustomer"]["suppressed"] is True


def _rejected(text: str, source: str, consequence: str) -> float:
    labels = f'consequence="{consequence}",source="{source}"'
    pattern = rf"^gateway_webhook_events_rejected_total\{{{labels}\}} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_what_is_not_one_address_is_refused_counted_and_logged_without_it(
    gw: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    email, _ = await subscribed(gw)
    local, domain = email.split("@")
    refused = [
        f"Ada <{email}>, Bob <bob@{domain}>",  # two addresses: whose is it?
        f'"{local} x"@{domain}',  # a quoted part that needs its quotes: no customer's
        f"{local}@{domain}..",
        f"{local}@localhost",
    ]
    metrics = (await gw.get("/metrics")).text
    before = {kind: _rejected(metrics, "sendgrid", kind) for kind in ("withdraw", "none")}
    batch = [
        *(sendgrid_event(address, "unsubscribe") for address in refused[:3]),
        sendgrid_event(refused[3], "open"),
        sendgrid_event(email, "open"),
    ]
    with caplog.at_level(logging.WARNING, logger="gateway.webhooks"):
        response = await gw.post(**sendgrid_request(batch))
    assert response.status_code == 200, response.text
    answers = response.json()["events"]
    assert [a["status"] for a in answers] == ["rejected"] * 4 + ["processed"]
    assert all(a["reason"].endswith("not an email address") for a in answers[:4])
    assert local not in response.text
    metrics = (await gw.get("/metrics")).text
    assert _rejected(metrics, "sendgrid", "withdraw") == before["withdraw"] + 3
    assert _rejected(metrics, "sendgrid", "none") == before["none"] + 1
    (logged,) = [r for r in caplog.records if r.getMessage() == "webhook events rejected"]
    assert (logged.__dict__["events"], logged.__dict__["withdrawals"]) == (4, 3)
    assert all(local not in str(value) for value in logged.__dict__.values())
    assert (await profile(gw, email))["suppressed"] is False  # nobody's withdrawal


async def test_an_event_id_met_before_keeps_no_statement_for_a_stranger(
    gw: httpx.AsyncClient,
) -> None:
    """An id is one event: its copy naming an address nobody has, in the same batch or
    after the first was stored, is a duplicate and keeps no suppression for it."""
    email, _ = await subscribed(gw)
    inside, after = unique_email("inside"), unique_email("after")
    opened = sendgrid_event(email, "open")
    copy = sendgrid_event(inside, "unsubscribe", sg_event_id=opened["sg_event_id"])
    response = await gw.post(**sendgrid_request([opened, copy]))
    assert [e["status"] for e in response.json()["events"]] == ["processed", "duplicate"]
    late = sendgrid_event(after, "spamreport", sg_event_id=opened["sg_event_id"])
    response = await gw.post(**sendgrid_request([late]))
    assert [e["status"] for e in response.json()["events"]] == ["duplicate"]
    for address in (inside, after):
        created = await gql(gw, STATEMENTS, email=address)
        assert created["data"]["upsertCustomer"]["consents"] == [], address


async def test_an_id_naming_nobody_first_and_a_customer_after_is_that_customers(
    gw: httpx.AsyncClient,
) -> None:
    """Two copies of one id in a batch, the first for an address nobody has: the copy
    naming the customer is the event (stored, their withdrawal applied), not lost."""
    email, customer_id = await subscribed(gw)
    mine = sendgrid_event(email, "unsubscribe")
    stray = sendgrid_event(unique_email("stray"), "unsubscribe", sg_event_id=mine["sg_event_id"])
    response = await gw.post(**sendgrid_request([stray, mine]))
    statuses = [(e["status"], e["customerId"]) for e in response.json()["events"]]
    assert statuses == [("duplicate", None), ("processed", customer_id)]
    assert (await profile(gw, email))["suppressed"] is True

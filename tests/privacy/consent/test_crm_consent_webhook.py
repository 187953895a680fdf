"""A consent the CRM changes reaches the profile by its webhook: HubSpot's
``consent_email_marketing`` (and the other purposes' properties) set to ``false`` is a
withdrawal of the CRM's at the change's time, stored as one, so the customer is
suppressed at once and leaves every send audience. (An outside check: it was stored as a
plain attribute; only a live CRM read showed it, and segments, which read stored consent,
kept the person in.)"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.conftest import unique_email
from tests.gql_client import gql
from tests.ingest.webhook_requests import hubspot_change, hubspot_request

PROFILE = (
    "query($email: String!) { customer(email: $email) { id suppressed "
    "consent { emailMarketing analytics } "
    "consentHistory(purpose: EMAIL_MARKETING) { granted source } } }"
)


async def _send(gw: httpx.AsyncClient, *events: dict[str, Any]) -> httpx.Response:
    return await gw.post(**hubspot_request(list(events)))


def _at(change: dict[str, Any], seconds_ago: float) -> dict[str, Any]:
    return {**change, "occurredAt": int((time.time() - seconds_ago) * 1000)}


async def _contact(gw: httpx.AsyncClient) -> tuple[int, str]:
    contact, email = uuid.uuid4().int % 10**9, unique_email("crm")
    response = await _send(gw, _at(hubspot_change(contact, "email", email), 60))
    assert response.status_code == 200, response.text
    return contact, email


async def test_a_withdrawal_in_the_crm_suppresses_the_customer(gw: httpx.AsyncClient) -> None:
    contact, email = await _contact(gw)
    granted = await _send(gw, _at(hubspot_change(contact, "consent_email_marketing", "true"), 30))
    assert granted.status_code == 200, granted.text
    before = (await gql(gw, PROFILE, email=email))["data"]["customer"]
    assert (before["suppressed"], before["consent"]["emailMarketing"]) == (False, True)

    withdrawn = await _send(
        gw,
        _at(hubspot_change(contact, "consent_email_marketing", "false"), 10),
        # As the adapter reads the property (a fresh review: "No" refused the batch).
        _at(hubspot_change(contact, "consent_analytics", " No "), 10),
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert [e["status"] for e in withdrawn.json()["events"]] == ["processed", "processed"]
    after = (await gql(gw, PROFILE, email=email))["data"]["customer"]
    assert after["suppressed"] is True
    assert after["consent"] == {"emailMarketing": False, "analytics": False}
    assert after["consentHistory"] == [
        {"granted": False, "source": "hubspot"},
        {"granted": True, "source": "hubspot"},
    ]

    # HubSpot retries and reorders: the grant delivered again, late, does not outrank the
    # withdrawal made after it; nor does a cleared checkbox say anything.
    late = _at(hubspot_change(contact, "consent_email_marketing", "true"), 20)
    cleared = _at(hubspot_change(contact, "consent_email_marketing", ""), 5)
    assert (await _send(gw, late, cleared)).status_code == 200
    still = (await gql(gw, PROFILE, email=email))["data"]["customer"]
    assert still["suppressed"] is True


async def test_a_consent_value_that_is_no_boolean_is_refused_naming_it(
    gw: httpx.AsyncClient,
) -> None:
    contact, email = await _contact(gw)
    response = await _send(gw, hubspot_change(contact, "consent_email_marketing", "maybe"))
    # (the property is a checkbox: true/false, yes/no, on/off or 1/0 are what it says)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "0.propertyValue"
    assert (await gql(gw, PROFILE, email=email))["data"]["customer"]["suppressed"] is True

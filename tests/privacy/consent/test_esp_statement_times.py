"""An ESP's withdrawal counts at the event's own time (SendGrid's ``timestamp``,
Mandrill's ``ts``; whole seconds, so the end of that second), never later than it
arrives: a late delivery does not outrank an opt-in made after the person unsubscribed,
and a future-dated one does not outrank what is said until it is due. Newest statement
wins; on a true tie (the same instant) the withdrawal does, whoever writes second."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.db.access_models import EmailSuppression
from gateway.db.engine import create_engine
from gateway.db.models import Consent, as_utc
from gateway.privacy import consent
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
from tests.privacy.consent.esp_people import customer_answer, moment

UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id } }"
SAY = (
    "mutation($id: ID!, $granted: Boolean!) { setConsent(customerId: $id, "
    'purpose: EMAIL_MARKETING, granted: $granted, source: "preference-centre") '
    "{ recordedAt } }"
)
PROFILE = (
    "query($email: String!) { customer(email: $email) { id suppressed "
    "consents { purpose granted source recordedAt } "
    "consentHistory(purpose: EMAIL_MARKETING) { granted source recordedAt } } }"
)


async def profile(gw: httpx.AsyncClient, email: str) -> dict[str, Any]:
    return await customer_answer(gw, PROFILE, email)


async def opted_in(gw: httpx.AsyncClient) -> tuple[str, str]:
    email = unique_email("opted-in")
    customer = (await gql(gw, UPSERT, email=email))["data"]["upsertCustomer"]["id"]
    assert "errors" not in await gql(gw, SAY, id=customer, granted=True)
    return email, customer


async def test_a_late_mandrill_unsubscribe_does_not_outrank_a_later_opt_in(
    gw: httpx.AsyncClient,
) -> None:
    email, _ = await opted_in(gw)
    ts = int(time.time()) - 3600  # unsubscribed an hour ago, delivered only now
    response = await gw.post(**mandrill_request([mandrill_event(email, "unsub", ts=ts)]))
    assert [e["status"] for e in response.json()["events"]] == ["processed"]
    found = await profile(gw, email)
    assert found["suppressed"] is False
    assert [c["source"] for c in found["consents"]] == ["preference-centre"]
    # Kept in the history at its own time, the end of its second.
    (withdrawal,) = [h for h in found["consentHistory"] if not h["granted"]]
    assert withdrawal["source"] == "mandrill:unsub"
    assert ts <= moment(withdrawal["recordedAt"]) < ts + 1


async def test_a_future_dated_unsubscribe_counts_when_it_arrives(gw: httpx.AsyncClient) -> None:
    email, customer = await opted_in(gw)
    ahead = int(time.time()) + 86400  # an ESP clock a day ahead
    event = sendgrid_event(email, "unsubscribe", timestamp=ahead)
    arrived = time.time()
    assert (await gw.post(**sendgrid_request([event]))).status_code == 200
    found = await profile(gw, email)
    assert found["suppressed"] is True
    assert moment(found["consents"][0]["recordedAt"]) <= time.time() + 0.001
    assert moment(found["consents"][0]["recordedAt"]) >= arrived - 1
    # An opt-in made after it arrived is newer, as it would be after any withdrawal.
    assert "errors" not in await gql(gw, SAY, id=customer, granted=True)
    assert (await profile(gw, email))["suppressed"] is False


async def test_a_stranger_s_withdrawal_is_kept_at_its_own_time(gw: httpx.AsyncClient) -> None:
    email = unique_email("stranger")
    ts = int(time.time()) - 7200
    event = sendgrid_event(email, "unsubscribe", timestamp=ts)
    assert (await gw.post(**sendgrid_request([event]))).status_code == 200
    assert "errors" not in await gql(gw, UPSERT, email=email)
    found = await profile(gw, email)
    assert found["suppressed"] is True
    assert ts <= moment(found["consents"][0]["recordedAt"]) < ts + 1


async def _kept_at(database_url: str, email: str) -> datetime:
    digest = Tombstones.from_settings(load_settings(database_url=database_url)).email_digest(email)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            kept = await connection.scalar(
                select(EmailSuppression.recorded_at).where(EmailSuppression.digest == digest)
            )
    finally:
        await engine.dispose()
    assert kept is not None
    return as_utc(kept)


async def _state(database_url: str, customer: str, granted: bool, at: datetime) -> None:
    """A current email-marketing statement made at exactly ``at``."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                Consent.__table__.insert(),  # type: ignore[attr-defined]
                {
                    "customer_id": uuid.UUID(customer),
                    "purpose": "email_marketing",
                    "granted": granted,
                    "source": "crm-seed",
                    "recorded_at": at,
                },
            )
    finally:
        await engine.dispose()


async def test_an_address_taken_on_with_a_grant_of_the_same_instant_is_suppressed(
    gw: httpx.AsyncClient, database_url: str
) -> None:
    """A true tie between the kept withdrawal and the customer's own grant errs to
    suppression (only a newer grant stands)."""
    new = unique_email("tied")
    event = sendgrid_event(new, "unsubscribe", timestamp=int(time.time()) - 60)
    assert (await gw.post(**sendgrid_request([event]))).status_code == 200
    kept_at = await _kept_at(database_url, new)
    old, shop_id = unique_email("before-tie"), external_id()
    created = await gw.post(**shopify_request({"id": shop_id, "email": old}, "customers/create"))
    assert created.status_code == 200, created.text
    await _state(database_url, (await profile(gw, old))["id"], True, kept_at)
    changed = await gw.post(**shopify_request({"id": shop_id, "email": new}, "customers/update"))
    assert changed.status_code == 200, changed.text
    found = await profile(gw, new)
    assert found["suppressed"] is True
    assert found["consents"][0]["source"] == "sendgrid:unsubscribe"


async def test_a_grant_of_the_same_instant_as_a_withdrawal_does_not_replace_it(
    gw: httpx.AsyncClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consent store's own rule: a grant replaces a withdrawal made at the very
    same instant only if it is newer (the store's clock is held at that instant)."""
    email = unique_email("tie")
    customer = (await gql(gw, UPSERT, email=email))["data"]["upsertCustomer"]["id"]
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    await _state(database_url, customer, False, at)
    monkeypatch.setattr(consent, "utcnow", lambda: at)
    assert "errors" not in await gql(gw, SAY, id=customer, granted=True)
    assert (await profile(gw, email))["suppressed"] is True
    monkeypatch.setattr(consent, "utcnow", lambda: at + timedelta(microseconds=1))
    assert "errors" not in await gql(gw, SAY, id=customer, granted=True)
    assert (await profile(gw, email))["suppressed"] is False

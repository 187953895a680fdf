"""Consent on the console's page of a person: each purpose's statements, newest first,
as the API's ``consentHistory`` answers (a steward sees when a customer opted out and who
said so, not only the statement that counts now); and their behaviour only as the API
shows it (without consent to personalisation, none of it, their email opens and clicks
included)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from playwright.sync_api import Page, expect
from sqlalchemy import insert
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from gateway.db.models import Event
from gateway.privacy.consent import Purpose
from tests.console.conftest import Console, artifact, sign_in
from tests.console.session_client import ConsoleClient, console_client
from tests.gql_client import gql
from tests.in_process import services_of

SET_CONSENT = """mutation($id: ID!, $granted: Boolean!, $source: String!) {
  setConsent(customerId: $id, purpose: EMAIL_MARKETING, granted: $granted, source: $source) {
    recordedAt }
}"""
HISTORY = """query($id: ID!) {
  customer(id: $id) { consentHistory(purpose: EMAIL_MARKETING) { granted source recordedAt } }
}"""
ENGAGEMENT = "query($id: ID!) { customer(id: $id) { engagement { emailOpens30d emailClicks30d } } }"


def test_each_purpose_shows_every_statement_newest_first(page: Page, console: Console) -> None:
    person = console.people[14]
    found = console.api("query($e: String!) { customer(email: $e) { id } }", e=person.email)
    customer_id = found["data"]["customer"]["id"]
    for granted, source in ((False, "preference-centre"), (True, "support-call")):
        answer = console.api(SET_CONSENT, id=customer_id, granted=granted, source=source)
        assert "errors" not in answer, answer
    history = console.api(HISTORY, id=customer_id)["data"]["customer"]["consentHistory"]
    assert [(h["granted"], h["source"]) for h in history[:2]] == [
        (True, "support-call"),
        (False, "preference-centre"),
    ]
    assert len(history) == 3  # and the statement the seed recorded first

    sign_in(page, console, "reader")
    page.goto(f"/console/customers/{customer_id}")
    rows = page.locator('[data-consent-history="EMAIL_MARKETING"] [data-statement]')
    expect(rows).to_have_count(len(history))
    for index, statement in enumerate(history):
        expect(rows.nth(index)).to_contain_text("granted" if statement["granted"] else "refused")
        expect(rows.nth(index)).to_contain_text(statement["source"])
    expect(page.locator('[data-consent="emailMarketing"]')).to_have_text("granted")
    table = page.get_by_role("table", name="Email marketing")
    expect(table).to_be_visible()
    table.scroll_into_view_if_needed()
    page.screenshot(path=artifact("customer-360-consent-history.png"), full_page=True)


async def _engaged_customer(client: ConsoleClient, app: Starlette, granted: bool) -> str:
    http = client.http
    http.headers["Authorization"] = f"Bearer {client.key}"
    email = f"zq-{uuid.uuid4().hex[:10]}@example.org"
    made = await gql(
        http, "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }", e=email
    )
    customer_id = str(made["data"]["upsertCustomer"]["id"])
    consent = await gql(
        http,
        "mutation($id: ID!, $g: Boolean!) { setConsent(customerId: $id, "
        "purpose: PERSONALISATION, granted: $g) { granted } }",
        id=customer_id,
        g=granted,
    )
    assert "errors" not in consent, consent
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "customer_id": uuid.UUID(customer_id),
            "source": "sendgrid",
            "event_id": uuid.uuid4().hex,
            "type": kind,
            "occurred_at": now - timedelta(hours=1),
            "properties": {"url": "https://shop.example/p/1"} if kind == "email:click" else {},
        }
        for kind in ("email:open", "email:click")
    ]
    async with services_of(app).engine.begin() as connection:
        await connection.execute(insert(Event), rows)
    return customer_id


async def test_no_email_engagement_on_the_page_of_a_person_who_refused_personalisation(
    app: Starlette,
) -> None:
    async with console_client(app, Scope.ADMIN) as client:
        refused = await _engaged_customer(client, app, granted=False)
        granted = await _engaged_customer(client, app, granted=True)

        # The API: opens and clicks only of the person who consented.
        api = await gql(client.http, ENGAGEMENT, id=refused)
        assert api["data"]["customer"]["engagement"]["emailOpens30d"] in (None, 0), api
        api = await gql(client.http, ENGAGEMENT, id=granted)
        assert api["data"]["customer"]["engagement"]["emailOpens30d"] == 1, api

        shown = await client.http.get(f"/console/customers/{granted}")
        assert shown.status_code == 200, shown.text
        assert shown.text.count('data-kind="email"') == 2

        hidden = await client.http.get(f"/console/customers/{refused}")
        assert hidden.status_code == 200, hidden.text
        assert 'data-kind="email"' not in hidden.text
        assert "behaviour is shown only with personalisation consent" in hidden.text


async def test_the_page_of_a_person_who_only_unsubscribed_opens(app: Starlette) -> None:
    # An unsubscribe (an ESP's, or setConsent) leaves one statement, for email marketing,
    # and none for the other purposes: the page of such a person answered 500.
    async with console_client(app, Scope.ADMIN) as client:
        http = client.http
        http.headers["Authorization"] = f"Bearer {client.key}"
        email = f"zq-{uuid.uuid4().hex[:10]}@example.org"
        made = await gql(
            http, "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }", e=email
        )
        customer_id = made["data"]["upsertCustomer"]["id"]
        await gql(
            http,
            "mutation($id: ID!) { setConsent(customerId: $id, purpose: EMAIL_MARKETING, "
            'granted: false, source: "sendgrid:unsubscribe") { granted } }',
            id=customer_id,
        )
        page = await http.get(f"/console/customers/{customer_id}")
        assert page.status_code == 200, page.text
        assert 'data-consent="emailMarketing"><span class="bad">refused' in page.text
        assert "refused by sendgrid:unsubscribe" in page.text


async def test_a_purpose_keeps_its_history_when_another_has_many_statements(
    app: Starlette,
) -> None:
    # The page asked for the newest 100 statements of all purposes together: a banner
    # that states analytics consent on every visit pushed the one email opt-out out of
    # the page, whose email-marketing table then said "No statement stored".
    async with console_client(app, Scope.ADMIN) as client:
        http = client.http
        http.headers["Authorization"] = f"Bearer {client.key}"
        email = f"zq-{uuid.uuid4().hex[:10]}@example.org"
        made = await gql(
            http, "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }", e=email
        )
        customer_id = made["data"]["upsertCustomer"]["id"]
        consents = services_of(app).consents
        await consents.record(
            uuid.UUID(customer_id), Purpose.EMAIL_MARKETING, False, "preference-centre"
        )
        for _ in range(101):
            await consents.record(uuid.UUID(customer_id), Purpose.ANALYTICS, True, "banner")
        page = await http.get(f"/console/customers/{customer_id}")
        assert page.status_code == 200, page.text
        start = page.text.index('data-consent-history="EMAIL_MARKETING"')
        table = page.text[start : page.text.index("</table>", start)]
        assert table.count("data-statement") == 1, table
        assert "preference-centre" in table

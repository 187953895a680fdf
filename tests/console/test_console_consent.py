"""Consent history in a real browser: each purpose's statements on Customer 360, newest
first, as the API's ``consentHistory`` answers, so a steward sees when a customer opted
out and who said so, not only the statement that counts now."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.console.conftest import Console, artifact, sign_in

SET_CONSENT = """mutation($id: ID!, $granted: Boolean!, $source: String!) {
  setConsent(customerId: $id, purpose: EMAIL_MARKETING, granted: $granted, source: $source) {
    recordedAt }
}"""
HISTORY = """query($id: ID!) {
  customer(id: $id) { consentHistory(purpose: EMAIL_MARKETING) { granted source recordedAt } }
}"""


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

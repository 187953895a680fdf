"""Customer 360 in a real browser: a support person signs in, finds a seeded customer and
sees what the API answers for them; a read-only key sees no admin button and cannot
post one; an admin's actions reach the API and the audit log under the admin's key."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from playwright.sync_api import Locator, Page, expect

from tests.console.conftest import Console, artifact, sign_in

API_CUSTOMER = """query($email: String!) {
  customer(email: $email) {
    id email phone firstName lastName lifecycleStage company city country
    identities { source externalId }
    identityLinks { source externalId rule matchedSource matchedExternalId }
    orderCount lifetimeValue { amount currency }
    consent { emailMarketing personalisation analytics }
    scores { rfmSegment }
    recommendations(limit: 6) { id title reason }
    sources { upstream status }
  }
}"""


def _shown(value: Any) -> str:
    return "—" if value is None else str(value)


def test_a_seeded_customer_is_found_and_shown_as_the_api_answers(
    page: Page, console: Console
) -> None:
    # One with orders and behaviour to show (and consent to show it): a full page.
    candidates = console.api(
        "query($e: [String!]) { customers(emails: $e) { email orderCount "
        "consent { personalisation } recentEvents(first: 1) { type } } }",
        e=[p.email for p in console.people[30:60]],
    )["data"]["customers"]
    email = next(
        c["email"]
        for c in candidates
        if c["orderCount"] and c["consent"]["personalisation"] and c["recentEvents"]
    )
    answer = console.api(API_CUSTOMER, email=email)
    assert "errors" not in answer, answer
    expected = answer["data"]["customer"]

    sign_in(page, console, "admin")
    page.get_by_label("Find a customer").fill(email)
    page.get_by_role("button", name="Find").click()
    page.wait_for_url(f"**/console/customers/{expected['id']}")

    def field(name: str) -> Locator:
        return page.locator(f'[data-field="{name}"]')

    expect(field("id")).to_have_text(expected["id"])
    for name in ("email", "phone", "firstName", "lastName", "lifecycleStage", "company", "city"):
        expect(field(name)).to_have_text(_shown(expected[name]))
    expect(field("orderCount")).to_have_text(f"{expected['orderCount']:,}")
    value = expected["lifetimeValue"]
    expect(field("lifetimeValue")).to_have_text(
        f"{Decimal(str(value['amount'])):,.2f} {value['currency']}"
    )
    expect(field("rfmSegment")).to_have_text(expected["scores"]["rfmSegment"] or "— (no order)")
    for identity in expected["identities"]:
        expect(
            page.locator(f'[data-identity="{identity["source"]}:{identity["externalId"]}"]')
        ).to_have_count(1)
    # The rule that joined each identity, and the record it matched (the seed's evidence:
    # the CRM's record is new, the others joined it on the email).
    assert {link["rule"] for link in expected["identityLinks"]} == {"new", "email"}
    for link in expected["identityLinks"]:
        row = page.locator(f'[data-identity="{link["source"]}:{link["externalId"]}"]')
        expect(row.locator("[data-rule]")).to_have_text(link["rule"])
        matched = link["matchedSource"] and f"{link['matchedSource']}:{link['matchedExternalId']}"
        expect(row.locator("[data-matched]")).to_have_text(matched or "—")
    for purpose, granted in expected["consent"].items():
        word = {True: "granted", False: "refused", None: "no statement (no)"}[granted]
        expect(page.locator(f'[data-consent="{purpose}"]')).to_have_text(word)
    shown = page.locator("[data-recommendation]")
    expect(shown).to_have_count(len(expected["recommendations"]))
    for recommendation in expected["recommendations"]:
        item = page.locator(f'[data-recommendation="{recommendation["id"]}"]')
        expect(item).to_contain_text(recommendation["title"])
        expect(item).to_contain_text(recommendation["reason"])
    for source in expected["sources"]:
        expect(page.locator(f'[data-source="{source["upstream"]}"]')).to_have_count(1)
    expect(page.locator('[data-kind="order"]')).to_have_count(min(expected["orderCount"], 10))
    expect(page.locator('[data-kind="event"]').first).to_be_visible()
    # Every source's value of a field, with its time: the email at least, from the seed.
    expect(page.get_by_role("rowheader", name="email", exact=True)).to_be_visible()
    expect(page.locator("[data-admin]")).to_have_count(3)
    page.screenshot(path=artifact("customer-360.png"), full_page=True)

    # The same search by a source id lands on the same customer.
    identity = expected["identities"][0]
    page.goto(f"/console/customers?q={identity['source']}:{identity['externalId']}")
    page.wait_for_url(f"**/console/customers/{expected['id']}")


def test_an_admin_action_reaches_the_api_and_is_audited_under_the_key(
    page: Page, console: Console
) -> None:
    person = console.people[5]
    found = console.api("query($e: String!) { customer(email: $e) { id } }", e=person.email)
    customer_id = found["data"]["customer"]["id"]
    sign_in(page, console, "admin")
    page.goto(f"/console/customers/{customer_id}")
    page.get_by_role("button", name="Invalidate cached data").click()
    expect(page.get_by_role("status")).to_contain_text("invalidated")

    page.get_by_role("link", name="Forget this customer…").click()
    page.get_by_label("I confirm this customer is to be erased").check()
    page.screenshot(path=artifact("forget-confirmation.png"), full_page=True)
    page.get_by_role("button", name="Forget this customer").click()
    expect(page.get_by_role("status")).to_contain_text(f"Erased {customer_id}")

    gone = console.api("query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
    assert gone["data"]["customer"] is None
    trail = console.api(
        "query($id: ID!) { auditLog(customerId: $id, first: 50) { actor operation } }",
        id=customer_id,
    )
    operations = {(e["actor"], e["operation"]) for e in trail["data"]["auditLog"]}
    assert ("console-admin", "mutation:invalidateCustomer") in operations
    assert ("console-admin", "mutation:forgetCustomer") in operations


def test_a_read_only_key_sees_no_admin_button_and_cannot_post_one(
    page: Page, console: Console
) -> None:
    person = console.people[7]
    found = console.api("query($e: String!) { customer(email: $e) { id } }", e=person.email)
    customer_id = found["data"]["customer"]["id"]
    sign_in(page, console, "reader")
    page.goto(f"/console/customers/{customer_id}")
    expect(page.locator('[data-field="email"]')).to_have_text(person.email)
    expect(page.locator("[data-admin]")).to_have_count(0)
    expect(page.get_by_role("link", name="Identity review")).to_have_count(0)
    page.screenshot(path=artifact("customer-360-read-only.png"), full_page=True)

    # Forged: the reader's own session and CSRF token, posted to each admin action.
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    for action in ("invalidate", "export", "forget"):
        response = page.request.post(
            f"/console/customers/{customer_id}/{action}",
            form={"csrf_token": token, "confirm": "yes"},
        )
        assert response.status == 403, action
        assert "lacks the" in response.text()
    saved = page.request.post(
        "/console/templates/save",
        form={"csrf_token": token, "name": "forged", "source": "x", "format": "HTML"},
    )
    assert saved.status == 403
    assert console.api('{ template(name: "forged") { version } }')["data"]["template"] is None
    still = console.api("query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
    assert still["data"]["customer"] == {"id": customer_id}
    page.goto("/console/reviews")
    expect(page.get_by_role("alert")).to_contain_text("lacks the 'profiles:write' scope")


def test_an_identity_added_without_evidence_is_listed_beside_the_linked_ones(
    page: Page, console: Console
) -> None:
    """The API's upsertCustomer adds an identity and records no link for it: the page
    lists it all the same ("no evidence recorded"), beside the seed's linked ones."""
    email = console.people[61].email
    added = console.api(
        "mutation($e: String!) { upsertCustomer(input: {email: $e, identities: "
        '[{source: "zendesk", externalId: "Z-61"}]}) '
        "{ id identities { source externalId } identityLinks { source } } }",
        e=email,
    )
    assert "errors" not in added, added
    customer = added["data"]["upsertCustomer"]
    assert "zendesk" not in {link["source"] for link in customer["identityLinks"]}
    sign_in(page, console, "reader")
    page.goto(f"/console/customers/{customer['id']}")
    rows = page.locator("tr[data-identity]")
    expect(rows).to_have_count(len(customer["identities"]))
    expect(page.locator('[data-identity="zendesk:Z-61"]')).to_contain_text("no evidence recorded")
    expect(page.locator("[data-rule]")).to_have_count(len(customer["identityLinks"]))

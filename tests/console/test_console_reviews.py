"""Identity review in a real browser: a data steward works the queue with the keyboard,
merges one pair and keeps another apart, and the API shows both decisions."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from gateway.identity.scoring.model import DEFAULT_MODEL
from tests.console.conftest import TEST_REVIEW_SOURCE, Console, artifact, sign_in

REVIEWS = """{ identityReviews(first: 100) { nodes {
  id matchProbability candidateCustomerId
  record { source externalId customerId lastName }
  candidate { source externalId customerId }
} } }"""
CUSTOMER = """query($id: ID!) { customer(id: $id) {
  id identities { source externalId } identityLinks { source externalId rule reason }
} }"""


def _open(console: Console) -> list[dict[str, Any]]:
    body = console.api(REVIEWS, key="steward")
    assert "errors" not in body, body
    nodes: list[dict[str, Any]] = body["data"]["identityReviews"]["nodes"]
    return nodes


def _ours(console: Console, surname: str) -> dict[str, Any]:
    return next(
        n
        for n in _open(console)
        if n["record"]["source"] == TEST_REVIEW_SOURCE and n["record"]["lastName"] == surname
    )


def test_a_steward_merges_and_keeps_apart_with_the_keyboard(page: Page, console: Console) -> None:
    merged = _ours(console, "kettwiger")
    apart = _ours(console, "sudermann")
    sign_in(page, console, "steward")
    page.get_by_role("link", name="Identity review").click()
    expect(page.locator("#shortcuts")).to_contain_text("Merge")
    expect(page.locator("#shortcuts")).to_contain_text("Keep them apart")

    page.goto(f"/console/reviews?review={merged['id']}")
    pair = page.locator(f'[data-review="{merged["id"]}"]')
    expect(pair).to_be_visible()
    expect(pair.locator("[data-probability]")).to_have_text(
        f"{merged['matchProbability'] * 100:.1f} %"
    )
    # Side by side: the surname agrees exactly, the first name is one edit apart.
    last = pair.get_by_role("row", name="Last name")
    expect(last).to_contain_text("kettwiger")
    expect(last).to_contain_text("exact")
    expect(pair.get_by_role("row", name="First name")).to_contain_text("one edit")
    # Each field's weight at its level, from the model that scored the pair (the priors).
    weight = DEFAULT_MODEL.level_weight("first_name", "one edit")
    assert weight is not None
    expect(pair.get_by_role("row", name="First name").locator("td.num")).to_have_text(
        f"{weight:+.2f}"
    )
    page.screenshot(path=artifact("identity-review.png"), full_page=True)

    # m without a reason asks for one, and decides nothing.
    page.locator("body").press("m")
    expect(page.get_by_label("Reason")).to_be_focused()
    page.keyboard.type("Same person: typo in the first name")
    page.keyboard.press("Escape")
    page.keyboard.press("m")
    expect(page.locator(f'[data-done="{merged["id"]}"]')).to_contain_text("merged")

    page.goto(f"/console/reviews?review={apart['id']}")
    page.keyboard.press("n")
    page.keyboard.type("Different people: cousins")
    page.keyboard.press("Escape")
    page.keyboard.press("k")
    expect(page.locator(f'[data-done="{apart["id"]}"]')).to_contain_text("kept apart")

    still_open = {n["id"] for n in _open(console)}
    assert merged["id"] not in still_open
    assert apart["id"] not in still_open
    joined = console.api(CUSTOMER, id=merged["candidateCustomerId"])["data"]["customer"]
    ids = {(i["source"], i["externalId"]) for i in joined["identities"]}
    assert (TEST_REVIEW_SOURCE, merged["record"]["externalId"]) in ids
    assert (TEST_REVIEW_SOURCE, merged["candidate"]["externalId"]) in ids
    assert ("manual", "Same person: typo in the first name") in {
        (link["rule"], link["reason"]) for link in joined["identityLinks"]
    }
    one = console.api(CUSTOMER, id=apart["record"]["customerId"])["data"]["customer"]
    other = console.api(CUSTOMER, id=apart["candidateCustomerId"])["data"]["customer"]
    assert one["id"] != other["id"]
    trail = console.api(
        "query($id: ID!) { auditLog(customerId: $id, first: 20) { actor operation } }",
        id=merged["record"]["customerId"],
    )["data"]["auditLog"]
    assert ("console-steward", "mutation:resolveReview") in {
        (e["actor"], e["operation"]) for e in trail
    }


def test_j_moves_to_the_next_pair_without_deciding(page: Page, console: Console) -> None:
    first = _ours(console, "wolfhagen")
    sign_in(page, console, "steward")
    page.goto(f"/console/reviews?review={first['id']}")
    expect(page.locator(f'[data-review="{first["id"]}"]')).to_be_visible()
    page.keyboard.press("j")
    page.wait_for_url("**/console/reviews?review=*")
    expect(page.locator(f'[data-review="{first["id"]}"]')).to_have_count(0)
    assert first["id"] in {n["id"] for n in _open(console)}

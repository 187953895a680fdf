"""Experiments and saved segments in a real browser: Customer 360 shows the customer's
variant in the running experiment and the saved segments they are in; the experiments
page lists each experiment with its arms and what they measured, as the API answers,
and the health page charts the running one's intervals; the studio previews a template
for a sample of a saved segment."""

from __future__ import annotations

import re
import time
from typing import Any

from playwright.sync_api import Page, expect

from resolvers.console.experiments import reference
from tests.console.conftest import EXPERIMENT, Console, artifact, running_experiment, sign_in

SEGMENT = "console-repeat-buyers"
RESULTS = """query($name: String!) {
  experiment(name: $name) { name running
    variants { name strategy customers impressions clicks conversions ciLow ciHigh } }
}"""
ORDERS = """query($name: String!) {
  experiment(name: $name, metric: ORDER) { variants { name orders orderRate ciLow ciHigh } }
}"""
SAVE_SEGMENT = """mutation($name: String!) {
  saveSegment(name: $name, includeSuppressed: true, filter: {field: "frequency", gte: 2}) {
    name size customers(first: 3) { nodes { id email } } }
}"""

EMPTY_SEGMENT = """mutation($name: String!) {
  saveSegment(name: $name, includeSuppressed: true, filter: {field: "frequency", gte: 100000}) {
    name size }
}"""


def _settled_results(console: Console) -> dict[str, Any]:
    """The API's results once the served lists are written (a buffer writes each second)."""
    previous: dict[str, Any] | None = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found: dict[str, Any] = console.api(RESULTS, name=EXPERIMENT)["data"]["experiment"]
        if found == previous and sum(v["impressions"] for v in found["variants"]):
            return found
        previous = found
        time.sleep(1.5)
    raise AssertionError(f"the experiment's results did not settle: {previous}")


def test_variants_in_customer_360_and_the_arms_on_the_experiments_page(
    page: Page, console: Console
) -> None:
    running_experiment(console)
    emails = [person.email for person in console.people[40:52]]
    served = console.api(
        "query($e: [String!]) { customers(emails: $e) { id recommendations(limit: 3) { id } "
        "experiments { experiment variant strategy } } }",
        e=emails,
    )
    assert "errors" not in served, served
    customer = served["data"]["customers"][0]
    assert customer["experiments"], customer

    sign_in(page, console, "reader")
    page.goto(f"/console/customers/{customer['id']}")
    row = page.locator(f'[data-experiment="{EXPERIMENT}"]')
    expect(row.locator("[data-variant]")).to_have_text(customer["experiments"][0]["variant"])
    expect(row).to_contain_text(customer["experiments"][0]["strategy"].lower())

    expected = _settled_results(console)
    # The demo's campaign (demo/console_experiment.py): lists clicked in both arms.
    assert all(v["clicks"] for v in expected["variants"]), expected
    page.get_by_role("link", name="Experiments").click()
    section = page.locator(f'section[data-experiment="{EXPERIMENT}"]')
    expect(section.get_by_role("heading", level=2)).to_contain_text("running")
    for variant in expected["variants"]:
        arm = section.locator(f'[data-arm="{variant["name"]}"]')
        expect(arm).to_contain_text(variant["strategy"].lower())
        for key in ("customers", "impressions", "clicks", "conversions"):
            expect(arm.locator(f"[data-{key}]")).to_have_text(f"{variant[key]:,}")
        low, high = variant["ciLow"] * 100, variant["ciHigh"] * 100
        expect(arm.locator("[data-ci]")).to_have_text(f"{low:.1f} % to {high:.1f} %")
    chart = section.locator(f'[data-experiment-chart="{EXPERIMENT}"]')
    expect(chart.locator("[data-interval]")).to_have_count(len(expected["variants"]))
    # Its text alternative (the description of the image) names every arm's interval.
    expect(chart.get_by_role("img")).to_have_accessible_description(re.compile("interval"))
    description = chart.get_by_role("img").evaluate(
        "svg => document.getElementById(svg.getAttribute('aria-describedby')).textContent"
    )
    for variant in expected["variants"]:
        low, high = variant["ciLow"] * 100, variant["ciHigh"] * 100
        assert f"{variant['name']}: " in description
        assert f"95 % interval {low:.1f} % to {high:.1f} %" in description
    page.screenshot(path=artifact("experiments.png"), full_page=True)

    # Measured by orders (what a holdout is compared by): the same arms, their orders.
    page.get_by_label("Measure").select_option("ORDER")
    page.get_by_role("button", name="Show").click()
    by_orders = console.api(ORDERS, name=EXPERIMENT)["data"]["experiment"]
    for variant in by_orders["variants"]:
        arm = section.locator(f'[data-arm="{variant["name"]}"]')
        expect(arm.locator("[data-orders]")).to_have_text(f"{variant['orders']:,}")
        low, high = variant["ciLow"] * 100, variant["ciHigh"] * 100
        expect(arm.locator("[data-ci]")).to_have_text(f"{low:.1f} % to {high:.1f} %")
    expect(chart.get_by_role("img")).to_have_accessible_name(re.compile("order rate"))
    # Its rates are of customers: so says its text alternative.
    expect(chart.get_by_role("img")).to_have_accessible_description(re.compile("customers"))

    page.get_by_role("link", name="Health").click()
    expect(page.locator(f'[data-experiment-chart="{EXPERIMENT}"]')).to_be_visible()
    page.locator(f'[data-experiment-chart="{EXPERIMENT}"]').scroll_into_view_if_needed()
    page.screenshot(path=artifact("health-experiment.png"), full_page=True)


def test_saved_segments_in_customer_360_and_a_studio_preview_for_a_sample(
    page: Page, console: Console
) -> None:
    saved = console.api(SAVE_SEGMENT, name=SEGMENT)
    assert "errors" not in saved, saved
    members = saved["data"]["saveSegment"]["customers"]["nodes"]
    assert len(members) == 3, saved

    sign_in(page, console, "steward")
    page.goto(f"/console/customers/{members[0]['id']}")
    expect(page.locator(f'[data-segment="{SEGMENT}"]')).to_have_text(SEGMENT)

    page.goto("/console/templates/studio?name=welcome")
    page.get_by_label("or a sample of a segment").select_option(f"saved:{SEGMENT}")
    page.get_by_label("Sample size").fill("3")
    page.get_by_role("button", name="Preview").click()
    previews = page.locator("section.preview")
    expect(previews).to_have_count(3)
    expect(page.locator("[data-sampled]")).to_contain_text(
        f"3 customers of the saved segment {SEGMENT}"
    )
    shown = [previews.nth(i).get_attribute("data-preview") for i in range(3)]
    assert shown == [member["id"] for member in members]
    for index, member in enumerate(members):
        expect(previews.nth(index).get_by_role("heading", level=2)).to_contain_text(member["email"])
    # The viewport, not the full page: Chromium leaves a sandboxed frame (a process of
    # its own) blank in a full-page capture, and the HTML preview is what is looked at.
    previews.first.scroll_into_view_if_needed()
    expect(previews.first.frame_locator("iframe").locator("h1")).to_contain_text("Hello")
    page.screenshot(path=artifact("studio-preview-saved-segment.png"))

    # A segment no one is in: said so, not "choose a segment".
    empty = console.api(EMPTY_SEGMENT, name=f"{SEGMENT}-none")
    assert "errors" not in empty, empty
    page.goto("/console/templates/studio?name=welcome")
    page.get_by_label("or a sample of a segment").select_option(f"saved:{SEGMENT}-none")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("section.preview")).to_have_count(0)
    expect(page.locator("#warnings")).to_contain_text(
        f"The saved segment {SEGMENT}-none has no customer to preview for."
    )


ENGAGED = """query($e: [String!]) { customers(emails: $e) {
  id consent { personalisation } engagement { emailOpens30d emailClicks30d } } }"""


def test_the_campaigns_email_engagement_on_the_customer_360_timeline(
    page: Page, console: Console
) -> None:
    """A recipient who clicked in the demo's campaign: their opens and clicks on the
    timeline, as many as the API's engagement counts."""
    clicked: list[dict[str, Any]] = []
    for start in range(0, 90, 15):  # a few at a time: each reads the analytics upstream
        emails = [person.email for person in console.people[start : start + 15]]
        found = console.api(ENGAGED, e=emails)["data"]["customers"]
        clicked += [c for c in found if c and (c["engagement"] or {}).get("emailClicks30d")]
        if clicked:
            break
    assert clicked, "no one of the first 90 people clicked in the demo's campaign"
    customer = clicked[0]
    sign_in(page, console, "reader")
    page.goto(f"/console/customers/{customer['id']}")
    email = page.locator('tr[data-kind="email"]')
    engagement = customer["engagement"]
    expect(email).to_have_count(engagement["emailOpens30d"] + engagement["emailClicks30d"])
    expect(email.filter(has_text="click")).to_have_count(engagement["emailClicks30d"])
    expect(email.first).to_contain_text("sendgrid")
    page.locator("#timeline-h").scroll_into_view_if_needed()
    page.screenshot(path=artifact("customer-360-email-engagement.png"))


def test_the_arm_compared_with_is_the_apis_reference() -> None:
    """The page names the arm the API compares the others with: the control, but on the
    metrics of clicks a holdout control hands it to the first arm served something."""
    arms = [
        {"name": "hold", "strategy": "NONE"},
        {"name": "popular", "strategy": "POPULARITY"},
        {"name": "personal", "strategy": "MODEL"},
    ]
    assert reference(arms, "ORDER") == "hold"
    assert reference(arms, "CLICK_THROUGH") == reference(arms, "CONVERSION") == "popular"
    assert reference(arms[1:], "CLICK_THROUGH") == "popular"
    assert reference(arms[:1], "CLICK_THROUGH") is None

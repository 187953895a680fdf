"""Every page reads with JavaScript off: the console renders on the server, so a person
whose browser runs no script (or a locked-down workstation) sees the same figures; only
the as-you-type check and the health page's own refresh need script."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.console.conftest import Console, artifact, running_experiment, sign_in


def test_each_page_reads_without_javascript(browser: Browser, console: Console) -> None:
    running_experiment(console)
    person = console.people[16]
    found = console.api(
        "query($e: String!) { customer(email: $e) { id experiments { variant } "
        "consentHistory { source } } }",
        e=person.email,
    )["data"]["customer"]
    context = browser.new_context(base_url=console.url, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, console, "steward")
        page.goto(f"/console/customers/{found['id']}")
        expect(page.locator('[data-field="email"]')).to_have_text(person.email)
        expect(page.locator("[data-variant]")).to_have_text(found["experiments"][0]["variant"])
        expect(page.locator("[data-consent-history] [data-statement]")).to_have_count(
            len(found["consentHistory"])
        )
        page.screenshot(path=artifact("no-script-customer-360.png"), full_page=True)
        page.goto("/console/reviews")
        expect(page.get_by_role("heading", level=1)).to_contain_text("review")
        page.goto("/console/experiments")
        expect(page.locator("[data-arm]").first).to_be_visible()
        page.goto("/console/health")
        expect(page.locator("[data-status]")).to_have_text("ready")
        expect(page.locator("[data-experiment-chart]")).to_be_visible()
        page.screenshot(path=artifact("no-script-health.png"), full_page=True)
    finally:
        context.close()

"""The health page in a real browser: circuits, each upstream's latency and cache hit
ratio, the last sync with its reconciliation line and the last export's, refreshing
on its own; all of it from the gateway's own metrics and stores."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.console.conftest import Console, artifact, sign_in


def test_health_shows_upstreams_syncs_and_the_last_export(page: Page, console: Console) -> None:
    # Traffic first, so every upstream has fetches, hits and misses to show.
    emails = [person.email for person in console.people[20:26]]
    for _ in range(2):
        answer = console.api(
            "query($e: [String!]) { customers(emails: $e) { email company orderCount "
            "engagement { sessions30d } } }",
            e=emails,
        )
        assert "errors" not in answer, answer

    sign_in(page, console, "reader")  # any key may look at health
    page.get_by_role("link", name="Health").click()
    expect(page.locator("[data-status]")).to_have_text("ready")
    expect(page.get_by_label("Refresh every 15 s")).to_be_checked()
    for upstream in ("hubspot", "shopify", "segment"):
        row = page.locator(f'[data-upstream="{upstream}"]')
        expect(row).to_contain_text("closed")
    expect(page.locator("[data-hit-ratio]")).not_to_have_text("—")
    sync = page.locator('[data-sync="hubspot"]')
    expect(sync).to_contain_text("hubspot: read")
    expect(sync).to_contain_text("distinct vs upstream total")
    expect(page.get_by_role("region", name="Last export")).to_contain_text("rows in")
    page.screenshot(path=artifact("health.png"), full_page=True)

    # It reads the figures again on its own, in place, until the box is unticked.
    page.goto("/console/health?refresh=2")
    stamp = page.locator("#refreshed")
    first = stamp.get_attribute("data-generated")
    expect(stamp).not_to_have_attribute("data-generated", first or "", timeout=10_000)
    page.get_by_label("Refresh every 2 s").uncheck()
    page.wait_for_timeout(2_500)  # a read already under way lands first
    paused = stamp.get_attribute("data-generated")
    page.wait_for_timeout(4_500)
    assert stamp.get_attribute("data-generated") == paused

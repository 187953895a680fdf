"""The template studio in a real browser: a marketer edits a template, sees a syntax error
at its line and column as they type, previews it for a segment (HTML in a sandboxed
frame, the text version beside it, both what the API renders), saves a new version and
compares it with the one before; without JavaScript the same check comes from the form."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from gateway.templates.text_version import text_version
from tests.console.conftest import Console, artifact, sign_in

BROKEN = "<h1>Hello {{ customer.first_name }}</h1>\n<p>Picked for you</p>\n  {% frobnicate %}\n"
FIXED = (
    "<h1>Hello {{ customer.first_name | default: 'there' }}</h1>\n"
    "<p>Picked for you, {{ customer.email }}:</p>\n"
    "<ul>{% for p in customer.recommendations %}<li>{{ p.title }}</li>{% endfor %}</ul>\n"
    "<p>{{ unknown_thing }}</p>\n"
)
RENDER = """query($id: ID!, $t: String!) {
  customer(id: $id) { render(template: $t, format: HTML) { body } }
}"""


def test_edit_check_preview_for_a_segment_save_and_compare(page: Page, console: Console) -> None:
    before = console.api('{ template(name: "welcome") { version } }')["data"]["template"]
    sign_in(page, console, "steward")
    page.get_by_role("link", name="Templates").click()
    page.get_by_role("link", name="welcome").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("welcome")

    source = page.get_by_label("Liquid source")
    source.fill(BROKEN)  # as typed: the page's script asks the server's check
    error = page.locator("[data-syntax-error]")
    expect(error).to_contain_text("line 3, column 3")
    expect(error).to_have_attribute("data-line", "3")
    expect(error).to_have_attribute("data-column", "3")
    expect(page.locator("#gutter .error-line")).to_have_text("3")
    page.screenshot(path=artifact("studio-syntax-error.png"), full_page=True)

    source.fill(FIXED)
    expect(page.locator("[data-syntax-ok]")).to_be_visible()
    expect(page.locator("#variables")).to_contain_text("customer.recommendations")
    expect(page.locator("#warnings")).to_contain_text("'unknown_thing' is not a customer field")

    segment = page.get_by_label("or a sample of a segment")
    options = segment.locator("option").all()
    chosen = next(o.get_attribute("value") for o in options if o.get_attribute("value"))
    assert chosen
    segment.select_option(chosen)
    page.get_by_label("Sample size").fill("2")
    page.get_by_role("button", name="Preview").click()
    previews = page.locator("section.preview")
    expect(previews).to_have_count(2)
    for index in range(2):
        preview = previews.nth(index)
        customer_id = preview.get_attribute("data-preview")
        assert customer_id
        rendered = console.api(RENDER, id=customer_id, t=FIXED)["data"]["customer"]["render"]
        frame = preview.locator("iframe")
        expect(frame).to_have_attribute("sandbox", "")
        assert frame.get_attribute("srcdoc") == rendered["body"]
        expect(preview.locator("[data-text-version]")).to_have_text(text_version(rendered["body"]))
        # The frame shows it (sandboxed: its own origin, no script, nothing from outside).
        expect(preview.frame_locator("iframe").locator("h1")).to_have_text(
            re.compile(r"^Hello \S+")
        )
        expect(preview).to_contain_text("'unknown_thing' is not a customer field")
    previews.first.scroll_into_view_if_needed()
    page.screenshot(path=artifact("studio-preview-segment.png"), full_page=True)
    # A full-page capture leaves the sandboxed frames blank (each is a process of its
    # own); the viewport shows the HTML preview as the marketer sees it.
    page.screenshot(path=artifact("studio-preview-segment-html.png"))

    page.get_by_role("button", name="Save as a new version").click()
    expect(page.get_by_role("status")).to_contain_text(f"Saved as version {before['version'] + 1}")
    after = console.api('{ template(name: "welcome") { version source } }')["data"]["template"]
    assert after == {"version": before["version"] + 1, "source": FIXED}

    page.get_by_label("Compare version").select_option(str(before["version"]))
    page.get_by_label("with").select_option(str(after["version"]))
    page.get_by_role("button", name="Show the difference").click()
    diff = page.get_by_role("region", name="Unified diff")
    expect(diff.locator(".added")).to_contain_text(["+<p>{{ unknown_thing }}</p>"])
    page.screenshot(path=artifact("template-diff.png"), full_page=True)


def test_without_javascript_the_form_checks_and_previews(
    browser: Browser, console: Console
) -> None:
    context = browser.new_context(base_url=console.url, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, console, "reader")
        page.goto("/console/templates/studio?name=welcome")
        expect(page.get_by_role("button", name="Save as a new version")).to_have_count(0)
        page.get_by_label("Liquid source").fill(BROKEN)
        page.get_by_label("Customers: ids or emails").fill(console.people[0].email)
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("[data-syntax-error]")).to_have_attribute("data-line", "3")
        expect(page.locator("section.preview")).to_have_count(0)  # nothing renders broken

        page.get_by_label("Liquid source").fill("<p>Hi {{ customer.first_name }}</p>")
        page.get_by_role("button", name="Preview").click()
        preview = page.locator("section.preview")
        expect(preview).to_have_count(1)
        expect(preview.locator("[data-text-version]")).to_have_text(
            re.compile(rf"^Hi {re.escape(console.people[0].first_name)}$")
        )
    finally:
        context.close()

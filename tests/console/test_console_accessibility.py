"""Every page of the console is usable without a mouse and by a screen reader: each field
has a label, each control a name, every control is reached with Tab, and text keeps a
contrast of 4.5:1 (axe-core's WCAG 2 A and AA rules, from the npm registry at test time,
as tests/resolvers/test_graphql_http_audit.py installs its audit)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.conftest import IN_CI
from tests.console.conftest import Console, artifact, running_experiment, sign_in
from tests.resolvers.test_graphql_http_audit import CACHE

AXE = "axe-core@4.10.2"
# Labels and names, as the accessibility tree computes them.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
  .filter(e => e.type !== 'hidden' && e.offsetParent !== null)
  .filter(e => {
    const named = e.labels && e.labels.length > 0 || e.getAttribute('aria-label')
      || e.getAttribute('aria-labelledby') || e.title;
    const text = (e.innerText || e.value || '').trim();
    return ['INPUT', 'SELECT', 'TEXTAREA'].includes(e.tagName) ? !named : !(named || text);
  })
  .map(e => e.outerHTML.slice(0, 120))"""
FOCUSABLE = """() => [...document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex="0"]')]
  .filter(e => e.offsetParent !== null && !e.disabled)
  .map(e => e.outerHTML.slice(0, 120))"""
FOCUSED = "() => document.activeElement ? document.activeElement.outerHTML.slice(0, 120) : ''"


def _pages(console: Console) -> list[tuple[str, str]]:
    person = console.people[11]
    found = console.api("query($e: String!) { customer(email: $e) { id } }", e=person.email)
    customer_id = found["data"]["customer"]["id"]
    running_experiment(console)  # so the experiments page and health have arms to show
    return [
        ("customers", "/console/customers"),
        ("customer-360", f"/console/customers/{customer_id}"),
        ("reviews", "/console/reviews"),
        ("templates", "/console/templates"),
        ("studio", "/console/templates/studio?name=welcome"),
        ("diff", "/console/templates/diff?name=welcome&from=1&to=2"),
        ("experiments", "/console/experiments"),
        ("health", "/console/health"),
    ]


def _reached_by_tab(page: Page) -> set[str]:
    wanted = set(page.evaluate(FOCUSABLE))
    reached: set[str] = set()
    page.locator("body").focus()
    for _ in range(len(wanted) * 2 + 20):
        page.keyboard.press("Tab")
        reached.add(page.evaluate(FOCUSED))
        if wanted <= reached:
            break
    return wanted - reached


def test_labels_names_and_keyboard_reach_on_every_page(page: Page, console: Console) -> None:
    page.goto("/console/sign-in")
    assert page.evaluate(UNLABELLED) == []
    assert page.get_attribute("html", "lang") == "en"
    sign_in(page, console, "admin")
    for name, path in _pages(console):
        page.goto(path)
        assert page.evaluate(UNLABELLED) == [], name
        assert page.locator("h1").count() == 1, name
        assert _reached_by_tab(page) == set(), name
        page.screenshot(path=artifact(f"page-{name}.png"), full_page=True)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"axe-core cannot run ({reason}); CI requires it", pytrace=False)
    pytest.skip(f"axe-core cannot run ({reason})")


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe-core's browser build, installed with npm into a cache directory on first use."""
    if not shutil.which("npm"):
        _unavailable("npm is not installed")
    prefix = Path(os.environ.get("GATEWAY_TEST_NPM_DIR") or CACHE) / AXE.replace("@", "-")
    script = prefix / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", AXE],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if installed.returncode != 0:
            _unavailable(f"npm install {AXE} failed: {installed.stderr.strip()[-500:]}")
    return script.read_text()


def _violations(page: Page, source: str) -> list[dict[str, Any]]:
    # Evaluated through the DevTools protocol: the page's own CSP (scripts from the
    # gateway only) still holds for everything the page loads.
    page.evaluate(source)
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa']}))
             .violations.map(v => ({id: v.id, impact: v.impact,
               nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))"""
    )
    return found


def test_axe_finds_no_wcag_a_or_aa_violation(page: Page, console: Console, axe_source: str) -> None:
    page.goto("/console/sign-in")
    assert _violations(page, axe_source) == []
    sign_in(page, console, "admin")
    found = {}
    for name, path in _pages(console):
        page.goto(path)
        if violations := _violations(page, axe_source):
            found[name] = violations
    artifact("axe.json").write_text(json.dumps(found, indent=2))
    assert found == {}

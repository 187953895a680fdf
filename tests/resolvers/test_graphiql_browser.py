"""GraphiQL really renders in a browser, with nothing fetched from outside.

Runs the app on loopback and loads /graphql in headless Chromium (Debian's
`chromium`; `.ci/run` installs it). Skipped where no Chromium is installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from playwright.sync_api import Browser, Playwright, sync_playwright

from gateway.settings import Settings
from resolvers.app import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/graphql"
    server.should_exit = True
    thread.join(10)


def test_graphiql_renders_with_local_assets_only(served: str) -> None:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=8000",
                "--dump-dom",
                served,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    dom = result.stdout
    errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert "graphiql-container" in dom, errors or dom[:500]
    assert "Loading GraphiQL" not in dom
    assert not [e for e in errors if "Uncaught" in e], errors


PASTED = "gw_pasted-key-that-must-not-stay"
EARLIER = "gw_key-an-earlier-page-stored"


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--disable-gpu", "--no-first-run", "--disable-background-networking"],
    )


def test_graphiql_keeps_no_pasted_key_in_the_browsers_storage(served: str) -> None:
    """A key pasted into the headers editor is sent, and is nowhere in localStorage
    after a query ran (history, tabs, headers); nor is one an earlier page stored."""
    stored_before = json.dumps({"Authorization": f"Bearer {EARLIER}"})
    tabs_before = json.dumps(
        {
            "tabs": [
                {
                    "id": "t",
                    "hash": "h",
                    "title": "q",
                    "query": "{ __typename }",
                    "variables": None,
                    "headers": stored_before,
                    "operationName": None,
                    "response": None,
                }
            ],
            "activeTabIndex": 0,
        }
    )
    sent: list[str] = []
    refused: list[str] = []  # what the page's policy blocked, and uncaught script errors
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: refused.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    refused.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            page.goto(served)
            page.evaluate(
                """([headers, tabs]) => {
                    localStorage.setItem("graphiql:headers", headers);
                    localStorage.setItem("graphiql:tabState", tabs);
                    localStorage.setItem("graphiql:shouldPersistHeaders", "true");
                }""",
                [stored_before, tabs_before],
            )
            page.on(
                "request",
                lambda request: sent.append(request.headers.get("authorization", "")),
            )
            page.reload()
            page.get_by_text("Headers", exact=True).click()
            editor = page.locator(".graphiql-editor-tool .CodeMirror").last
            editor.click()
            page.keyboard.press("Control+A")
            page.keyboard.type(f'{{"Authorization": "Bearer {PASTED}"')
            page.locator(".graphiql-execute-button").click()
            page.wait_for_function("() => localStorage.getItem('graphiql:queries') !== null")
            # The tabs are written 500 ms after an edit: wait for the last one's write.
            page.wait_for_function(
                "() => (localStorage.getItem('graphiql:tabState') || '').includes('Customer')"
            )
            page.wait_for_timeout(800)
            storage = page.evaluate("JSON.stringify(Object.entries(localStorage))")
        finally:
            browser.close()
    assert f"Bearer {PASTED}" in sent  # the key was typed, and used
    assert refused == []  # GraphiQL runs whole under its policy
    assert PASTED not in storage, storage
    assert EARLIER not in storage, storage


def test_an_edited_query_survives_a_reload_and_the_key_does_not(served: str) -> None:
    """The tabs are stored without headers yet still restored: the query and variables a
    person edited are in the editors after a reload, the key pasted before it in no storage."""
    edited = "query EditedBeforeReload { __typename }"
    edited_variables = '{"email": "edited-before-reload@example.com"}'
    query_editor = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
    variables_editor = "document.querySelector('.graphiql-editor-tool .CodeMirror').CodeMirror"
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page()
            page.goto(served)
            page.wait_for_function(f"() => {query_editor} !== undefined")
            page.evaluate(f"{query_editor}.setValue({json.dumps(edited)})")
            page.evaluate(f"{variables_editor}.setValue({json.dumps(edited_variables)})")
            page.get_by_text("Headers", exact=True).click()
            page.locator(".graphiql-editor-tool .CodeMirror").last.click()
            page.keyboard.press("Control+A")
            page.keyboard.type(f'{{"Authorization": "Bearer {PASTED}"')
            page.locator(".graphiql-execute-button").click()
            page.wait_for_function(
                "() => (localStorage.getItem('graphiql:tabState') || '')"
                ".includes('EditedBeforeReload')"
            )
            page.wait_for_function(
                "() => (localStorage.getItem('graphiql:variables') || '')"
                ".includes('edited-before-reload')"
            )
            page.wait_for_timeout(800)  # the tabs' last write, 500 ms after an edit
            before = page.evaluate("localStorage.getItem('graphiql:tabState')")
            page.reload()
            page.wait_for_function(f"() => {query_editor} !== undefined")
            page.wait_for_timeout(800)
            shown = page.evaluate(f"{query_editor}.getValue()")
            shown_variables = page.evaluate(f"{variables_editor}.getValue()")
            tabs = page.evaluate("localStorage.getItem('graphiql:tabState')")
            storage = page.evaluate(
                "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
            )
        finally:
            browser.close()
    # The same tab, restored (GraphiQL would make a new one of stored tabs it rejects).
    assert [tab["id"] for tab in json.loads(tabs)["tabs"]] == [
        tab["id"] for tab in json.loads(before)["tabs"]
    ]
    assert shown == edited
    assert json.loads(shown_variables) == json.loads(edited_variables)
    assert PASTED not in storage, storage


def test_graphiql_may_not_be_framed_by_another_site(served: str) -> None:
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page()
            # Another site's page (about:blank here); its load waits for the frame's.
            page.set_content(f'<iframe src="{served}" width="800" height="600"></iframe>')
            page.wait_for_timeout(2000)  # time to render, were it allowed to
            contents = [
                frame.evaluate("document.documentElement.outerHTML")
                for frame in page.frames
                if frame != page.main_frame
            ]
        finally:
            browser.close()
    assert not any("graphiql" in content for content in contents), contents

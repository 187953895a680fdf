"""A console to test: the gateway served for real on a loopback port, over a database
of its own holding the sample upstreams' people with their history, recommendations,
scores, identity review pairs and a stored template; keys of each kind; and for the
browser tests, headless Chromium (Debian's, through Playwright) on a closed network.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Route, sync_playwright

from adapters.registry import aclose_adapters, build_adapters
from demo.console_data import build_scores_if_missing, prepare_console_data
from demo.seed import seed_evidence
from demo.simulated_send import EXPERIMENT as DEMO_EXPERIMENT
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import ApiKeys, Scope
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.export.service import Exporter
from gateway.ingest.importer import Importer
from gateway.ingest.sync import sync
from gateway.scores.model_seal import model_key
from gateway.settings import Settings, load_settings
from resolvers.app import create_app
from tests.conftest import FAST, IN_CI, REPO
from tests.demo_database import demo_database
from tests.served import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("GATEWAY_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
KEYS = {
    "admin": (Scope.ADMIN,),
    "reader": (Scope.PROFILES_READ,),
    "steward": (Scope.PROFILES_READ, Scope.PROFILES_WRITE),
}


@dataclass
class Console:
    url: str
    database_url: str
    settings: Settings
    keys: dict[str, str]
    people: list[Any]
    export_dir: Path
    upstreams: Any = field(repr=False, default=None)

    def api(self, query: str, key: str = "admin", **variables: Any) -> dict[str, Any]:
        """The GraphQL API's own answer, over HTTP, for comparing with a page."""
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.keys[key]}"},
            timeout=30,
        )
        body: dict[str, Any] = response.json()
        return body


async def _keys(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        keys = ApiKeys(create_sessionmaker(engine))
        made = {}
        for name, scopes in KEYS.items():
            made[name], _ = await keys.create(f"console-{name}", set(scopes), 10**6)
        return made
    finally:
        await engine.dispose()


# Pairs for the tests to resolve, beside the demo's own three (demo/console_data.py).
TEST_REVIEW_SOURCE = "test_crm"
_TEST_PAIRS = (
    ("Kettwiger", "Ottilie", "Otilie", "1958-11-02", "1958-11-05"),
    ("Sudermann", "Jannik", "Janik", "1990-07-19", "1990-07-16"),
    ("Wolfhagen", "Reinhild", "Reinhilde", "1962-03-08", "1962-03-03"),
    ("Ebersbach", "Konstanze", "Konstance", "1979-12-24", "1979-12-21"),
)


def extra_review_rows() -> list[tuple[int, dict[str, Any] | str]]:
    rows: list[tuple[int, dict[str, Any] | str]] = []
    for index, (surname, first, variant, born, typo) in enumerate(_TEST_PAIRS):
        for side, name, date in (("a", first, born), ("b", variant, typo)):
            rows.append(
                (
                    len(rows) + 2,
                    {
                        "external_id": f"T{index}{side}",
                        "first_name": name,
                        "last_name": surname,
                        "date_of_birth": date,
                    },
                )
            )
    return rows


async def _prepare(url: str, export_dir: Path, upstreams: Any, people: list[Any]) -> None:
    """The demo's console data and identity evidence, more review pairs, one sync and one
    export run."""
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    adapters = build_adapters(upstreams)
    try:
        await seed_evidence(sessions, people)
        await prepare_console_data(sessions)
        await build_scores_if_missing(sessions, model_key("the console tests' erasure key"))
        await Importer(sessions, TEST_REVIEW_SOURCE, observed_at=datetime.now(UTC)).run(
            extra_review_rows()
        )
        await sync(sessions, adapters, ["hubspot"])
        await Exporter(engine, str(export_dir), None).run()
    finally:
        await aclose_adapters(adapters)
        await engine.dispose()


@pytest.fixture(scope="session")
def console(
    samples: SampleUpstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """The gateway served on a free loopback port, once for all the console's tests (its
    scores take a minute to build): each test reads and changes customers and review
    pairs of its own."""
    with demo_database("sqlite", "console", samples.people, tmp_path_factory) as url:
        export_dir = tmp_path_factory.mktemp("console-exports")
        tables = {name: dict(FAST) for name in samples.base_urls}
        upstreams = sample_upstreams_config(samples.base_urls, tables)
        asyncio.run(_prepare(url, export_dir, upstreams, list(samples.people)))
        keys = asyncio.run(_keys(url))
        settings = load_settings(
            database_url=url, cache_url="memory://", export_dir=str(export_dir)
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, upstreams=upstreams),
                host="127.0.0.1",
                port=port,
                log_level="warning",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the console's server did not start"
        try:
            yield Console(
                f"http://127.0.0.1:{port}",
                url,
                settings,
                keys,
                list(samples.people),
                export_dir,
                upstreams,
            )
        finally:
            server.should_exit = True
            thread.join(15)


def loopback(url: str) -> bool:
    """Whether a browser request stays on this machine (or needs no network at all)."""
    parts = urlsplit(url)
    if parts.scheme in {"data", "about", "blob"}:
        return True
    return parts.hostname == "127.0.0.1"


def need_chromium() -> str:
    if CHROMIUM is None:
        message = "Chromium is not installed (Debian's chromium package)"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


def artifact(name: str) -> Path:
    """Where a test keeps a screenshot (tests/artifacts/console/, or
    $GATEWAY_TEST_ARTIFACTS/console/); kept after the run, never committed."""
    folder = ARTIFACTS / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


@dataclass
class Network:
    """Every request a test's browser made, and those sent outside 127.0.0.1 (aborted:
    the network is closed to the browser, as on the checker's machine)."""

    requested: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught script errors


@pytest.fixture
def browser(console: Console) -> Iterator[Browser]:
    """Chromium for one test. Playwright's sync API runs an event loop in this thread
    while it is started, so it is stopped after each test (any later ``asyncio.run``,
    a fixture's or another module's, would fail beside it), and started after the
    console, whose set-up runs coroutines."""
    executable = need_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            args=["--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def network() -> Network:
    return Network()


@pytest.fixture
def page(browser: Browser, console: Console, network: Network) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the console, its requests recorded."""
    context = browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 900})

    def guard(route: Route) -> None:
        if loopback(route.request.url):
            route.continue_()
        else:
            network.outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    context.on("request", lambda request: network.requested.append(request.url))
    opened = context.new_page()
    opened.on("pageerror", lambda error: network.errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert network.outside == [], f"requested outside 127.0.0.1: {network.outside}"
    assert all(loopback(url) for url in network.requested), network.requested
    assert network.errors == [], f"script errors: {network.errors}"


def sign_in(page: Page, console: Console, who: str) -> None:
    """Sign in through the form, as a person would."""
    page.goto("/console/")
    page.get_by_label("API key").fill(console.keys[who])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/customers")


# The demo's experiment, written with a campaign's results by prepare_console_data
# (demo/console_experiment.py): running for weeks, both arms serving recommendations.
EXPERIMENT = DEMO_EXPERIMENT
RUNNING = "query($name: String!) { experiment(name: $name) { running variants { name } } }"


def running_experiment(console: Console) -> None:
    """The demo's experiment is running (one runs at a time: the tests save none of their
    own), so the pages have its arms, with the campaign's clicks, to show."""
    answer = console.api(RUNNING, name=EXPERIMENT)
    assert "errors" not in answer, answer
    assert answer["data"]["experiment"]["running"], answer

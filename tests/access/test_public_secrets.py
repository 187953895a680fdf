"""The repository's public secrets open nothing: `gateway serve` refuses to start while
the demo's API key is active or the erasure key is the built-in one (one line naming
the fix, exit code 2) unless started with --insecure-demo; a server not started for the
demo refuses the demo key at every request; GraphiQL pre-fills it only on loopback;
and the erasure key may come from a file."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from demo.cli import _print_demo_banner
from gateway.access.api_keys import DEMO_API_KEY, ApiKeys
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import REPO, bearer
from tests.in_process import asgi, lifespan
from tests.served import free_port, wait_until_served
from tests.test_cli import GATEWAY, run

SECRET = "an-erasure-key-of-our-own-0123456789"
PING = {"query": "{ __typename }"}


async def _enable_demo_key(url: str) -> None:
    """As `gateway demo --database-url URL` leaves it."""
    engine = create_engine(url)
    try:
        await ApiKeys(create_sessionmaker(engine)).enable_demo_key()
    finally:
        await engine.dispose()


@pytest.fixture
def demo_db(tmp_path: Path) -> str:
    """A migrated database into which a demo has written its key."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    asyncio.run(_enable_demo_key(url))
    return url


def _serve(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`gateway serve` expected to refuse: returns once it has exited."""
    return run("serve", "--port", str(free_port()), *args, env={"GATEWAY_DATABASE_URL": url, **env})


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@contextmanager
def serving(url: str, *args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`gateway serve` expected to start: yields its base URL once /healthz answers."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env.update(PYTHONPATH=str(REPO), GATEWAY_DATABASE_URL=url, **env)
    process = subprocess.Popen(
        [*GATEWAY, "serve", "--port", str(port), *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_served(f"{base}/healthz", process)
        yield base, process
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_serve_refuses_public_secrets_in_one_line_naming_each_fix(demo_db: str) -> None:
    both = _one_line(_serve(demo_db))
    assert "gateway keys revoke demo" in both
    assert "GATEWAY_ERASURE_KEY" in both
    assert "GATEWAY_ERASURE_KEY_FILE" in both
    assert "--insecure-demo" in both
    assert DEMO_API_KEY not in both
    # Only the flag starts it: the setting its workers read does not.
    assert _one_line(_serve(demo_db, GATEWAY_INSECURE_DEMO="true")) == both

    key_only = _one_line(_serve(demo_db, GATEWAY_ERASURE_KEY=SECRET))
    assert "gateway keys revoke demo" in key_only
    assert "GATEWAY_ERASURE_KEY" not in key_only

    revoked = run("keys", "revoke", "demo", env={"GATEWAY_DATABASE_URL": demo_db})
    assert revoked.returncode == 0, revoked.stderr
    erasure_only = _one_line(_serve(demo_db))
    assert "GATEWAY_ERASURE_KEY" in erasure_only
    assert "revoke" not in erasure_only
    assert "personalization-gateway-erasure" not in erasure_only  # the value is not echoed


def test_serve_starts_once_both_are_fixed_with_the_key_from_a_file(
    demo_db: str, tmp_path: Path
) -> None:
    assert run("keys", "revoke", "demo", env={"GATEWAY_DATABASE_URL": demo_db}).returncode == 0
    key_file = tmp_path / "erasure_key"
    key_file.write_text(SECRET + "\n")  # as secrets files usually end
    with serving(demo_db, GATEWAY_ERASURE_KEY_FILE=str(key_file)) as (base, _):
        refused = httpx.post(f"{base}/graphql", json=PING, headers=bearer(DEMO_API_KEY))
    assert refused.status_code == 401


def test_insecure_demo_starts_and_accepts_the_demo_key(demo_db: str) -> None:
    with serving(demo_db, "--insecure-demo") as (base, process):
        answer = httpx.post(f"{base}/graphql", json=PING, headers=bearer(DEMO_API_KEY))
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert answer.status_code == 200
    assert answer.json() == {"data": {"__typename": "Query"}}
    assert "--insecure-demo" in stderr
    assert "never expose" in stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GATEWAY_ERASURE_KEY_FILE": "/nonexistent/erasure_key"}, "GATEWAY_ERASURE_KEY_FILE"),
        ({"GATEWAY_ERASURE_KEY_FILE": "EMPTY"}, "GATEWAY_ERASURE_KEY_FILE"),
        ({"GATEWAY_ERASURE_KEY_FILE": "FILE", "GATEWAY_ERASURE_KEY": SECRET}, "not both"),
        ({"GATEWAY_ERASURE_KEY": "short"}, "GATEWAY_ERASURE_KEY"),
    ],
)
def test_a_bad_erasure_key_stops_start_up_with_one_line(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "key").write_text(SECRET)
    paths = {"EMPTY": str(tmp_path / "empty"), "FILE": str(tmp_path / "key")}
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"  # refused before it is opened
    line = _one_line(_serve(url, **{k: paths.get(v, v) for k, v in env.items()}))
    assert named in line
    assert SECRET not in line
    assert "short" not in line


async def test_a_server_not_started_for_the_demo_refuses_its_key(demo_db: str) -> None:
    """Even written into the database after start-up, the demo key opens nothing."""
    for insecure_demo, status in ((False, 401), (True, 200)):
        app = create_app(load_settings(database_url=demo_db, insecure_demo=insecure_demo))
        async with (
            lifespan(app),
            httpx.AsyncClient(transport=asgi(app), base_url="http://gw") as http,
        ):
            answer = await http.post("/graphql", json=PING, headers=bearer(DEMO_API_KEY))
        assert answer.status_code == status, (insecure_demo, answer.text)


async def test_a_new_demo_run_enables_its_key_again(demo_db: str) -> None:
    engine = create_engine(demo_db)
    try:
        keys = ApiKeys(create_sessionmaker(engine))
        assert await keys.is_active(DEMO_API_KEY)
        await keys.revoke("demo")
        assert not await keys.is_active(DEMO_API_KEY)
        await keys.enable_demo_key()  # what `gateway demo` does on each run
        assert await keys.is_active(DEMO_API_KEY)
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("host", "shown"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("::", False)],
)
async def test_graphiql_prefills_the_demo_key_only_on_loopback(
    demo_db: str, host: str, shown: bool
) -> None:
    app = create_app(
        load_settings(database_url=demo_db, host=host, insecure_demo=True),
        example_key=DEMO_API_KEY,
    )
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=asgi(app), base_url="http://gw") as http,
    ):
        page = await http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "<html" in page.text.lower()
    assert (DEMO_API_KEY in page.text) is shown
    assert "paste your API key here" in page.text or shown


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_the_demo_banner_warns_when_bound_beyond_loopback(
    host: str, warned: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    _print_demo_banner(load_settings(host=host), 0, 1, "a@example.com", {})
    assert ("anyone who reaches this port" in capsys.readouterr().out) is warned

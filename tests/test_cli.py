"""The `gateway` command as an operator uses it: help, settings errors, migrate, demo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from demo.people.population import population
from demo.wiring import DEMO_API_KEY
from tests.conftest import REPO
from tests.served import free_port, wait_until_served

GATEWAY = [sys.executable, "-m", "gateway"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.run(
        [*GATEWAY, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("command", [[], ["serve"], ["migrate"], ["demo"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert "Usage: " in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_DATABASE_URL", "mysql://db/gateway"),
        ("GATEWAY_CACHE_URL", "memcached://localhost"),
        ("GATEWAY_LOG_LEVEL", "chatty"),
        ("GATEWAY_SCORES_THREADS", "0"),
    ],
)
def test_a_wrong_setting_stops_start_up_with_one_line(variable: str, value: str) -> None:
    result = run("serve", env={variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    result = run("migrate", "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli.db").exists()
    down = run("migrate", "--database-url", url, "--downgrade", "base")
    assert down.returncode == 0, down.stderr


def test_demo_serves_seeded_customers(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        [*GATEWAY, "demo", "--port", str(port), "--upstreams-port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        # Seeding 1,000 people and a recommendation build (model selection included)
        # take a few seconds on an idle machine; a shared one can be ten times slower.
        wait_until_served(f"{base}/readyz", process, timeout=180)
        person = population(1000)[999]
        query = (
            "query($e: String!) { customer(email: $e) "
            "{ email firstName identities { source externalId } } }"
        )
        body = httpx.post(
            f"{base}/graphql",
            json={"query": query, "variables": {"e": person.email}},
            headers={"Authorization": f"Bearer {DEMO_API_KEY}"},
            timeout=5,
        ).json()
        customer = body["data"]["customer"]
        assert customer["firstName"] == person.first_name
        assert {"source": "hubspot", "externalId": person.hubspot_id} in customer["identities"]
        assert (tmp_path / "gateway.db").exists()  # the embedded default, in the working directory
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/graphql" in output
    assert "customer(email:" in output


@pytest.mark.parametrize("which", ["--port", "--upstreams-port"])
def test_a_demo_on_a_port_in_use_says_which_and_how_to_choose_another(
    tmp_path: Path, which: str
) -> None:
    """A second demo (or one beside the test suite) said only "Address already in use"."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        ports = {"--port": str(free_port()), "--upstreams-port": "0"} | {which: str(taken)}
        result = run(
            "demo", "--customers", "5", *(a for kv in ports.items() for a in kv), cwd=tmp_path
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {taken} is already in use" in lines[0]
    assert f"{which} N" in lines[0]
    assert not (tmp_path / "gateway.db").exists()  # stopped before seeding anything


def test_an_invalid_upstreams_file_stops_start_up_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "upstreams.toml"
    config.write_text(
        '[upstreams.crm]\nkind = "hubspot"\nbase_url = "http://127.0.0.1:1"\n'
        'auth = { mode = "bearer", token_env = "NOT_SET_ANYWHERE" }\n'
    )
    result = run("serve", env={"GATEWAY_UPSTREAMS_FILE": str(config)})
    assert result.returncode == 2
    assert "GATEWAY_UPSTREAMS_FILE" in result.stderr
    assert "NOT_SET_ANYWHERE" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_reports_bad_rows_by_line_and_imports_the_rest(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'import.db'}"
    assert run("migrate", "--database-url", url).returncode == 0
    people = tmp_path / "people.csv"
    people.write_text(
        "external_id,email,first_name,last_name\n"
        "1,ada.import@example.com,Ada,Lovelace\n"
        "2,not-an-email,Bob,Birch\n"
        "3,grace.import@example.com,Grace,Hopper\n"
    )
    result = run("import", str(people), "--source", "crm_export", "--database-url", url)
    assert result.returncode == 1  # some rows were rejected
    assert f"{people}:3: rejected" in result.stderr
    assert "not-an-email" not in result.stderr  # the reason names the field, not the value
    assert "read 3, created 2" in result.stdout

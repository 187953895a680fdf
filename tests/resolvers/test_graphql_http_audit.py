"""graphql-http's own audit of GraphQL-over-HTTP servers, run against a real gateway.

``auditServer`` (the npm package ``graphql-http``, by the spec's authors) sends some
sixty requests, each checking one MUST, SHOULD or MAY of the specification. The
package is installed with npm into a cache directory on first use; node runs the
audit against ``gateway serve`` on a loopback port, with an API key. Under CI=true a
missing node or npm fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.db.migrate import upgrade
from tests.conftest import IN_CI, REPO
from tests.served import free_port, wait_until_served

GRAPHQL_HTTP = "graphql-http@1.23.1"
CACHE = Path(
    os.environ.get("GATEWAY_TEST_NPM_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "personalization-gateway"
    / "npm"
)
AUDIT = """
import { auditServer } from 'graphql-http';
const [url, key] = process.argv.slice(2);
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  headers.set('authorization', `Bearer ${key}`);
  return fetch(input, { ...init, headers });
};
const results = [];
for (const result of await auditServer({ url, fetchFn })) {
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    entry.reason = result.reason;
    entry.body = await result.response.text().catch(() => null);
  }
  results.push(entry);
}
console.log(JSON.stringify(results));
"""


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"graphql-http's audit cannot run ({reason}); CI requires it", pytrace=False)
    pytest.skip(f"graphql-http's audit cannot run ({reason})")


@pytest.fixture(scope="module")
def audit_package() -> Path:
    """A directory holding graphql-http (and graphql) in node_modules."""
    if not shutil.which("node") or not shutil.which("npm"):
        _unavailable("node and npm are not installed")
    prefix = CACHE / GRAPHQL_HTTP.replace("@", "-")
    if not (prefix / "node_modules" / "graphql-http" / "package.json").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", GRAPHQL_HTTP],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if installed.returncode != 0:
            _unavailable(f"npm install {GRAPHQL_HTTP} failed: {installed.stderr.strip()[-500:]}")
    return prefix


def _gateway(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=True,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """``gateway serve`` on a free loopback port: its GraphQL URL, a read key, its log."""
    directory = tmp_path_factory.mktemp("audit")
    url = f"sqlite+aiosqlite:///{directory / 'gateway.db'}"
    upgrade(url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"PYTHONPATH": str(REPO), "GATEWAY_DATABASE_URL": url, "GATEWAY_PORT": str(port)}
    env["GATEWAY_ERASURE_KEY"] = secrets.token_urlsafe(32)  # serve refuses the built-in one
    created = _gateway("keys", "create", "--name", "audit", "--scopes", "profiles:read", env=env)
    key = next(word for word in created.stdout.split() if word.startswith("gwk_"))
    log = directory / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_until_served(f"http://127.0.0.1:{port}/healthz", server)
        except AssertionError:
            raise AssertionError(log.read_text()) from None
        yield f"http://127.0.0.1:{port}/graphql", key, log
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_graphql_over_http_audit_passes_without_warnings(
    audit_package: Path, served: tuple[str, str, Path]
) -> None:
    url, key, log = served
    script = audit_package / "audit.mjs"
    script.write_text(AUDIT)
    ran = subprocess.run(
        ["node", str(script), url, key],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=audit_package,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    results = json.loads(ran.stdout)
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "warn", "error")}
    print(f"graphql-http audit: {counts}")
    not_ok = [r for r in results if r["status"] != "ok"]
    assert not not_ok, "\n".join(
        f"{r['status']} {r['id']} {r['name']}: {r.get('reason')} (answered {r.get('body')!r})"
        for r in not_ok
    )
    assert counts["ok"] >= 61  # graphql-http 1.23's whole audit
    errors = [line for line in log.read_text().splitlines() if '"level":"ERROR"' in line]
    assert not errors, "\n".join(errors)

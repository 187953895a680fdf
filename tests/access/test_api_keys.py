"""API keys as a client and an operator meet them: 401 without a valid key, revocation
(at once here, within the cache TTL elsewhere), the secret stored only as its hash, and
the ``gateway keys`` command.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from gateway.db.access_models import ApiKey
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from tests.access.instances import (
    PING,
    anonymous,
    assert_unauthenticated,
    running,
)
from tests.conftest import (
    bearer,
    issue_key,
    recorded_statements,
)
from tests.in_process import services_of
from tests.test_cli import run


async def test_no_key_or_a_garbage_key_is_401_and_open_paths_need_none(app: Starlette) -> None:
    async with anonymous(app) as http:
        assert_unauthenticated(await http.post("/graphql", json=PING))
        assert_unauthenticated(await http.get("/graphql", params={"query": "{ __typename }"}))
        assert_unauthenticated(
            await http.post("/graphql", json=PING, headers=bearer("gwk_" + "x" * 43))
        )
        assert_unauthenticated(
            await http.post("/graphql", json=PING, headers={"X-API-Key": "not-a-key"})
        )
        assert_unauthenticated(
            await http.post("/graphql", json=PING, headers={"Authorization": "Basic Zm9vOmJhcg=="})
        )
        # What needs no key: health, readiness, metrics and the GraphiQL page.
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        page = await http.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert "<html" in page.text.lower()


async def test_a_key_works_as_bearer_or_x_api_key(app: Starlette) -> None:
    key = await issue_key(app, Scope.PROFILES_READ)
    async with anonymous(app) as http:
        for headers in (bearer(key), {"X-API-Key": key}, {"authorization": f"bearer {key}"}):
            response = await http.post("/graphql", json=PING, headers=headers)
            assert response.status_code == 200, (headers, response.text)
            assert response.json()["data"] == {"__typename": "Query"}


async def test_a_key_revoked_through_the_service_is_refused_at_once(app: Starlette) -> None:
    keys = services_of(app).api_keys
    name = f"revoked-{uuid.uuid4().hex[:8]}"
    secret, info = await keys.create(name, [Scope.PROFILES_READ])
    async with anonymous(app, bearer(secret)) as http:
        assert (await http.post("/graphql", json=PING)).status_code == 200  # now cached
        revoked = await keys.revoke(name)
        assert revoked is not None
        assert revoked.id == info.id
        assert revoked.revoked_at is not None
        assert_unauthenticated(await http.post("/graphql", json=PING))
    assert await keys.revoke(f"no-such-key-{uuid.uuid4().hex}") is None
    listed = {k.name: k for k in await keys.list()}
    assert listed[name].revoked_at is not None


async def test_concurrent_requests_with_a_new_key_share_one_database_read(
    database_url: str,
) -> None:
    async with running(database_url) as app:
        key = await issue_key(app, Scope.PROFILES_READ)
        with recorded_statements(services_of(app).engine.sync_engine) as statements:
            async with anonymous(app, bearer(key)) as http:
                answers = await asyncio.gather(
                    *(http.post("/graphql", json=PING) for _ in range(40))
                )
    reads = [s for s in statements if "FROM api_keys" in s]
    assert [a.status_code for a in answers] == [200] * 40
    assert len(reads) == 1


async def test_a_key_revoked_on_another_instance_stops_working_within_the_cache_ttl(
    database_url: str,
) -> None:
    ttl = 0.5
    async with (
        running(database_url, api_key_cache_ttl_s=ttl) as serving,
        running(database_url) as admin,
    ):
        name = f"elsewhere-{uuid.uuid4().hex[:8]}"
        secret, _ = await services_of(admin).api_keys.create(name, [Scope.PROFILES_READ])
        async with anonymous(serving, bearer(secret)) as http:
            assert (await http.post("/graphql", json=PING)).status_code == 200
            # Real time: the key cache of an app's services reads time.monotonic, and no
            # clock reaches it through create_app.
            await asyncio.sleep(ttl * 0.6)  # past half its time: re-read in the background
            await services_of(admin).api_keys.revoke(name)
            # Answered from the cache at once; the re-read runs beside it.
            assert (await http.post("/graphql", json=PING)).status_code == 200
            await asyncio.sleep(ttl)
            assert_unauthenticated(await http.post("/graphql", json=PING))


async def test_the_secret_is_stored_only_as_its_sha256(app: Starlette, database_url: str) -> None:
    name = f"hashed-{uuid.uuid4().hex[:8]}"
    secret, info = await services_of(app).api_keys.create(name, [Scope.PROFILES_READ], 7)
    assert secret.startswith("gwk_")
    assert len(secret) > 40
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(select(ApiKey).where(ApiKey.id == info.id))).one()
            every_row = (await connection.execute(select(ApiKey))).all()
    finally:
        await engine.dispose()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert (row.name, row.scopes, row.rate_limit_per_minute) == (name, ["profiles:read"], 7)
    assert not any(secret in repr(tuple(r)) for r in every_row)


@pytest.fixture
def keys_db(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    return url


def _keys(url: str, *args: str) -> Any:
    return run("keys", *args, env={"GATEWAY_DATABASE_URL": url})


async def test_keys_cli_creates_lists_and_revokes(keys_db: str) -> None:
    created = _keys(keys_db, "create", "--name", "esp-cli", "--scopes", "profiles:read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("gwk_")
    assert "\n" not in secret
    assert secret not in created.stderr
    assert "cannot be shown again" in created.stderr
    second = _keys(
        keys_db, "create", "--name", "ops", "--scopes", "admin,profiles:write", "--rate-limit", "5"
    )
    assert second.returncode == 0, second.stderr
    other_secret = second.stdout.strip()

    # A running instance with no key cache sees the CLI's revocation on the next request.
    async with running(keys_db, api_key_cache_ttl_s=0) as app, anonymous(app) as http:
        assert (await http.post("/graphql", json=PING, headers=bearer(secret))).status_code == 200
        listed = _keys(keys_db, "list")
        assert listed.returncode == 0, listed.stderr
        lines = {line.split()[1]: line for line in listed.stdout.splitlines()[1:]}
        assert set(lines) == {"esp-cli", "ops"}
        assert "profiles:read" in lines["esp-cli"]
        assert "active" in lines["esp-cli"]
        assert "admin,profiles:write" in lines["ops"]
        assert " 5 " in lines["ops"]
        for output in (listed.stdout, listed.stderr):
            assert secret not in output
            assert other_secret not in output
            assert "gwk_" not in output

        revoked = _keys(keys_db, "revoke", "esp-cli")
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked key 'esp-cli'" in revoked.stdout
        assert_unauthenticated(await http.post("/graphql", json=PING, headers=bearer(secret)))
        # The other key still works; a revoked key is listed as such.
        assert (await http.post("/graphql", json=PING, headers=bearer(other_secret))).is_success
    after = _keys(keys_db, "list").stdout
    assert "revoked" in next(line for line in after.splitlines() if "esp-cli" in line)

    missing = _keys(keys_db, "revoke", "nobody")
    assert missing.returncode == 1
    assert "no key named" in missing.stderr


def test_keys_cli_refuses_bad_input_with_one_line(keys_db: str) -> None:
    unknown = _keys(keys_db, "create", "--name", "x", "--scopes", "profiles:delete")
    assert unknown.returncode == 2
    assert "profiles:delete" in unknown.stderr
    assert "profiles:read" in unknown.stderr
    assert _keys(keys_db, "create", "--name", "y", "--scopes", "admin").returncode == 0
    duplicate = _keys(keys_db, "create", "--name", "y", "--scopes", "admin")
    assert duplicate.returncode == 2
    assert "already exists" in duplicate.stderr
    assert "Traceback" not in unknown.stderr + duplicate.stderr

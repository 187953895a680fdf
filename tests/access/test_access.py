"""API keys, scopes and per-key rate limits, as a client meets them: 401 without a valid
key, FORBIDDEN on the fields a key's scopes do not cover, 429 past its limit (shared by
instances on one Redis), and the ``gateway keys`` command an operator uses."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.access.api_keys import Scope
from gateway.db.access_models import ApiKey
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import (
    api_client,
    bearer,
    clean_redis,
    issue_key,
    recorded_statements,
    redis_database_url,
    unique_email,
)
from tests.gql_client import error_codes, gql
from tests.in_process import asgi, lifespan, services_of
from tests.test_cli import run

REDIS_URL = redis_database_url(15)
UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id email } }"
BY_EMAIL = "query($email: String!) { customer(email: $email) { id email } }"
PING = {"query": "{ __typename }"}


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


@asynccontextmanager
async def running(database_url: str, cache_url: str = "memory://", **settings: Any) -> Any:
    """A gateway instance of its own (its own key cache and rate limiter)."""
    app = create_app(load_settings(database_url=database_url, cache_url=cache_url, **settings))
    async with lifespan(app):
        yield app


def anonymous(app: Starlette, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=asgi(app), base_url="http://gw", headers=headers)


def _assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/json")
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in response.json()


async def _new_customer(app: Starlette) -> tuple[str, str]:
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        email = unique_email("access")
        body = await gql(writer, UPSERT, email=email)
    return body["data"]["upsertCustomer"]["id"], email


# --- authentication ------------------------------------------------------------------------


async def test_no_key_or_a_garbage_key_is_401_and_open_paths_need_none(app: Starlette) -> None:
    async with anonymous(app) as http:
        _assert_unauthenticated(await http.post("/graphql", json=PING))
        _assert_unauthenticated(await http.get("/graphql", params={"query": "{ __typename }"}))
        _assert_unauthenticated(
            await http.post("/graphql", json=PING, headers=bearer("gwk_" + "x" * 43))
        )
        _assert_unauthenticated(
            await http.post("/graphql", json=PING, headers={"X-API-Key": "not-a-key"})
        )
        _assert_unauthenticated(
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
        _assert_unauthenticated(await http.post("/graphql", json=PING))
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
            await asyncio.sleep(ttl * 0.6)  # past half its time: re-read in the background
            await services_of(admin).api_keys.revoke(name)
            # Answered from the cache at once; the re-read runs beside it.
            assert (await http.post("/graphql", json=PING)).status_code == 200
            await asyncio.sleep(ttl)
            _assert_unauthenticated(await http.post("/graphql", json=PING))


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


# --- the gateway keys command ----------------------------------------------------------------


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
        _assert_unauthenticated(await http.post("/graphql", json=PING, headers=bearer(secret)))
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


# --- scopes -------------------------------------------------------------------------------


async def test_a_read_key_reads_but_cannot_write(app: Starlette) -> None:
    customer_id, email = await _new_customer(app)
    async with api_client(app, Scope.PROFILES_READ) as reader:
        found = await gql(reader, BY_EMAIL, email=email)
        assert found == {"data": {"customer": {"id": customer_id, "email": email}}}

        refused = await gql(reader, UPSERT, email=unique_email("nope"))
        assert error_codes(refused) == [("FORBIDDEN", ["upsertCustomer"])]
        assert refused["errors"][0]["extensions"]["field"] == "upsertCustomer"
        assert "profiles:write" in refused["errors"][0]["message"]

        # A forbidden field next to an allowed one: the allowed one still answers.
        mixed = await gql(
            reader,
            "query($email: String!, $id: ID!) { customer(email: $email) { id } "
            "exportCustomer(id: $id) }",
            email=email,
            id=customer_id,
        )
    assert mixed["data"] == {"customer": {"id": customer_id}, "exportCustomer": None}
    assert error_codes(mixed) == [("FORBIDDEN", ["exportCustomer"])]
    assert mixed["errors"][0]["extensions"]["field"] == "exportCustomer"


async def test_a_write_key_is_refused_admin_fields_and_keeps_its_own(app: Starlette) -> None:
    customer_id, _ = await _new_customer(app)
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        body = await gql(
            writer,
            "mutation($id: ID!) { setConsent(customerId: $id, purpose: ANALYTICS, "
            "granted: true) { purpose granted source } forgetCustomer(id: $id) { customerId } }",
            id=customer_id,
        )
        assert body["data"] == {
            "setConsent": {"purpose": "ANALYTICS", "granted": True, "source": "api"},
            "forgetCustomer": None,
        }
        assert error_codes(body) == [("FORBIDDEN", ["forgetCustomer"])]
        audit = await gql(writer, "{ auditLog { actor } }")
        assert error_codes(audit) == [("FORBIDDEN", ["auditLog"])]
        # A write key is not a read key: profiles:write alone does not read profiles.
        read = await gql(writer, "query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
        assert error_codes(read) == [("FORBIDDEN", ["customer"])]
    # The customer is still there: the refused erasure did nothing.
    async with api_client(app) as admin:
        still = await gql(admin, "query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
    assert still["data"]["customer"] == {"id": customer_id}


# --- rate limits ------------------------------------------------------------------------------


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"


async def test_a_key_over_its_limit_gets_429_with_retry_after(app: Starlette) -> None:
    limited = await issue_key(app, Scope.PROFILES_READ, rate_limit=3)
    other = await issue_key(app, Scope.PROFILES_READ, rate_limit=3)
    async with anonymous(app, bearer(limited)) as http:
        for _ in range(3):
            assert (await http.post("/graphql", json=PING)).status_code == 200
        _assert_rate_limited(await http.post("/graphql", json=PING))
        # Another key has its own budget; an open path is not limited.
        assert (await http.post("/graphql", json=PING, headers=bearer(other))).status_code == 200
        assert (await http.get("/healthz")).status_code == 200


async def test_two_instances_on_one_redis_share_a_keys_limit(
    database_url: str, redis_url: str
) -> None:
    async with (
        running(database_url, redis_url) as first,
        running(database_url, redis_url) as second,
    ):
        key = await issue_key(first, Scope.PROFILES_READ, rate_limit=3)
        async with anonymous(first, bearer(key)) as one, anonymous(second, bearer(key)) as two:
            assert (await one.post("/graphql", json=PING)).status_code == 200
            assert (await one.post("/graphql", json=PING)).status_code == 200
            assert (await two.post("/graphql", json=PING)).status_code == 200
            _assert_rate_limited(await two.post("/graphql", json=PING))
            _assert_rate_limited(await one.post("/graphql", json=PING))


async def test_with_an_in_memory_cache_each_instance_limits_on_its_own(
    database_url: str,
) -> None:
    async with running(database_url) as first, running(database_url) as second:
        key = await issue_key(first, Scope.PROFILES_READ, rate_limit=2)
        async with anonymous(first, bearer(key)) as one, anonymous(second, bearer(key)) as two:
            assert [(await one.post("/graphql", json=PING)).status_code for _ in range(3)] == [
                200,
                200,
                429,
            ]
            assert (await two.post("/graphql", json=PING)).status_code == 200


async def test_a_key_without_its_own_limit_gets_the_gateway_default(database_url: str) -> None:
    async with running(database_url, rate_limit_per_minute=2) as app:
        key = await issue_key(app, Scope.PROFILES_READ, rate_limit=None)
        async with anonymous(app, bearer(key)) as http:
            codes = [(await http.post("/graphql", json=PING)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


# --- WebSocket ----------------------------------------------------------------------------


SUBSCRIPTION = "subscription($id: ID!) { customerUpdated(id: $id) { id eventType changedFields } }"


def _receive(ws: Any) -> Any:
    message = ws.receive()
    assert message["type"] == "websocket.send", message
    return orjson.loads(message.get("text") or message["bytes"])


@pytest.fixture
def ws_client(database_url: str) -> Iterator[TestClient]:
    app = create_app(load_settings(database_url=database_url, cache_url="memory://"))
    with TestClient(app) as client:
        yield client


def test_a_websocket_authenticates_in_connection_init(ws_client: TestClient) -> None:
    portal = ws_client.portal
    assert portal is not None
    key = portal.call(issue_key, ws_client, Scope.PROFILES_READ)
    writer = portal.call(issue_key, ws_client, Scope.PROFILES_WRITE)
    email = unique_email("ws")
    created = ws_client.post(
        "/graphql", json={"query": UPSERT, "variables": {"email": email}}, headers=bearer(writer)
    )
    customer_id = created.json()["data"]["upsertCustomer"]["id"]
    notifications = services_of(ws_client).notifications
    with ws_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
        assert _receive(ws)["type"] == "connection_ack"
        ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIPTION, "variables": {"id": customer_id}},
            }
        )
        while notifications.subscribers(uuid.UUID(customer_id)) == 0:
            portal.call(asyncio.sleep, 0.01)
        consent = ws_client.post(
            "/graphql",
            json={
                "query": "mutation($id: ID!) { setConsent(customerId: $id, "
                "purpose: EMAIL_MARKETING, granted: false) { granted } }",
                "variables": {"id": customer_id},
            },
            headers=bearer(writer),
        )
        assert consent.json()["data"] == {"setConsent": {"granted": False}}, consent.text
        message = _receive(ws)
        ws.send_json({"id": "1", "type": "complete"})
    assert message["type"] == "next"
    assert message["payload"]["data"]["customerUpdated"] == {
        "id": customer_id,
        "eventType": "consent",
        "changedFields": ["consent"],
    }


def test_a_websocket_without_a_key_is_rejected(ws_client: TestClient) -> None:
    with ws_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        closed = ws.receive()
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 4403

    with ws_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"Authorization": "Bearer gwk_bad"}})
        closed = ws.receive()
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 4403

    # A bad key in the header is refused before the socket is accepted.
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        ws_client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"], headers=bearer("gwk_bad")
        ),
    ):
        pass
    assert refused.value.code == 4401

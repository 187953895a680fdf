"""WebSockets keep checking their key: after a revocation a socket gets no more results
and is closed with 4403, new subscriptions are refused, and every subscribe is charged
to the key's rate limit. Real sockets: the gateway under uvicorn on loopback, a
``websockets`` client, and the memory and Redis notification paths."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.access.api_keys import Scope
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import bearer, clean_redis, redis_database_url, unique_email
from tests.in_process import asgi, lifespan, opened_by, services_of
from tests.served import free_port

TTL = 0.2  # the serving instance's key cache: a revocation elsewhere reaches it within this
SUBSCRIPTION = "subscription($id: ID!) { customerUpdated(id: $id) { id eventType } }"
CONSENT = (
    "mutation($id: ID!, $g: Boolean!) { setConsent(customerId: $id, purpose: ANALYTICS, "
    "granted: $g) { granted } }"
)
UPSERT = "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }"


@pytest.fixture
async def shared_redis() -> AsyncIterator[str]:
    async with clean_redis(redis_database_url(12)) as url:
        yield url


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """The app under uvicorn on a loopback port; yields its host:port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it did not start
        await asyncio.sleep(0.02)
    opened_by(app, server)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _app(database_url: str, cache_url: str = "memory://", **settings: Any) -> Starlette:
    return create_app(load_settings(database_url=database_url, cache_url=cache_url, **settings))


class Gateway:
    """One instance: its app, and HTTP calls to it with a given key."""

    def __init__(self, app: Starlette, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http

    async def gql(self, key: str, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return body

    async def key(self, *scopes: Scope, rate_limit: int | None = 10**6) -> tuple[str, str]:
        """A new key (secret, name), made through this instance."""
        name = f"ws-{uuid.uuid4().hex[:10]}"
        secret, _ = await services_of(self.app).api_keys.create(name, scopes, rate_limit)
        return secret, name

    async def revoke(self, name: str) -> None:
        assert await services_of(self.app).api_keys.revoke(name) is not None

    async def subscribed(self, customer_id: str) -> None:
        notifications = services_of(self.app).notifications
        async with asyncio.timeout(5):
            while notifications.subscribers(uuid.UUID(customer_id)) == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # (a count has no event to wait on)


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[tuple[Gateway, str]]:
    """An instance under uvicorn (for its sockets); yields it and its ws:// URL."""
    async with served(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        yield Gateway(app, http), f"ws://{address}/graphql"


@asynccontextmanager
async def in_process(app: Starlette) -> AsyncIterator[Gateway]:
    """Another instance on the same database, called in process."""
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=asgi(app), base_url="http://gw") as http,
    ):
        yield Gateway(app, http)


@asynccontextmanager
async def socket_of(
    url: str, key: str, *, in_header: bool = False
) -> AsyncIterator[ClientConnection]:
    """A socket past connection_ack, its key in connection_init (as browsers send it) or
    in the handshake's Authorization header."""
    async with connect(
        url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers=bearer(key) if in_header else None,
    ) as ws:
        payload = {} if in_header else bearer(key)
        await ws.send(orjson.dumps({"type": "connection_init", "payload": payload}).decode())
        assert (await _receive(ws))["type"] == "connection_ack"
        yield ws


async def _receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    return message


async def _subscribe(ws: ClientConnection, operation: str, query: str, **variables: Any) -> None:
    message = {"id": operation, "type": "subscribe", "payload": {"query": query}}
    if variables:
        message["payload"]["variables"] = variables  # type: ignore[index]
    await ws.send(orjson.dumps(message).decode())


async def _closed_without_a_message(ws: ClientConnection, within: float = 5) -> int | None:
    """The close code, once the server closes the socket; fails on any message first."""
    try:
        async with asyncio.timeout(within):
            message = await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    raise AssertionError(f"received {message!r} from a socket whose key was revoked")


async def _customer(gateway: Gateway, writer: str) -> str:
    body = await gateway.gql(writer, UPSERT, e=unique_email("ws"))
    customer_id: str = body["data"]["upsertCustomer"]["id"]
    return customer_id


async def test_a_key_revoked_elsewhere_gets_no_more_results_and_is_closed(
    database_url: str,
) -> None:
    async with (
        serving(_app(database_url, api_key_cache_ttl_s=TTL)) as (gateway, url),
        in_process(_app(database_url)) as elsewhere,
    ):
        reader, name = await elsewhere.key(Scope.PROFILES_READ)
        writer, _ = await elsewhere.key(Scope.PROFILES_WRITE)
        customer_id = await _customer(gateway, writer)
        async with socket_of(url, reader) as ws:
            await _subscribe(ws, "1", SUBSCRIPTION, id=customer_id)
            await gateway.subscribed(customer_id)
            await gateway.gql(writer, CONSENT, id=customer_id, g=True)
            delivered = await _receive(ws)
            assert delivered["type"] == "next", delivered

            await elsewhere.revoke(name)
            # Real time: a served app's key cache takes no clock (see test_api_keys).
            await asyncio.sleep(TTL)  # the serving instance's cached answer has expired
            await gateway.gql(writer, CONSENT, id=customer_id, g=False)
            assert await _closed_without_a_message(ws) == 4403


@pytest.mark.parametrize("in_header", [False, True], ids=["connection_init", "header"])
async def test_an_idle_socket_is_closed_once_its_key_is_revoked(
    database_url: str, in_header: bool
) -> None:
    async with (
        serving(_app(database_url, api_key_cache_ttl_s=TTL)) as (_, url),
        in_process(_app(database_url)) as elsewhere,
    ):
        reader, name = await elsewhere.key(Scope.PROFILES_READ)
        async with socket_of(url, reader, in_header=in_header) as ws:
            await _subscribe(ws, "1", SUBSCRIPTION, id=str(uuid.uuid4()))
            await elsewhere.revoke(name)
            assert await _closed_without_a_message(ws) == 4403


async def test_a_revoked_key_cannot_subscribe_again(database_url: str) -> None:
    # A long key cache: the revocation is seen at once only because it is made here.
    async with serving(_app(database_url, api_key_cache_ttl_s=60)) as (gateway, url):
        reader, name = await gateway.key(Scope.PROFILES_READ)
        writer, _ = await gateway.key(Scope.PROFILES_WRITE)
        customer_id = await _customer(gateway, writer)
        async with socket_of(url, reader) as ws:
            await gateway.revoke(name)
            await _subscribe(ws, "1", SUBSCRIPTION, id=customer_id)
            await asyncio.sleep(0.2)  # had it been accepted, it would be listening now
            await gateway.gql(writer, CONSENT, id=customer_id, g=True)
            assert await _closed_without_a_message(ws) == 4403


async def test_each_subscribe_is_charged_to_the_keys_rate_limit(database_url: str) -> None:
    async with serving(_app(database_url)) as (gateway, url):
        limited, _ = await gateway.key(Scope.PROFILES_READ, rate_limit=3)
        await gateway.gql(limited, "{ __typename }")  # one of the three, over HTTP
        async with socket_of(url, limited) as ws:
            for operation in ("1", "2"):
                await _subscribe(ws, operation, "{ __typename }")
                answer = await _receive(ws)
                assert answer["type"] == "next", answer
                assert answer["id"] == operation, answer
                assert (await _receive(ws))["type"] == "complete"
            await _subscribe(ws, "3", "{ __typename }")
            refused = await _receive(ws)
        over_http = await gateway.http.post(
            "/graphql", json={"query": "{ __typename }"}, headers=bearer(limited)
        )
    assert refused["type"] == "error", refused
    assert refused["id"] == "3", refused
    (error,) = refused["payload"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] >= 1
    assert over_http.status_code == 429


async def test_with_redis_a_revocation_on_another_instance_closes_the_socket(
    database_url: str, shared_redis: str
) -> None:
    async with (
        serving(_app(database_url, shared_redis, api_key_cache_ttl_s=TTL)) as (gateway, url),
        in_process(_app(database_url, shared_redis)) as elsewhere,
    ):
        reader, name = await elsewhere.key(Scope.PROFILES_READ)
        writer, _ = await elsewhere.key(Scope.PROFILES_WRITE)
        customer_id = await _customer(elsewhere, writer)
        async with socket_of(url, reader) as ws:
            await _subscribe(ws, "1", SUBSCRIPTION, id=customer_id)
            await gateway.subscribed(customer_id)
            # Changed on the other instance: delivered here through Redis.
            await elsewhere.gql(writer, CONSENT, id=customer_id, g=True)
            delivered = await _receive(ws)
            assert delivered["type"] == "next", delivered
            assert delivered["payload"]["data"]["customerUpdated"]["id"] == customer_id

            await elsewhere.revoke(name)
            await asyncio.sleep(TTL)  # real time, as above
            await elsewhere.gql(writer, CONSENT, id=customer_id, g=False)
            assert await _closed_without_a_message(ws) == 4403


async def test_the_legacy_graphql_ws_protocol_is_refused(database_url: str) -> None:
    """graphql-ws (subscriptions-transport-ws) would bypass these checks: not offered."""
    async with serving(_app(database_url)) as (gateway, url):
        reader, _ = await gateway.key(Scope.PROFILES_READ)
        async with connect(
            url,
            subprotocols=["graphql-ws"],  # type: ignore[list-item]
            additional_headers=bearer(reader),
        ) as ws:
            code = await _closed_without_a_message(ws)
            assert ws.subprotocol is None
    assert code == 4406

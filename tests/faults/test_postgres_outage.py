"""Postgres stopped under load (``pg_ctl stop -m immediate``) and started again, with the
gateway served by uvicorn on a real port and clients on keep-alive connections.

What clients must see: profiles cached before the outage still answered with data (and
marked as served from the cache); every other request a 503 JSON answer with a code and
``Retry-After``; no connection dropped; keys verified before still accepted, a key
revoked before the outage still refused; and, once Postgres is back, the same gateway
process serving everything again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import ApiKeys, Scope
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.settings import load_settings
from resolvers.app import create_app
from resolvers.http.error_boundary import ErrorBoundary
from tests.conftest import FAST, clean_redis, redis_database_url
from tests.faults.keepalive import Answer, KeepAliveConnection
from tests.faults.outage_load import Load, tally, wait_until
from tests.faults.postgres_cluster import PostgresCluster
from tests.in_process import opened_by, services_of
from tests.served import free_port

CLIENTS = 12
SEGMENT_SECRET = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def cluster(samples: SampleUpstreams) -> Iterator[PostgresCluster]:
    with PostgresCluster.started() as running:
        upgrade(running.url)

        async def populate() -> None:
            engine = create_engine(running.url)
            await seed(create_sessionmaker(engine), samples.people)
            await engine.dispose()

        asyncio.run(populate())
        yield running


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[int]:
    """The app under uvicorn on a loopback port; yields the port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    opened_by(app, server)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _revoke_elsewhere(url: str, name: str) -> None:
    """As an operator would from another instance: this process's cache does not see it."""
    engine = create_engine(url)
    await ApiKeys(create_sessionmaker(engine)).revoke(name)
    await engine.dispose()


# A webhook committed just before the stop re-reads its profile to drop it from the
# cache, and logs that failure with its traceback (gateway/ingest/webhooks.py's after-commit).
@pytest.mark.logs_errors(r"cache invalidation or notification failed after commit")
async def test_a_postgres_outage_serves_cached_profiles_and_answers_503_otherwise(
    cluster: PostgresCluster, samples: SampleUpstreams
) -> None:
    tables = {name: dict(FAST) for name in samples.base_urls}
    async with clean_redis(redis_database_url(14)) as cache_url:
        settings = load_settings(
            database_url=cluster.url,
            cache_url=cache_url,
            profile_cache_ttl_s=600,
            webhook_secrets={"segment": SecretStr(SEGMENT_SECRET)},
            database_connect_timeout_s=1,
        )
        app = create_app(settings, upstreams=sample_upstreams_config(samples.base_urls, tables))
        async with served(app) as port:
            keys: ApiKeys = services_of(app).api_keys
            reader, _ = await keys.create("outage-reader", {Scope.PROFILES_READ})
            revoked, _ = await keys.create("outage-revoked", {Scope.PROFILES_READ})
            people = samples.people
            warm = people[:60]

            async def graphql(query: str, variables: dict[str, str]) -> Any:
                probe = KeepAliveConnection("127.0.0.1", port)
                body = orjson.dumps({"query": query, "variables": variables})
                headers = {"Authorization": f"Bearer {reader}", "Content-Type": "application/json"}
                try:
                    return await probe.request("POST", "/graphql", headers, body)
                finally:
                    await probe.close()

            async def get(path: str, key: str) -> Answer:
                # A connection each: uvicorn closes one left idle for 5 s, as it should.
                probe = KeepAliveConnection("127.0.0.1", port)
                try:
                    return await probe.request("GET", path, {"Authorization": f"Bearer {key}"})
                finally:
                    await probe.close()

            ids = []
            for person in warm:
                answer = await get(f"/api/v1/users/{person.email}/profile", reader)
                assert answer.status == 200, answer.body
                body: Any = answer.json()
                ids.append((person.email, body["id"]))
            assert (await get(f"/api/v1/users/{warm[0].email}/profile", revoked)).status == 200
            await _revoke_elsewhere(cluster.url, "outage-revoked")
            # The serving process learns of it from its background re-check (once a second).
            assert await wait_until(lambda: keys.known_revoked(revoked), 10)

            load = Load(
                "127.0.0.1",
                port,
                reader,
                ids,
                [p.email for p in people[60:]],
                SEGMENT_SECRET,
            )
            stop = asyncio.Event()
            running = asyncio.create_task(load.run(CLIENTS, stop))
            # Real time on purpose: load before, during and after a real Postgres outage.
            await asyncio.sleep(1.5)
            load.phase = "down"
            await asyncio.to_thread(cluster.stop_immediately)
            await asyncio.sleep(4)  # the outage lasts past the pool's real timeouts
            during_revoked = await get(f"/api/v1/users/{warm[1].email}/profile", revoked)
            never_verified = "gwk_" + secrets.token_urlsafe(32)  # right shape, never seen
            cold = people[-2].email
            partial = await graphql(
                "query($w: String, $c: String) { warm: customer(email: $w) { id } "
                "cold: customer(email: $c) { id } }",
                {"w": warm[2].email, "c": cold},
            )
            nothing = await graphql("query($c: String) { customer(email: $c) { id } }", {"c": cold})
            during_unknown = await get(f"/api/v1/users/{warm[1].email}/profile", never_verified)
            load.phase = "restarting"
            await asyncio.to_thread(cluster.start)
            load.phase = "back"

            async def uncached_served() -> bool:
                cold = people[-1].email
                return (await get(f"/api/v1/users/{cold}/profile", reader)).status == 200

            recovered = await wait_until(uncached_served, 20)
            await asyncio.sleep(1.5)  # load after recovery, to count its errors
            stop.set()
            await running

    down, back = tally(load.outcomes, "down"), tally(load.outcomes, "back")
    assert down["cached"] > 100, down
    assert down["cached_served"] >= 0.99 * down["cached"], down
    assert down["cached_marked"] >= 0.9 * down["cached_served"], down
    assert down["coded_503"] > 0, down
    assert down["other_failures"] == 0, down
    assert down["resets"] == back["resets"] == 0, (down, back)
    assert sum(c.opened for c in load.connections) == CLIENTS  # every one kept alive
    assert during_revoked.status == 401, during_revoked.body
    assert during_unknown.status == 503
    assert during_unknown.code == "DATABASE_UNAVAILABLE"
    assert partial.status == 200, partial.body
    assert partial.json()["data"]["warm"]["id"], partial.body
    assert partial.json()["data"]["cold"] is None
    assert partial.code == "DATABASE_UNAVAILABLE"
    assert partial.json()["extensions"]["degraded"]["servedFrom"] == "cache"
    assert nothing.status == 503, nothing.body
    assert nothing.code == "DATABASE_UNAVAILABLE", nothing.body
    assert nothing.headers["retry-after"] == "5"
    assert recovered, "the gateway did not serve an uncached profile after the restart"
    assert back["other_served"] > 0, back
    assert back["other_failures"] == 0, back


@pytest.mark.logs_errors(r"unhandled error")
async def test_an_unhandled_error_is_json_500_and_the_connection_stays_open() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    async def fine(request: Request) -> Response:
        return Response("ok")

    app = Starlette(
        routes=[Route("/broken", broken), Route("/fine", fine)],
        middleware=[Middleware(ErrorBoundary)],
    )
    async with served(app) as port:
        connection = KeepAliveConnection("127.0.0.1", port)
        failed = await connection.request("GET", "/broken", {})
        after = await connection.request("GET", "/fine", {})
        await connection.close()
    assert failed.status == 500
    assert failed.code == "INTERNAL"
    assert failed.headers["content-type"] == "application/json"
    body: Any = failed.json()
    assert body["request_id"]
    assert "a bug" not in failed.body.decode()
    assert after.status == 200
    assert connection.opened == 1

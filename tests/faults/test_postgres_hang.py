"""A database that stops answering without closing anything (a hung server, a network
that drops packets) bounds every request by the statement timeout: an outside check
SIGSTOPped Postgres and every authenticated request and webhook waited on it for ever
(a client gave up after 150 s), each holding a pooled connection.

The database sits behind a proxy that, frozen, relays nothing and closes nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.settings import load_settings
from tests.conftest import api_client, create_postgres_database, drop_postgres_database
from tests.faults.freezing_proxy import FreezingProxy
from tests.in_process import lifespan
from tests.ingest.webhook_requests import realtime_app, segment_request

# Longer than the bound: a request's wait is the ping's (the connect timeout, 2 s) and a
# reconnect's, not a statement's. What "bounded" means here: those, and a loaded
# machine's slack; a request that hangs never ends at all.
STATEMENT_TIMEOUT_S = 60.0
BOUND_S = 20.0


def _identify() -> dict[str, Any]:
    return segment_request(
        {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "userId": f"hang-{uuid.uuid4().hex[:10]}",
            "traits": {"email": f"hang.{uuid.uuid4().hex[:10]}@example.org"},
        }
    )


async def _timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await asyncio.wait_for(request, BOUND_S)
    return response, time.monotonic() - started


async def test_a_database_that_stops_answering_is_answered_within_the_ping_timeout(
    postgres_url: str,
) -> None:
    await asyncio.to_thread(upgrade, postgres_url)
    url = make_url(postgres_url)
    async with FreezingProxy.to(url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = load_settings(
            database_url=proxied,
            cache_url="memory://",
            database_statement_timeout_s=STATEMENT_TIMEOUT_S,
            api_key_cache_ttl_s=0,  # every request reads its key: the database is asked
        )
        app = realtime_app(settings)
        async with lifespan(app), api_client(app) as gw:
            assert (await gw.post("/graphql", json={"query": "{ __typename }"})).status_code == 200
            assert (await gw.post(**_identify())).status_code == 200  # the pool is warm

            proxy.freeze()
            # The key was verified a moment ago: the outage grace lets it in, once the
            # database has been given up on; the operation needs nothing else of it.
            read, waited = await _timed(gw.post("/graphql", json={"query": "{ __typename }"}))
            assert read.status_code == 200, read.text
            webhook, webhook_waited = await _timed(gw.post(**_identify()))
            assert webhook.status_code == 503, webhook.text
            assert webhook.headers["retry-after"]
            assert max(waited, webhook_waited) >= 1.0  # the database was waited on

            proxy.thaw()
            again = await asyncio.wait_for(gw.post(**_identify()), BOUND_S)
            assert again.status_code == 200, again.text
            assert [e["status"] for e in again.json()["events"]] == ["processed"]


async def test_pooled_connections_killed_under_the_gateway_are_replaced_quietly() -> None:
    # A fresh review: the bounded ping raised asyncpg's "connection is closed" as it was,
    # so after a restart (or an idle connection killed) each dead pooled connection cost
    # a request a 500 instead of a quiet reconnect. A database of its own: every other
    # connection to it is killed.
    url = await asyncio.to_thread(create_postgres_database, "gateway_killed_pool")
    try:
        await asyncio.to_thread(upgrade, url)
        app = realtime_app(load_settings(database_url=url, cache_url="memory://"))
        async with lifespan(app), api_client(app) as gw:
            assert (await gw.post(**_identify())).status_code == 200  # a pooled connection
            engine = create_engine(url)
            try:
                async with engine.connect() as admin:
                    killed = await admin.scalar(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
            finally:
                await engine.dispose()
            assert killed
            answers = [(await gw.post(**_identify())).status_code for _ in range(3)]
        assert answers == [200, 200, 200]
    finally:
        await asyncio.to_thread(drop_postgres_database, url)

"""Redis is an accelerator, never a dependency: the gateway on a `redis-server` of the
test's own, under concurrent load, while that server is stopped, frozen (SIGSTOP) and
restarted. What clients see is counted: reads answered with data, errors, latency."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.ingest.notifications import CustomerChange, build_notifications
from gateway.services import Services, open_redis
from gateway.settings import load_settings
from gateway.upstreams.redis_client import RedisGuard
from resolvers.app import create_app
from resolvers.http.persisted_queries import digest_of
from tests.conftest import FAST, bearer, issue_key, unique_email
from tests.faults.redis_server import RedisServer
from tests.gql_client import gql
from tests.in_process import asgi, lifespan, services_of

READ = "query($email: String!) { customer(email: $email) { email firstName lifecycleStage } }"
# Stored fields only: what a miss costs is one database read, so what is timed is Redis.
PROFILE = "query($email: String!) { customer(email: $email) { email firstName } }"
CLIENTS = 20
# Short enough for a test to see the circuit open and close within a second or two.
REDIS_SETTINGS: dict[str, Any] = {"redis_breaker_reset_s": 0.5, "profile_cache_ttl_s": 300}
# Redis's outage is checked, not the samples' speed: with Redis away every read calls
# HubSpot's sample (a thread here), which missed FAST's 0.4 s at load 13 (on main too).
UPSTREAM: dict[str, Any] = {**FAST, "timeout_s": 2.0, "deadline_s": 4.0}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(persist=True) as server:
        yield server


@asynccontextmanager
async def serving(
    samples: SampleUpstreams, database_url: str, cache_url: str, **settings: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """One gateway instance on the sample upstreams and a client holding an admin key."""
    tables = dict.fromkeys(samples.base_urls, UPSTREAM)
    app = create_app(
        load_settings(database_url=database_url, cache_url=cache_url, **REDIS_SETTINGS, **settings),
        upstreams=sample_upstreams_config(samples.base_urls, tables),
    )
    async with lifespan(app):
        key = await issue_key(app)
        transport = asgi(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=bearer(key), timeout=30
        ) as client:
            yield app, client


def broken(guard: RedisGuard) -> int:  # calls failed other than by a timeout
    return sum(n for error, n in guard.failures_by_error.items() if error != "TimeoutError")


def guard_of(app: Starlette) -> RedisGuard:
    services: Services = services_of(app)
    assert services.redis is not None
    return services.redis


@dataclass
class Tally:
    """What the load's clients got."""

    answered: int = 0  # with the customer's data and no error
    failed: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.answered + len(self.failed)

    async def grown(self, by: int, at_least_s: float, within_s: float = 60) -> None:
        """Let the load run for ``at_least_s`` and until ``by`` more requests were
        answered: a phase of the test sees real traffic however slow the machine is,
        and a gateway that stalls fails here instead of passing on a quiet second."""
        goal, started = self.total + by, time.monotonic()
        await asyncio.sleep(at_least_s)
        while self.total < goal:
            assert time.monotonic() - started < within_s, f"{self.total}/{goal} answered"
            await asyncio.sleep(0.05)


async def load(
    client: httpx.AsyncClient, emails: list[str], stop: asyncio.Event, query: str, tally: Tally
) -> None:
    """``CLIENTS`` clients reading profiles back to back until ``stop`` is set, counted
    into ``tally`` as they go."""

    async def one(n: int) -> None:
        turn = n
        while not stop.is_set():
            email = emails[turn % len(emails)]
            turn += CLIENTS
            started = time.perf_counter()
            response = await client.post(
                "/graphql", json={"query": query, "variables": {"email": email}}
            )
            tally.latencies.append(time.perf_counter() - started)
            body = response.json() if response.status_code == 200 else {}
            customer = (body.get("data") or {}).get("customer") or {}
            if customer.get("email") == email and not body.get("errors"):
                tally.answered += 1
            else:
                tally.failed.append(f"{response.status_code} {response.text[:200]}")

    await asyncio.gather(*(one(n) for n in range(CLIENTS)))


@asynccontextmanager
async def loaded(
    client: httpx.AsyncClient, emails: list[str], query: str = READ
) -> AsyncIterator[Tally]:
    """Load running for the duration of the block; the tally is complete after it."""
    stop, tally = asyncio.Event(), Tally()
    task = asyncio.create_task(load(client, emails, stop, query, tally))
    try:
        yield tally
    finally:
        stop.set()
        await finished(task)


async def finished(task: asyncio.Task[None], within_s: float = 60) -> None:
    """The load stopped; a request that never ends fails with where every task waits
    (pytest-timeout's thread dump shows only the idle event loop)."""
    done, _ = await asyncio.wait({task}, timeout=within_s)
    if not done:  # a hang of the gateway
        stacks = io.StringIO()
        for other in asyncio.all_tasks():
            other.print_stack(limit=30, file=stacks)
        task.cancel()
        pytest.fail(f"requests still unanswered after {within_s} s:\n{stacks.getvalue()}")
    task.result()


async def warm(client: httpx.AsyncClient, emails: list[str]) -> None:
    for email in emails:
        assert (await gql(client, READ, email=email))["data"]["customer"]["email"] == email


async def test_a_stopped_redis_costs_no_read(
    samples: SampleUpstreams, seeded_url: str, redis_server: RedisServer
) -> None:
    emails = [p.email for p in samples.people[:40] if p.email]
    async with serving(samples, seeded_url, redis_server.url) as (app, client):
        await warm(client, emails)
        async with loaded(client, emails) as tally:
            # Real time on purpose: the load runs against a real outage of a real server
            # (before, during, after), and redis-py's own timeouts play out in it.
            await tally.grown(by=20, at_least_s=0.5)
            redis_server.stop()
            await tally.grown(by=100, at_least_s=3)
            redis_server.start()
            await tally.grown(by=100, at_least_s=2)
        guard = guard_of(app)
    assert tally.failed == []
    assert tally.answered / tally.total >= 0.99
    assert guard.available


async def test_a_frozen_redis_costs_one_short_timeout_not_one_per_request(
    samples: SampleUpstreams, seeded_url: str, redis_server: RedisServer
) -> None:
    emails = [p.email for p in samples.people[40:80] if p.email]
    timeout = 0.25
    async with serving(samples, seeded_url, redis_server.url, redis_op_timeout_s=timeout) as (
        app,
        client,
    ):
        await warm(client, emails)
        guard = guard_of(app)
        redis_server.freeze()
        frozen_at = time.monotonic()
        try:
            async with loaded(client, emails, PROFILE) as tally:
                # Real load through a frozen server's real timeouts.
                await tally.grown(by=100, at_least_s=3)
        finally:
            redis_server.thaw()
        frozen_s = time.monotonic() - frozen_at
        timeouts = guard.failures
        # Thawed: the circuit closes again at its next probe, traffic or not.
        await asyncio.wait_for(guard.recovered(), 5)
        available = guard.available
        await warm(client, emails)
    assert tally.failed == []
    # Redis was waited for by the first requests (until the circuit opened) and by one
    # probe per half second, not by each of the hundreds of requests.
    assert timeouts <= CLIENTS + frozen_s / 0.5 + 2, (timeouts, tally.total)
    assert max(tally.latencies) < 1.0, sorted(tally.latencies)[-5:]
    assert available


async def test_connections_from_before_a_restart_fail_no_request(
    samples: SampleUpstreams, seeded_url: str, redis_server: RedisServer
) -> None:
    emails = [p.email for p in samples.people[80:120] if p.email]
    async with serving(samples, seeded_url, redis_server.url) as (app, client):
        async with loaded(client, emails) as before:  # fills the pool with connections
            await before.grown(by=50, at_least_s=1)  # the pool fills as traffic does
        guard = guard_of(app)
        pooled = len(guard.client.connection_pool._available_connections)
        redis_server.restart()  # every pooled connection is now broken
        failures = broken(guard)
        async with loaded(client, emails) as after:
            await after.grown(by=100, at_least_s=1)  # meeting the broken connections
        # Each broken connection was replaced by redis-py's retry, not reported as a
        # Redis failure (which would have cost the request its cache, or worse). Not
        # timeouts: a broken one fails at once (a starved process timed out 8 at load 13).
        assert broken(guard) == failures, guard.failures_by_error
        await asyncio.wait_for(guard.recovered(), 5)  # after such a timeout, if any
        assert guard.available
    assert pooled >= 2
    assert before.failed == []
    assert after.failed == []


async def test_a_write_during_an_outage_is_seen_after_it_on_every_instance(
    samples: SampleUpstreams, seeded_url: str, redis_server: RedisServer
) -> None:
    email = unique_email("outage")  # a customer of this test's own: the seed stays as it is
    upsert = (
        "mutation($email: String!, $name: String!) {"
        " upsertCustomer(input: {email: $email, firstName: $name}) { email firstName } }"
    )
    async with (
        serving(samples, seeded_url, redis_server.url) as (app, writer),
        serving(samples, seeded_url, redis_server.url) as (_, reader),
    ):
        assert (await gql(writer, upsert, email=email, name="Before")).get("errors") is None
        for client in (writer, reader):  # both cache the profile (one entry in Redis)
            await warm(client, [email])
        redis_server.stop()
        written = await gql(writer, upsert, email=email, name="Outage")
        # The row was written: success, although the cache could not be told.
        assert written.get("errors") is None
        assert written["data"]["upsertCustomer"]["firstName"] == "Outage"
        guard = guard_of(app)
        assert guard.unfinished, "the failed invalidations are recorded"
        redis_server.start()  # with the entry from before the write (persisted)
        seen = await gql(writer, READ, email=email)
        assert seen["data"]["customer"]["firstName"] == "Outage"
        # The writer replays what it owes on its own, without traffic.
        await asyncio.wait_for(guard.recovered(), 5)
        assert not guard.unfinished
        other = await gql(reader, READ, email=email)
    assert other["data"]["customer"]["firstName"] == "Outage"


async def test_rate_limits_hold_while_redis_is_down(
    samples: SampleUpstreams, seeded_url: str, redis_server: RedisServer
) -> None:
    async with serving(samples, seeded_url, redis_server.url) as (app, client):
        key = await issue_key(app, rate_limit=5)
        redis_server.stop()
        statuses = [
            (await client.post("/graphql", json={"query": "{ __typename }"}, headers=bearer(key)))
            for _ in range(8)
        ]
    codes = [r.status_code for r in statuses]
    assert codes.count(200) == 5, codes
    assert codes[5:] == [429, 429, 429]
    assert all(r.headers.get("retry-after") for r in statuses[5:])


async def test_persisted_queries_without_redis_are_served_or_not_found_cleanly(
    samples: SampleUpstreams, seeded_url: str, redis_server: RedisServer
) -> None:
    query = "{ __typename }"
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest_of(query)}}
    async with (
        serving(samples, seeded_url, redis_server.url) as (_, one),
        serving(samples, seeded_url, redis_server.url) as (_, two),
    ):
        registered = await one.post("/graphql", json={"query": query, "extensions": extensions})
        redis_server.stop()
        again = await one.post("/graphql", json={"extensions": extensions})  # its own store
        elsewhere = await two.post("/graphql", json={"extensions": extensions})
        resent = await two.post("/graphql", json={"query": query, "extensions": extensions})
    assert registered.json() == again.json() == {"data": {"__typename": "Query"}}
    assert elsewhere.status_code == 400  # as for any hash it does not know: send the document
    assert elsewhere.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert resent.json() == {"data": {"__typename": "Query"}}


async def test_notifications_resume_when_redis_returns(redis_server: RedisServer) -> None:
    settings = load_settings(cache_url=redis_server.url, **REDIS_SETTINGS)
    guard = open_redis(settings)
    assert guard is not None
    notifications = build_notifications(guard, settings)
    change = CustomerChange(
        customer_id=uuid.uuid4(),
        source="test",
        event_type="updated",
        event_id="e1",
        fields=("email",),
        occurred_at=datetime.now(UTC),
    )
    try:
        async with notifications.subscribe(change.customer_id) as changes:
            redis_server.restart()
            received = None
            deadline = time.monotonic() + 10
            while received is None and time.monotonic() < deadline:
                await notifications.publish(change)  # lost until the listener is back
                with suppress(TimeoutError):
                    received = await asyncio.wait_for(anext(changes), 0.2)
        assert received == change
    finally:
        await notifications.aclose()
        await guard.aclose()


async def test_the_notification_listener_notices_a_silent_redis_and_resumes(
    redis_server: RedisServer,
) -> None:
    """A Redis lost from the network answers nothing and closes nothing (SIGSTOP here):
    the listener takes its silent connection as lost within seconds, not hours, and
    delivers again once Redis answers."""
    settings = load_settings(
        cache_url=redis_server.url, redis_health_check_interval_s=1, **REDIS_SETTINGS
    )
    guard = open_redis(settings)
    assert guard is not None
    notifications = build_notifications(guard, settings)
    lost = asyncio.Event()

    class Lost(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("notification channel lost"):
                lost.set()

    watcher = Lost()
    logging.getLogger("gateway.notifications").addHandler(watcher)
    change = CustomerChange(
        customer_id=uuid.uuid4(),
        source="test",
        event_type="updated",
        event_id="e2",
        fields=("email",),
        occurred_at=datetime.now(UTC),
    )
    try:
        async with notifications.subscribe(change.customer_id) as changes:
            redis_server.freeze()
            await asyncio.wait_for(lost.wait(), 8)  # 2 pings of 1 s unanswered, and a bit
            redis_server.thaw()
            # One pending read throughout: cancelling it would end the iterator.
            reading = asyncio.ensure_future(anext(changes))
            deadline = time.monotonic() + 10
            while not reading.done() and time.monotonic() < deadline:
                await notifications.publish(change)  # lost until the listener is back
                await asyncio.wait({reading}, timeout=0.2)
            assert reading.done()
            received = reading.result()
        assert received == change
    finally:
        logging.getLogger("gateway.notifications").removeHandler(watcher)
        redis_server.thaw()
        await notifications.aclose()
        await guard.aclose()


async def test_the_redis_client_is_configured_to_survive_restarts(
    redis_server: RedisServer,
) -> None:
    guard = open_redis(load_settings(cache_url=redis_server.url))
    assert guard is not None
    try:
        kwargs = guard.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.25
        assert kwargs["socket_connect_timeout"] == 0.25
        assert kwargs["health_check_interval"] > 0
        connection = guard.client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        assert connection.retry._retries >= 1
        assert isinstance(guard.client, aioredis.Redis)
    finally:
        await guard.aclose()

"""The guard in front of Redis: a frozen or stopped server is a miss, its circuit opens
after a few failures (then costs nothing), a probe closes it, and invalidations that
could not be made are owed, read as misses and made when Redis answers again."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from adapters.transport.breaker import BreakerState, CircuitBreaker
from gateway.upstreams.cache import Entry, UpstreamCache, build_cache
from gateway.upstreams.redis_client import RedisGuard, open_client
from gateway.upstreams.response_cache import ResponseCache, Ticket, id_tag
from tests.faults.redis_server import RedisServer


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state read afresh: mypy would carry an earlier assert's narrowing past the
    clock moving (the property changes with time, not with assignments)."""
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def guard(server: RedisServer, clock: Clock) -> AsyncIterator[RedisGuard]:
    client = open_client(server.url, timeout_s=0.1, retries=1, health_check_interval_s=5)
    guarded = RedisGuard(
        client, timeout_s=0.2, failure_threshold=3, reset_timeout_s=5.0, clock=clock
    )
    yield guarded
    await guarded.aclose()


async def test_a_frozen_redis_costs_three_timeouts_then_nothing(
    server: RedisServer, guard: RedisGuard, clock: Clock
) -> None:
    cache = build_cache(server.url, guard)
    assert await cache.set("k", "v") is True
    server.freeze()
    try:
        started = time.perf_counter()
        misses = [await cache.get("k") for _ in range(3)]
        timed_out = time.perf_counter() - started
        assert misses == [None, None, None]
        assert state(guard.breaker) is BreakerState.OPEN
        started = time.perf_counter()
        assert [await cache.get("k") for _ in range(100)] == [None] * 100
        assert time.perf_counter() - started < 0.05  # the open circuit asks nobody
        assert timed_out < 3 * 0.2 + 0.3
    finally:
        server.thaw()
    clock.now += 5  # cooled down: the next call is the probe, and it succeeds
    assert await cache.get("k") == "v"
    assert state(guard.breaker) is BreakerState.CLOSED


async def test_a_reads_overtaken_write_checks_never_wait_as_the_probe(
    server: RedisServer, guard: RedisGuard, clock: Clock
) -> None:
    """The counter a read takes before it and the tags it checks after are optional:
    while the circuit is not closed they are skipped (the read caches nothing), never
    made as the half-open probe, which a frozen Redis holds for the whole timeout. Else a
    read that took the probe for each of them waited a timeout for each (over a second
    for a profile read under load, in test_redis_outage)."""
    cache, responses = build_cache(server.url, guard), ResponseCache(guard)
    assert await responses.ticket() is not None
    server.freeze()
    try:
        for _ in range(3):  # open the circuit
            assert await cache.get("k") is None
        failures = guard.failures
        clock.now += 5  # cooled down: the next call is the probe
        assert await responses.ticket() is None  # unknown: nothing is cached
        assert await responses.touched_since(Ticket("", 0), ["i:a"]) == {"i:a"}  # all
        assert guard.failures == failures  # neither waited on the frozen Redis
        assert await cache.get("k") is None  # a read's lookup is the probe
        assert guard.failures == failures + 1
    finally:
        server.thaw()


async def test_an_upstream_answer_fetched_without_a_ticket_is_not_cached(
    server: RedisServer, guard: RedisGuard
) -> None:
    """Shared through Redis, a fetch whose ticket was unknown (Redis not answering, or an
    invalidation still owed) could not tell a write elsewhere meanwhile: as profiles, it
    is not cached (it was, and then served stale for its TTL had such a write come)."""
    upstream = UpstreamCache(build_cache(server.url, guard))
    entry = Entry(None, datetime.now(UTC))  # a record the upstream does not have
    await upstream.keep_fetched("crm", {"c1": entry}, 60, None)
    assert await upstream.get_many("crm", ["c1"]) == {}
    await upstream.keep_fetched("crm", {"c1": entry}, 60, await upstream.ticket(60))
    assert list(await upstream.get_many("crm", ["c1"])) == ["c1"]


async def test_a_fetch_kept_for_no_time_costs_no_overtaken_check(
    server: RedisServer, guard: RedisGuard
) -> None:
    """An upstream cached for 0 s (``ttl_s: 0``) keeps nothing, so there is nothing a
    write could overtake: no GET of the counter before its fetch, no MGET of the tags
    after (two round trips per fetch, for nothing, on the uncached path)."""
    upstream = UpstreamCache(build_cache(server.url, guard))
    admin = aioredis.from_url(server.url)
    try:
        await admin.config_resetstat()
        ticket = await upstream.ticket(0)
        entry = Entry(None, datetime.now(UTC))
        await upstream.keep_fetched("crm", {"c1": entry}, 0, ticket)
        stats = await admin.info("commandstats")
    finally:
        await admin.aclose()
    admin_calls = ("cmdstat_config", "cmdstat_info")
    assert [name for name in stats if not name.startswith(admin_calls)] == [], stats


async def test_invalidations_during_an_outage_are_owed_then_made(
    server: RedisServer, guard: RedisGuard, clock: Clock
) -> None:
    cache = build_cache(server.url, guard)
    await cache.set("profile", "old")
    server.freeze()  # the entry stays in Redis, but Redis does not answer
    try:
        assert await cache.delete("profile") == 0
        assert guard.owed("gw:profile")
    finally:
        server.thaw()
    # Redis answers again but the circuit is still open: the entry is not served here.
    assert await cache.get("profile") is None
    assert await cache.multi_get(["profile"]) == [None]
    clock.now += 5  # cooled down: a request's call is the probe, and the debt is paid
    assert await cache.get("other") is None
    await guard.recovered()
    assert not guard.unfinished
    raw = aioredis.from_url(server.url)
    try:
        assert await raw.exists("gw:profile") == 0  # dropped for every instance
    finally:
        await raw.aclose()


async def test_a_stopped_redis_is_reported_once_per_interval(
    server: RedisServer, guard: RedisGuard, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = build_cache(server.url, guard)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="gateway.redis"):
        for _ in range(3):  # open the circuit
            assert await cache.get("k") is None
        for _ in range(3):  # each probe fails
            clock.now += 5
            assert await cache.multi_get(["a", "b"]) == [None, None]
    warnings = [r for r in caplog.records if r.name == "gateway.redis"]
    assert len(warnings) == 2  # at the start, then once 10 s had passed
    assert guard.failures == 6


async def test_a_replay_redis_refuses_backs_off_instead_of_spinning(server: RedisServer) -> None:
    """Found in review: a DEL answered READONLY (a master demoted by a failover) left the
    circuit closed and the replay loop retried at once, 6,267 DELs a second."""
    client = open_client(server.url, timeout_s=0.1, retries=1, health_check_interval_s=5)
    guard = RedisGuard(client, timeout_s=0.2, failure_threshold=3, reset_timeout_s=0.1)
    admin = aioredis.from_url(server.url)
    try:
        await admin.set("owed", "stale")
        await admin.replicaof("127.0.0.1", "1")  # read-only, no master
        await admin.config_resetstat()
        guard._owe(["owed"])
        await asyncio.sleep(1.0)  # a real second: the count of DELs in it is the check
        stats = await admin.info("commandstats")
        tried = stats.get("cmdstat_del", {})  # READONLY answers count as rejected calls
        deletes = sum(int(tried.get(n, 0)) for n in ("calls", "rejected_calls"))
        assert 1 <= deletes <= 5, deletes
        assert guard.owed("owed")  # still read as a miss in this process
        await admin.replicaof("NO", "ONE")
        async with asyncio.timeout(10):
            await guard.recovered()
        assert not guard.owed("owed")
        assert await admin.get("owed") is None
    finally:
        await admin.aclose()
        await guard.aclose()


async def test_a_fetch_across_a_redis_restart_and_a_write_is_not_cached_stale(
    server: RedisServer,
) -> None:
    """A fetch's ticket taken before Redis restarted (losing the counter and every tag,
    as a Redis that keeps nothing on disk does) and a write to its customer on another
    instance after: the counter starts again below the ticket's, so the write's tag
    looked older than the fetch, and the answer fetched before the write was cached
    after it and served stale for its TTL. The ticket carries Redis's epoch now: one
    that changed says every tag may have been touched."""
    guards = [
        RedisGuard(
            open_client(server.url, timeout_s=0.5, retries=1, health_check_interval_s=5),
            timeout_s=1.0,
        )
        for _ in range(2)
    ]
    reader, writer = (UpstreamCache(build_cache(server.url, g)) for g in guards)
    try:
        for _ in range(5):  # writes before: the counter stands at 5
            await writer.invalidate_many([uuid.uuid4()], ["crm"])
        customer = uuid.uuid4()
        ticket = await reader.ticket(60)
        assert ticket is not None
        server.restart()
        for _ in range(3):  # each instance notices the restart (a dropped connection)
            await writer.get_many("crm", [customer])
            await reader.get_many("crm", [customer])
        await writer.invalidate_many([customer], ["crm"])  # the write, counter 1
        assert not any(g.owed("gw:rc:v1:epoch") for g in guards)
        fetched = Entry("before the write", datetime.now(UTC))
        await reader.keep_fetched("crm", {customer: fetched}, 60, ticket)
        assert await reader.get_many("crm", [customer]) == {}
        assert await reader.responses.touched_since(ticket, [id_tag(customer)]) == {
            id_tag(customer)
        }
        # A ticket taken after the restart still tells an untouched customer apart.
        fresh = await reader.ticket(60)
        other = uuid.uuid4()
        await reader.keep_fetched("crm", {other: fetched}, 60, fresh)
        assert list(await reader.get_many("crm", [other])) == [other]
    finally:
        for guard in guards:
            await guard.aclose()

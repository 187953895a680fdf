"""Which keys a process still accepts while the database is unreachable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

import pytest

from gateway.access.api_key_grace import OutageGrace
from gateway.access.api_keys import ApiKeys, Principal, Scope
from gateway.errors import DatabaseUnavailable
from tests.fake_clock import FakeClock

READER = Principal("k1", "reader", frozenset({Scope.PROFILES_READ}), None)


async def _all_active(hashes: Collection[str]) -> set[str]:
    return set(hashes)


async def test_a_key_verified_within_the_grace_period_is_accepted_and_not_after() -> None:
    grace = OutageGrace(300, 1, _all_active)
    grace.verified("h1", READER, started=1000.0)
    assert grace.during_outage("h1", now=1299.0) == READER
    with pytest.raises(DatabaseUnavailable):
        grace.during_outage("h1", now=1301.0)
    await grace.aclose()


async def test_a_key_never_verified_is_unavailable_and_one_known_revoked_refused() -> None:
    grace = OutageGrace(300, 1, _all_active)
    with pytest.raises(DatabaseUnavailable):
        grace.during_outage("never", now=0.0)
    grace.verified("h1", READER, started=10.0)
    grace.verified("h1", None, started=11.0)  # read again: no longer stored as active
    assert grace.refuses("h1")
    assert grace.during_outage("h1", now=12.0) is None
    grace.verified("h2", READER, started=10.0)
    grace.revoked_key(lambda principal: principal.key_id == "k1")  # revoked here, by id
    assert grace.during_outage("h2", now=12.0) is None
    await grace.aclose()


async def test_no_grace_refuses_every_key_during_an_outage() -> None:
    grace = OutageGrace(0, 1, _all_active)
    grace.verified("h1", READER, started=10.0)
    with pytest.raises(DatabaseUnavailable):
        grace.during_outage("h1", now=10.5)
    await grace.aclose()


@pytest.fixture
def migrated_postgres(postgres_url: str) -> str:
    from gateway.db.migrate import upgrade

    upgrade(postgres_url)  # runs its own event loop: a sync fixture, outside the test's
    return postgres_url


@pytest.mark.postgres
async def test_during_an_outage_a_held_key_is_answered_at_once_not_after_each_timeout(
    migrated_postgres: str,
) -> None:
    """Found in review: each time a key's cache entry lapsed during an outage, the next
    requests waited out the connect timeout (2 s) before the grace period answered."""
    from gateway.db.engine import create_engine, create_sessionmaker
    from tests.observability.test_readiness import Proxy

    postgres_url = migrated_postgres
    host, port = postgres_url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
    proxy = Proxy((host, int(port)))
    await proxy.start()
    engine = create_engine(
        postgres_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}"), connect_timeout_s=1.0
    )
    clock = FakeClock()
    keys = ApiKeys(create_sessionmaker(engine), cache_ttl_s=0.05, outage_grace_s=300, clock=clock)
    try:
        secret, _ = await keys.create(f"grace-{time.monotonic_ns()}", {Scope.PROFILES_READ})
        assert await keys.authenticate(secret) is not None
        await engine.dispose()  # no pooled connection: each read opens one, and waits
        proxy.freeze()  # a black hole: connections accepted, never answered
        clock.advance(0.06)  # the entry lapses: the next read finds the outage
        first = await keys.authenticate(secret)  # learns of it: waits out the timeout
        assert first is not None
        waits = []
        for _ in range(20):
            clock.advance(0.06)  # the cached entry lapses each time
            started = time.perf_counter()
            assert await keys.authenticate(secret) == first
            waits.append(time.perf_counter() - started)
        assert max(waits) < 0.2, waits
    finally:
        await keys.aclose()
        await engine.dispose()
        await proxy.stop()
        # A real wait, for the fault helper: the proxy's held connections end (they have
        # no event to wait on) before the loop does.
        await asyncio.sleep(0.2)

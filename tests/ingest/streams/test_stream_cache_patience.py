"""A `gateway consume` process's after-commit work on a Redis that answers late: on a
loaded machine its bulk invalidations, held to a request's half second, timed out a
few in a row and opened Redis's circuit (notifications lost, every stored answer
dropped). Here a `redis-server` of the test's own is frozen (SIGSTOP) for longer than
that half second, while a batch's customers are invalidated and notified."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from adapters.transport.breaker import BreakerState
from demo.wiring import example_upstreams, sample_upstreams_config
from gateway.db.migrate import upgrade
from gateway.ingest.streams.customer_updates import CustomerUpdates
from gateway.ingest.streams.event_batches import CustomerTouch
from gateway.ingest.streams.running import ConsumerParts
from gateway.settings import load_settings
from gateway.upstreams.cache import Entry
from tests.faults.redis_server import RedisServer

ANALYTICS = "segment"  # the sample analytics upstream's namespace
FROZEN_S = 0.7  # longer than GATEWAY_REDIS_OP_TIMEOUT_S (0.5 s), shorter than the consumer's


@pytest.fixture(scope="module")
def migrated(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


async def test_a_late_redis_keeps_the_batch_invalidations_and_the_circuit_closed(
    migrated: str,
) -> None:
    upstreams = sample_upstreams_config(
        dict.fromkeys(example_upstreams()["upstreams"], "http://127.0.0.1:9")
    )
    with RedisServer() as server:
        parts = ConsumerParts.open(
            load_settings(database_url=migrated, cache_url=server.url), upstreams
        )
        assert parts.redis is not None
        try:
            customer = uuid.uuid4()
            entry = Entry(value=None, fetched_at=datetime.now(UTC))
            await parts.cache.set_many(ANALYTICS, {customer: entry}, 300)
            updates = CustomerUpdates(parts.federation, parts.customers, parts.notifications)
            touch = CustomerTouch(
                fields={"recent_events", "engagement"},
                event_type="track:Product Viewed",
                event_id="late-redis-1",
                occurred_at=datetime.now(UTC),
            )
            async with parts.notifications.subscribe(customer) as changes:
                server.freeze()
                asyncio.get_running_loop().call_later(FROZEN_S, server.thaw)
                await updates({customer: touch})
                change = await asyncio.wait_for(anext(changes), 10)
            assert change.event_id == "late-redis-1"
            assert await parts.cache.get_many(ANALYTICS, [customer]) == {}
            # Waited for, not counted as Redis failing: nothing owed, the circuit closed.
            assert parts.redis.failures == 0
            assert not parts.redis.unfinished
            assert parts.redis.breaker.state is BreakerState.CLOSED
        finally:
            await parts.aclose()

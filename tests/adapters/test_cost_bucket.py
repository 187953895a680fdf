"""The local cost bucket (the shop's points when no Redis shares them)."""

from __future__ import annotations

import pytest

from adapters.errors import UpstreamRateLimited
from adapters.transport.cost_bucket import CostBucket


async def test_a_call_whose_deadline_has_passed_is_refused_even_with_points_to_spare() -> None:
    bucket = CostBucket("shop", 1000, 50, clock=lambda: 0.0)
    with pytest.raises(UpstreamRateLimited):
        await bucket.take(10, budget_s=-1.0)
    # Nothing was taken by the refusal: 980 and the margin (0.25 s of restore, 12.5
    # points) fit in 1,000, not in 990.
    assert await bucket.take(980, budget_s=0.0) == 0.0


async def test_points_taken_are_reserved_for_later_callers() -> None:
    bucket = CostBucket("shop", 1000, 100, clock=lambda: 0.0)
    await bucket.take(500, budget_s=0.0)
    with pytest.raises(UpstreamRateLimited):
        await bucket.take(600, budget_s=0.01)  # 500 left: needs over a second of restore


async def test_with_redis_down_the_bucket_paces_locally_behind_the_breaker() -> None:
    import redis.asyncio as aioredis

    from gateway.upstreams.redis_client import RedisGuard

    client = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    guard = RedisGuard(client, timeout_s=0.3, failure_threshold=2, reset_timeout_s=60)
    bucket = CostBucket("shop", 1000, 100, redis=guard)
    try:
        for _ in range(10):
            await bucket.take(50, budget_s=1.0)
            await bucket.settle(0, None)
    finally:
        await client.aclose()
    # Two failed tries open the circuit: the other 18 steps never wait on Redis, and the
    # local model still reserved every point (500 of 1,000 taken).
    assert guard.failures == 2
    with pytest.raises(UpstreamRateLimited):
        await bucket.take(600, budget_s=0.01)


async def test_a_query_in_flight_is_not_restored_into_the_bucket() -> None:
    """The shop charges a query when it arrives: until its answer is read, the bucket
    may be full there and drop by the query's cost on arrival, so the model restores no
    further than the maximum less what is in flight (else a delayed query let the next
    one meet THROTTLED)."""
    now = 0.0
    bucket = CostBucket("shop", 1000, 100, clock=lambda: now)
    await bucket.take(600, budget_s=0.0, token="a")
    now = 10.0  # ten seconds of restore, while "a" is still in flight
    with pytest.raises(UpstreamRateLimited):
        await bucket.take(500, budget_s=0.0)
    await bucket.settle(0.0, None, token="a")
    now = 11.0
    assert await bucket.take(400, budget_s=0.0) == 0.0


async def test_a_query_cancelled_while_waiting_for_points_gives_them_back() -> None:
    """A caller cancelled during its wait (a client gone, a resolver's timeout) sent
    nothing: its reservation must not stay 'in flight' and shrink the bucket for good."""
    import asyncio

    now = 0.0
    bucket = CostBucket("shop", 1000, 100, clock=lambda: now)
    await bucket.take(900, budget_s=0.0, token="a")
    await bucket.settle(0.0, None, token="a")
    waiting = asyncio.create_task(bucket.take(900, budget_s=60.0, token="b"))  # ~8 s
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    now = 100.0  # the bucket has long restored
    assert await bucket.take(900, budget_s=0.0) == 0.0

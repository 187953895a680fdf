"""Per-key rate limits: in process, and shared by two instances through a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import REGISTRY

from gateway.rate_limit import RateLimiter, rate_limited_response, retry_after_seconds
from tests.conftest import clean_redis, redis_url

REDIS_URL = redis_url(14)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


def _refusals(name: str) -> float:
    return REGISTRY.get_sample_value("gateway_rate_limited_total", {"key": name}) or 0.0


async def _hits(limiter: RateLimiter, key: str, per_minute: int, times: int) -> list[float | None]:
    return [await limiter.acquire(key, per_minute) for _ in range(times)]


async def test_in_memory_a_key_gets_its_limit_then_a_retry_time() -> None:
    limiter = RateLimiter("memory://")
    key = f"key-{uuid.uuid4().hex}"
    try:
        assert await _hits(limiter, key, 3, 3) == [None, None, None]
        retry = await limiter.acquire(key, 3)
        assert retry is not None and 0 < retry <= 60
        # Another key has its own budget.
        assert await limiter.acquire(f"{key}-other", 3) is None
    finally:
        await limiter.aclose()


async def test_in_memory_instances_do_not_share() -> None:
    first, second = RateLimiter("memory://"), RateLimiter("memory://")
    key = f"key-{uuid.uuid4().hex}"
    try:
        await _hits(first, key, 2, 2)
        assert await first.acquire(key, 2) is not None
        assert await second.acquire(key, 2) is None
    finally:
        await first.aclose()
        await second.aclose()


async def test_instances_sharing_redis_share_the_limit(redis_url: str) -> None:
    first, second = RateLimiter(redis_url), RateLimiter(redis_url)
    key = f"key-{uuid.uuid4().hex}"
    try:
        assert await _hits(first, key, 5, 3) == [None, None, None]
        # The second instance sees the first's three hits: two left, then refused.
        assert await _hits(second, key, 5, 2) == [None, None]
        retry = await second.acquire(key, 5)
        assert retry is not None and 0 < retry <= 60
        assert await first.acquire(key, 5) is not None
        assert await first.acquire(f"{key}-other", 5) is None
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize("cache", ["memory", "redis"])
async def test_leased_counting_never_admits_more_than_the_limit(cache: str, redis_url: str) -> None:
    # 1,000 a minute: requests are counted up to ten at a time. Two instances on one Redis
    # (or one in memory) asking 1,200 times between them get at most the limit, and
    # lose at most a lease per instance to tokens left unspent.
    url = redis_url if cache == "redis" else "memory://"
    instances = [RateLimiter(url), RateLimiter(url)] if cache == "redis" else [RateLimiter(url)]
    key = f"key-{uuid.uuid4().hex}"
    try:
        admitted = 0
        for turn in range(1200):
            if await instances[turn % len(instances)].acquire(key, 1000) is None:
                admitted += 1
        assert 1000 - 10 * len(instances) < admitted <= 1000
        # Refused on every instance from then on.
        assert all([await i.acquire(key, 1000) is not None for i in instances])
    finally:
        for limiter in instances:
            await limiter.aclose()


async def test_concurrent_requests_finding_the_lease_spent_take_one_lease(redis_url: str) -> None:
    limiter, other = RateLimiter(redis_url), RateLimiter(redis_url)
    key = f"key-{uuid.uuid4().hex}"
    try:
        # 6,000 a minute: a steady run grows this instance's lease to its most, 60.
        assert await _hits(limiter, key, 6000, 300) == [None] * 300
        # 50 requests at once finding it spent take one lease between them, not 50.
        answers = await asyncio.gather(*(limiter.acquire(key, 6000) for _ in range(50)))
        assert answers == [None] * 50
        # So another instance still gets the rest of the minute's budget, less at
        # most two leases left unspent.
        admitted = [await other.acquire(key, 6000) for _ in range(6000)].count(None)
        assert 6000 - 2 * 60 <= 350 + admitted <= 6000
    finally:
        await limiter.aclose()
        await other.aclose()


async def test_a_slow_key_on_many_instances_loses_nothing_to_unspent_leases(
    redis_url: str,
) -> None:
    # 1,000 a minute used at 2 a second over three instances: each instance's lease
    # shrinks to what it uses, so a burst later still gets (nearly) the whole budget.
    instances = [RateLimiter(redis_url) for _ in range(3)]
    key = f"key-{uuid.uuid4().hex}"
    try:
        for turn in range(12):
            assert await instances[turn % 3].acquire(key, 1000) is None
            await asyncio.sleep(0.25)
        burst = [await instances[0].acquire(key, 1000) for _ in range(1000)]
        assert burst.count(None) >= 1000 - 12 - 3 * 2
    finally:
        for limiter in instances:
            await limiter.aclose()


async def test_refusals_are_counted_by_key_name(redis_url: str) -> None:
    limiter = RateLimiter(redis_url)
    name = f"esp-{uuid.uuid4().hex[:8]}"
    try:
        assert await limiter.acquire("key-id-1", 1, name=name) is None
        assert _refusals(name) == 0
        assert await limiter.acquire("key-id-1", 1, name=name) is not None
        assert await limiter.acquire("key-id-1", 1, name=name) is not None
        assert _refusals(name) == 2
    finally:
        await limiter.aclose()


async def test_an_unreachable_redis_lets_requests_through() -> None:
    # Nothing listens on port 1: the limit cannot be kept, the API stays up.
    limiter = RateLimiter("redis://127.0.0.1:1/0")
    try:
        assert await limiter.acquire("key", 1) is None
        assert await limiter.acquire("key", 1) is None
    finally:
        await limiter.aclose()


@pytest.mark.parametrize(("retry", "header"), [(0.001, "1"), (1.0, "1"), (1.2, "2"), (59.9, "60")])
def test_the_429_answer_says_when_to_retry_in_whole_seconds(retry: float, header: str) -> None:
    response = rate_limited_response(retry)
    assert response.status_code == 429
    assert response.headers["retry-after"] == header
    assert response.headers["content-type"] == "application/json"
    assert orjson.loads(response.body) == {
        "errors": [
            {
                "message": f"Rate limit exceeded; retry in {header} s",
                "extensions": {"code": "RATE_LIMITED", "retryAfter": int(header)},
            }
        ]
    }
    assert retry_after_seconds(retry) == int(header)

"""Per-key rate limits: in process, and shared by two instances through a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import REGISTRY

from gateway.rate_limit import RateLimiter, rate_limited_response, retry_after_seconds
from tests.conftest import clean_redis

REDIS_URL = "redis://127.0.0.1:6379/14"


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
    # 1,000 a minute: requests are counted ten at a time. Two instances on one Redis
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
    limiter = RateLimiter(redis_url)
    key = f"key-{uuid.uuid4().hex}"
    try:
        # 6,000 a minute: leases of 60. 50 requests at once fit in the first lease, so
        # the counter holds 60, not 50 leases (3,000).
        answers = await asyncio.gather(*(limiter.acquire(key, 6000) for _ in range(50)))
        assert answers == [None] * 50
        assert await _hits(limiter, key, 6000, 10) == [None] * 10  # the lease's last ten
        # 5,940 left in the shared window: a second instance can still take 99 leases.
        other = RateLimiter(redis_url)
        try:
            assert await _hits(other, key, 6000, 5940) == [None] * 5940
            assert await other.acquire(key, 6000) is not None
        finally:
            await other.aclose()
    finally:
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

"""Per-key rate limits: in process, and shared by two instances through a real Redis."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from gateway.access.rate_limit import RateLimiter, retry_after_seconds
from resolvers.http.authentication import rate_limited_response
from tests.conftest import bearer, clean_redis, issue_key, redis_database_url
from tests.in_process import asgi

REDIS_URL = redis_database_url(14)


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
        assert retry is not None
        assert 0 < retry <= 60
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
        assert retry is not None
        assert 0 < retry <= 60
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
            await asyncio.sleep(0.25)  # real time: the window is Redis's, not ours
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


async def test_an_unreachable_redis_limits_in_process() -> None:
    # Nothing listens on port 1: the API stays up, and the key is limited by this
    # process's own count instead of not at all.
    limiter = RateLimiter("redis://127.0.0.1:1/0")
    try:
        assert await limiter.acquire("key", 2) is None
        assert await limiter.acquire("key", 2) is None
        retry = await limiter.acquire("key", 2)
        assert retry is not None
        assert 0 < retry <= 60
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


@pytest.mark.parametrize("cache", ["memory", "redis"])
async def test_requests_counting_as_several_never_pass_the_limit_and_share_leases(
    cache: str, redis_url: str
) -> None:
    # 6,000 a minute; operations count as 1 to 8 requests by their cost, from two
    # instances at once. While the budget lasts, Redis is asked once per lease, not
    # once per request; in all, at most the limit is admitted, less at most a lease per
    # instance left unspent.
    url = redis_url if cache == "redis" else "memory://"
    instances = [RateLimiter(url), RateLimiter(url)] if cache == "redis" else [RateLimiter(url)]
    key = f"key-{uuid.uuid4().hex}"
    costs = random.Random(16).choices(range(1, 9), k=2000)
    calls_before = await _script_calls(redis_url)
    try:
        admitted = 0
        for start in range(0, len(costs), 20):
            # About 4,500 requests' worth so far: within the budget.
            if start == 1000 and cache == "redis":
                assert await _script_calls(redis_url) - calls_before < 1000 / 5
            chunk = costs[start : start + 20]
            answers = await asyncio.gather(
                *(
                    instances[i % len(instances)].acquire(key, 6000, cost=c)
                    for i, c in enumerate(chunk)
                )
            )
            admitted += sum(c for c, answer in zip(chunk, answers, strict=True) if answer is None)
        assert 6000 - 60 * len(instances) - 8 <= admitted <= 6000
    finally:
        for limiter in instances:
            await limiter.aclose()


async def _script_calls(url: str) -> int:
    client = aioredis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(v["calls"] for k, v in stats.items() if k in {"cmdstat_evalsha", "cmdstat_eval"})


BATCH = "query($ids: [ID!]) { customers(ids: $ids) { id } }"


async def test_a_key_is_charged_by_what_its_operations_cost(app: Starlette) -> None:
    # 305 requests a minute; a batch of 1,000 ids costs 1,000: it counts as ten. The
    # 31st is let in as a request (301), then refused for what it costs (310).
    key = await issue_key(app, rate_limit=305)
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    transport = asgi(app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gw", headers=bearer(key)
    ) as client:
        answers = [
            await client.post("/graphql", json={"query": BATCH, "variables": {"ids": ids}})
            for _ in range(31)
        ]
    assert [a.status_code for a in answers[:30]] == [200] * 30
    refused = answers[30]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    (error,) = refused.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["requests"] == 10
    assert "data" not in refused.json()


async def test_an_operation_costing_more_than_a_minute_of_the_key_is_refused(
    app: Starlette,
) -> None:
    key = await issue_key(app, rate_limit=250)
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    query = "query($ids: [ID!]) { customers(ids: $ids) { id orders(first: 30) { id } } }"
    transport = asgi(app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gw", headers=bearer(key)
    ) as client:
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": {"ids": ids}},
            headers={"Accept": "application/graphql-response+json"},  # request errors: 4xx
        )
        cheap = await client.post("/graphql", json={"query": "{ __typename }"})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 31_000, "requests": 310}
    assert cheap.status_code == 200

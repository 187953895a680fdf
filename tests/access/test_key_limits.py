"""Per-key rate limits: 429 with Retry-After past the limit, shared by instances on one
Redis, per instance in memory, and the gateway default for keys without their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from tests.access.instances import (
    PING,
    anonymous,
    running,
)
from tests.conftest import (
    bearer,
    clean_redis,
    issue_key,
    redis_database_url,
)

REDIS_URL = redis_database_url(15)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"


async def test_a_key_over_its_limit_gets_429_with_retry_after(app: Starlette) -> None:
    limited = await issue_key(app, Scope.PROFILES_READ, rate_limit=3)
    other = await issue_key(app, Scope.PROFILES_READ, rate_limit=3)
    async with anonymous(app, bearer(limited)) as http:
        for _ in range(3):
            assert (await http.post("/graphql", json=PING)).status_code == 200
        _assert_rate_limited(await http.post("/graphql", json=PING))
        # Another key has its own budget; an open path is not limited.
        assert (await http.post("/graphql", json=PING, headers=bearer(other))).status_code == 200
        assert (await http.get("/healthz")).status_code == 200


async def test_two_instances_on_one_redis_share_a_keys_limit(
    database_url: str, redis_url: str
) -> None:
    async with (
        running(database_url, redis_url) as first,
        running(database_url, redis_url) as second,
    ):
        key = await issue_key(first, Scope.PROFILES_READ, rate_limit=3)
        async with anonymous(first, bearer(key)) as one, anonymous(second, bearer(key)) as two:
            assert (await one.post("/graphql", json=PING)).status_code == 200
            assert (await one.post("/graphql", json=PING)).status_code == 200
            assert (await two.post("/graphql", json=PING)).status_code == 200
            _assert_rate_limited(await two.post("/graphql", json=PING))
            _assert_rate_limited(await one.post("/graphql", json=PING))


async def test_with_an_in_memory_cache_each_instance_limits_on_its_own(
    database_url: str,
) -> None:
    async with running(database_url) as first, running(database_url) as second:
        key = await issue_key(first, Scope.PROFILES_READ, rate_limit=2)
        async with anonymous(first, bearer(key)) as one, anonymous(second, bearer(key)) as two:
            assert [(await one.post("/graphql", json=PING)).status_code for _ in range(3)] == [
                200,
                200,
                429,
            ]
            assert (await two.post("/graphql", json=PING)).status_code == 200


async def test_a_key_without_its_own_limit_gets_the_gateway_default(database_url: str) -> None:
    async with running(database_url, rate_limit_per_minute=2) as app:
        key = await issue_key(app, Scope.PROFILES_READ, rate_limit=None)
        async with anonymous(app, bearer(key)) as http:
            codes = [(await http.post("/graphql", json=PING)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]

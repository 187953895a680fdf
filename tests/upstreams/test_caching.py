"""Caching and batching against the sample upstreams' call counters: cache hits call
nothing, batches cost one call per page, concurrent misses cost one call, failures
serve stale data, and invalidation reaches every instance sharing Redis."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy.engine import Engine

from demo.upstreams.runner import SampleUpstreams
from tests.conftest import GatewayFactory, clean_redis, recorded_statements, redis_database_url
from tests.gql_client import gql

REDIS_URL = redis_database_url(11)
PROFILE = (
    "query($email: String!) { customer(email: $email) { id lifecycleStage "
    "lifetimeValue { amount } sources { upstream status ageSeconds errorCode } } }"
)
BATCH = "query($ids: [ID!]) { customers(ids: $ids) { id lifecycleStage lifetimeValue { amount } } }"


def _calls(samples: SampleUpstreams) -> dict[str, int]:
    return {
        "hubspot": samples.hubspot.calls.total,
        "shopify": samples.shopify.calls.total,
        "segment": samples.segment.calls.total,
    }


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


async def _ids(client: httpx.AsyncClient, samples: SampleUpstreams, people: range) -> list[str]:
    emails = [samples.people[i].email for i in people]
    body = await gql(client, "query($e: [String!]) { customers(emails: $e) { id } }", e=emails)
    return [c["id"] for c in body["data"]["customers"]]


async def test_a_repeated_query_is_served_from_the_cache(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    async with gateway() as client:
        email = samples.people[20].email
        first = await gql(client, PROFILE, email=email)
        calls = _calls(samples)
        second = await gql(client, PROFILE, email=email)
    assert _calls(samples) == calls  # nothing more upstream
    assert (
        second["data"]["customer"]["lifecycleStage"] == first["data"]["customer"]["lifecycleStage"]
    )
    statuses = {s["upstream"]: s["status"] for s in second["data"]["customer"]["sources"]}
    assert statuses == {"hubspot": "CACHED", "shopify": "CACHED", "segment": "SKIPPED"}


async def test_a_batch_costs_one_call_per_page(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    async with gateway() as client:
        ids = await _ids(client, samples, range(150))
        samples.reset()
        body = await gql(client, BATCH, ids=ids)
    customers = body["data"]["customers"]
    assert [c["id"] for c in customers] == ids  # in the order asked
    assert all(c["lifecycleStage"] for c in customers)
    # HubSpot batch read pages of 100; Shopify search pages of 50 emails (example config).
    assert samples.hubspot.calls.total == math.ceil(150 / 100)
    assert samples.shopify.calls.total == math.ceil(150 / 50)
    assert samples.segment.calls.total == 0


async def test_a_batch_larger_than_the_limit_is_refused(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        ids = ["00000000-0000-4000-8000-000000000000"] * 1001
        body = await gql(client, BATCH, ids=ids)
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "ids"}
    assert "1000" in body["errors"][0]["message"]


async def test_concurrent_identical_misses_make_one_call_per_upstream(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    for service in (samples.hubspot, samples.shopify, samples.segment):
        service.faults.update(latency_ms=100)  # keep the first fetch in flight while others arrive
    query = (
        "query($email: String!) { customer(email: $email) { lifecycleStage "
        "lifetimeValue { amount } engagement { sessions30d } } }"
    )
    async with gateway() as client:
        bodies = await asyncio.gather(
            *(gql(client, query, email=samples.people[30].email) for _ in range(100))
        )
    assert all("errors" not in b for b in bodies)
    assert _calls(samples) == {"hubspot": 1, "shopify": 1, "segment": 1}


async def test_a_failing_upstream_serves_its_last_good_answer_as_stale(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    # ttl 0: every read goes upstream, but the last good answer is kept for outages.
    async with gateway(overrides={"shopify": {"cache": {"ttl_s": 0}}}) as client:
        email = samples.people[40].email
        started = time.monotonic()
        good = await gql(client, PROFILE, email=email)
        samples.shopify.faults.update(error_rate=1.0, error_status=503)
        body = await gql(client, PROFILE, email=email)
        elapsed = time.monotonic() - started
    assert "errors" not in body
    customer = body["data"]["customer"]
    assert customer["lifetimeValue"] == good["data"]["customer"]["lifetimeValue"]
    shopify = next(s for s in customer["sources"] if s["upstream"] == "shopify")
    assert shopify["status"] == "STALE"
    assert shopify["errorCode"] == "UPSTREAM_UNAVAILABLE"
    # The age of the answer fetched by the first read: no older than the test itself.
    # (It is clamped at 0, so only the upper bound can catch a wrong timestamp.)
    assert 0 <= shopify["ageSeconds"] <= elapsed + 0.001


async def test_invalidate_customer_forces_a_fresh_read(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    async with gateway() as client:
        email = samples.people[50].email
        customer_id = (await gql(client, PROFILE, email=email))["data"]["customer"]["id"]
        before = _calls(samples)
        invalidated = await gql(
            client, "mutation($id: ID!) { invalidateCustomer(id: $id) }", id=customer_id
        )
        assert invalidated == {"data": {"invalidateCustomer": True}}
        await gql(client, PROFILE, email=email)
    after = _calls(samples)
    assert after["hubspot"] == before["hubspot"] + 1
    assert after["shopify"] == before["shopify"] + 1


async def test_two_instances_share_redis_entries_and_invalidations(
    gateway: GatewayFactory, samples: SampleUpstreams, redis_url: str
) -> None:
    email = samples.people[60].email
    async with gateway(redis_url) as one, gateway(redis_url) as two:
        customer_id = (await gql(one, PROFILE, email=email))["data"]["customer"]["id"]
        warmed = _calls(samples)
        cached = await gql(two, PROFILE, email=email)
        assert _calls(samples) == warmed  # the other instance's entry, read from Redis
        assert {s["status"] for s in cached["data"]["customer"]["sources"]} == {"CACHED", "SKIPPED"}

        await gql(one, "mutation($id: ID!) { invalidateCustomer(id: $id) }", id=customer_id)
        await gql(two, PROFILE, email=email)
        assert _calls(samples)["hubspot"] == warmed["hubspot"] + 1


async def test_concurrent_misses_on_two_instances_make_one_call(
    gateway: GatewayFactory, samples: SampleUpstreams, redis_url: str
) -> None:
    samples.hubspot.faults.update(latency_ms=150)
    query = "query($email: String!) { customer(email: $email) { lifecycleStage } }"
    email = samples.people[70].email
    async with gateway(redis_url) as one, gateway(redis_url) as two:
        bodies = await asyncio.gather(
            *(gql(client, query, email=email) for client in [one, two] * 25)
        )
    assert all(b["data"]["customer"]["lifecycleStage"] for b in bodies)
    assert samples.hubspot.calls.total == 1


async def test_the_send_time_profile_url_serves_json_with_cache_control(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    person = samples.people[80]
    async with gateway() as client:
        cold = await client.get(f"/api/v1/users/{person.email}/profile")
        warm = await client.get(f"/api/v1/users/hubspot:{person.hubspot_id}/profile")
        missing = await client.get("/api/v1/users/nobody@example.com/profile")
    assert cold.status_code == 200
    profile = cold.json()
    assert profile["email"] == person.email
    assert profile["first_name"] == person.first_name
    assert profile["lifecycle_stage"] == person.lifecycle_stage
    assert len(profile["lifetime_value"]["currency"]) == 3
    assert "sessions_30d" in profile["engagement"]
    # Fresh data may be reused for the upstreams' TTL (300 s in the example config).
    assert cold.headers["cache-control"].startswith("private, max-age=")
    assert 0 < int(cold.headers["cache-control"].rsplit("=", 1)[1]) <= 300
    assert warm.json()["id"] == profile["id"]
    assert {s["status"] for s in warm.json()["sources"]} == {"CACHED"}
    assert missing.status_code == 404


async def test_readiness_is_degraded_when_the_shared_cache_is_down(
    gateway: GatewayFactory,
) -> None:
    """The cache is an accelerator: without it reads go to Postgres and the upstreams."""
    async with gateway("redis://127.0.0.1:1/0") as client:  # nothing listens on port 1
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["cache"] == "down"


@pytest.mark.parametrize("cache", ["memory", "redis"])
async def test_an_empty_batch_is_an_empty_answer(gateway: GatewayFactory, cache: str) -> None:
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(clean_redis(REDIS_URL)) if cache == "redis" else None
        client = await stack.enter_async_context(gateway(cache_url=url or "memory://"))
        by_id = await gql(client, "{ customers(ids: []) { id } }")
        by_email = await gql(client, "{ customers(emails: []) { id } }")
    assert by_id == {"data": {"customers": []}}
    assert by_email == {"data": {"customers": []}}


async def test_concurrent_misses_of_different_profiles_are_read_together(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    emails = [samples.people[i].email for i in range(60, 80)]
    query = "query($email: String!) { customer(email: $email) { email firstName } }"
    async with gateway() as client:  # a new instance: its profile cache is empty
        await gql(client, "{ customers(ids: []) { id } }")  # its key is verified and kept
        with recorded_statements(Engine) as statements:
            bodies = await asyncio.gather(*(gql(client, query, email=e) for e in emails))
    assert [b["data"]["customer"]["email"] for b in bodies] == emails
    profile_reads = [s for s in statements if "FROM customers" in s and "email IN" in s]
    # One read per request before; the requests of one turn of the loop now share one.
    assert 1 <= len(profile_reads) <= 3, profile_reads


async def test_a_profile_read_near_its_expiry_is_refreshed_before_it_expires(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    email = samples.people[81].email
    query = "query($email: String!) { customer(email: $email) { email firstName } }"

    def profile_reads() -> int:
        return len([s for s in statements if "FROM customers" in s and "email IN" in s])

    async def read() -> None:
        body = await gql(client, query, email=email)
        assert body["data"]["customer"]["email"] == email

    async with gateway(profile_cache_ttl_s=2) as client:
        loop = asyncio.get_running_loop()
        with recorded_statements(Engine) as statements:
            await read()
            assert profile_reads() == 1  # a miss: cached from now on, for 2 s
            cached_by = loop.time()  # the entry was written before this
            await read()
            assert profile_reads() == 1
            # Real time: the cache (aiocache in memory, or Redis) expires entries on its own
            # timers and takes no clock; the refresh-ahead point is read against them.
            await asyncio.sleep(1.7 - (loop.time() - cached_by))
            await read()  # in its last fifth: served, and read again behind it
            for _ in range(100):
                if profile_reads() == 2:
                    break
                await asyncio.sleep(0.02)
            assert profile_reads() == 2
            await asyncio.sleep(2.3 - (loop.time() - cached_by))
            await read()  # past the first copy's 2 s: the refreshed one serves
            assert profile_reads() == 2

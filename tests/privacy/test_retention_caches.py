"""``gateway retention run --apply`` beside a running gateway on a shared Redis cache: a
customer the gateway has served (so cached) and retention then erases is not served
again, and nothing of theirs is left in Redis. The command runs as an operator runs it,
in a process of its own: only the shared cache connects it to the gateway."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import update

from demo.upstreams.runner import SampleUpstreams
from demo.wiring import DEMO_SECRETS
from gateway.db.engine import create_engine
from gateway.db.models import Consent
from tests.conftest import REPO, clean_redis, redis_database_url
from tests.privacy.instances import BEHAVIOUR, person_for

REDIS_URL = redis_database_url(15)
CENTURY_DAYS = 36500  # older than any seeded consent: the rule takes only this test's person


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


async def test_retention_drops_the_erased_customers_cached_copies_on_a_running_gateway(
    instance: Any, samples: SampleUpstreams, privacy_url: str, redis_url: str
) -> None:
    person = person_for(samples, privacy_url)
    async with instance(redis_url) as gw:
        served = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
        customer_id = served["id"]
        assert (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"] == served
        assert [k for k in await _redis_keys(redis_url) if customer_id in k]  # cached
        await _withdraw_long_ago(privacy_url, customer_id)

        code, output = await _retention_run(privacy_url, redis_url)
        assert code == 0, output
        assert "customers: 1 erased" in output, output

        by_email = await gw.gql(BEHAVIOUR, email=person.email)
        by_id = await gw.gql("query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
    assert by_email == {"data": {"customer": None}}
    assert by_id == {"data": {"customer": None}}
    keys = await _redis_keys(redis_url)
    identifiers = (customer_id, person.email, person.hubspot_id, str(person.shopify_id))
    assert not [k for k in keys if any(i in k for i in identifiers)], keys


async def _withdraw_long_ago(url: str, customer_id: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(Consent)
                .where(Consent.customer_id == uuid.UUID(customer_id))
                .values(granted=False, recorded_at=datetime.now(UTC) - timedelta(CENTURY_DAYS + 9))
            )
    finally:
        await engine.dispose()


async def _retention_run(database_url: str, cache_url: str) -> tuple[int, str]:
    """``gateway retention run --apply`` in a process of its own, configured as the
    running gateway is: its database, its cache, the example upstreams (their names
    are what the upstream cache is keyed by; the command never calls them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(DEMO_SECRETS)
    env.update(
        PYTHONPATH=str(REPO),
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_CACHE_URL=cache_url,
        GATEWAY_UPSTREAMS_FILE=str(resources.files("adapters") / "upstreams.example.toml"),
        GATEWAY_RETENTION_CONSENT_WITHDRAWN_DAYS=str(CENTURY_DAYS),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "gateway", "retention", "run", "--apply", "--no-progress"),
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    return await process.wait(), out.decode()


async def _redis_keys(url: str) -> list[str]:
    client = aioredis.from_url(url)
    try:
        return [k.decode() async for k in client.scan_iter()]
    finally:
        await client.aclose()

"""Writers outside a serving gateway drop the stored answers holding what they change,
on every instance sharing Redis: ``gateway import`` (a process of its own, as an
operator runs it) and ``gateway sync`` (through the hook its command installs)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.applications import Starlette

from adapters.registry import aclose_adapters, build_adapters
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.ingest.committed import CommittedBatches
from gateway.ingest.streams.running import ConsumerParts
from gateway.ingest.sync import sync
from gateway.settings import load_settings
from tests.conftest import FAST, REPO, api_client, clean_redis, redis_database_url, unique_email
from tests.in_process import lifespan
from tests.ingest.webhook_requests import realtime_app
from tests.resolvers.test_response_cache import PROFILE, fresh, hit, persisted_get

REDIS_URL = redis_database_url(11)


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[tuple[Starlette, str]]:
    """A running gateway on a shared Redis, and that Redis's URL."""
    async with clean_redis(REDIS_URL) as url:
        app = realtime_app(load_settings(database_url=database_url, cache_url=url))
        async with lifespan(app):
            yield app, url


async def _import(path: Path, database_url: str, cache_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(REPO), GATEWAY_DATABASE_URL=database_url, GATEWAY_CACHE_URL=cache_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "gateway", "import", str(path), "--source", "crm_export"),
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert await process.wait() == 0, out.decode()
    return out.decode()


async def test_an_import_drops_the_answers_holding_the_customers_it_changed(
    gateway: tuple[Starlette, str], database_url: str, tmp_path: Path
) -> None:
    app, cache_url = gateway
    email = unique_email("import")
    people = tmp_path / "people.csv"
    people.write_text(f"external_id,email,first_name\n1,{email},Ada\n")
    await _import(people, database_url, cache_url)
    async with api_client(app) as client:
        await persisted_get(client, PROFILE, email=email)
        assert hit(await persisted_get(client, PROFILE, email=email))
        people.write_text(f"external_id,email,first_name\n1,{email},Changed\n")
        await _import(people, database_url, cache_url)
        after = await persisted_get(client, PROFILE, email=email)
        assert not hit(after)
        assert after.json() == await fresh(client, PROFILE, email=email)
        assert after.json()["data"]["customer"]["firstName"] == "Changed"


async def test_a_sync_drops_the_answers_holding_the_customers_it_changed(
    gateway: tuple[Starlette, str], database_url: str, samples: SampleUpstreams
) -> None:
    app, cache_url = gateway
    samples.reset()
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    adapters = build_adapters(config)
    # The caches as ``gateway sync`` opens them: another process's, sharing Redis.
    settings = load_settings(database_url=database_url, cache_url=cache_url)
    parts = ConsumerParts.open(settings, config)
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    after_commit = CommittedBatches(parts.federation, parts.customers)
    hubspot = samples.hubspot
    original = hubspot.people
    try:
        await sync(sessions, adapters, ["hubspot"], after_commit=after_commit)
        person = original[7]
        async with api_client(app) as client:
            await persisted_get(client, PROFILE, email=person.email)
            assert hit(await persisted_get(client, PROFILE, email=person.email))
            touched = dataclasses.replace(
                person, first_name="Zebedee", updated_at=datetime.now(UTC) + timedelta(seconds=1)
            )
            hubspot.people = [touched if p is person else p for p in original]
            await sync(sessions, adapters, ["hubspot"], after_commit=after_commit)
            after = await persisted_get(client, PROFILE, email=person.email)
            assert not hit(after)
            assert after.json()["data"]["customer"]["firstName"] == "Zebedee"
    finally:
        hubspot.people = original
        samples.reset()
        await parts.aclose()
        await aclose_adapters(adapters)
        await engine.dispose()

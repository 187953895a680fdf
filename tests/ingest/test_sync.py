"""Incremental sync against the real sample HubSpot, on a fresh database per test."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.protocols import Adapter
from adapters.registry import aclose_adapters, build_adapters
from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Customer, Identity
from gateway.errors import InvalidInput
from gateway.ingest.sync import BEGINNING, SyncReport, load_cursor, sync
from gateway.ingest.sync_runs import sync_states
from tests.conftest import FAST, SAMPLE_SIZE, create_postgres_database, drop_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty migrated database of its own: sync writes many customers."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sync') / 'g.db'}"
        upgrade(url)
        yield url
        return
    url = create_postgres_database("gateway_sync")
    upgrade(url)
    yield url
    drop_postgres_database(url)


@pytest.fixture
async def sessions(fresh_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(fresh_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def adapters(samples: SampleUpstreams) -> AsyncIterator[dict[str, Adapter]]:
    samples.reset()
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    built = build_adapters(config)
    yield built
    await aclose_adapters(built)
    samples.reset()


async def _count(sessions: async_sessionmaker[AsyncSession], model: type) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_first_sync_links_everything_and_second_reads_nothing(
    sessions: async_sessionmaker[AsyncSession], adapters: dict[str, Adapter]
) -> None:
    seen: list[SyncReport] = []
    (first,) = await sync(sessions, adapters, ["hubspot"], seen.append)
    assert seen == [first]
    assert first.status == "ok"
    assert first.read == SAMPLE_SIZE
    assert first.created + first.linked + first.updated + first.rejected == SAMPLE_SIZE
    assert first.created > 0
    assert first.upstream_total == SAMPLE_SIZE
    assert len(first.ids) == SAMPLE_SIZE
    assert first.reconciled == "match"
    assert first.cursor_before == BEGINNING
    assert first.cursor_after is not None
    assert first.cursor_after > BEGINNING
    assert await load_cursor(sessions, "hubspot") == first.cursor_after
    assert await _count(sessions, Identity) == SAMPLE_SIZE - first.rejected
    line = first.line()
    assert line.startswith(f"hubspot: read {SAMPLE_SIZE}, created {first.created}, ")
    assert f"rejected {first.rejected}, erased 0; ids sha256:{first.checksum[:16]} " in line
    assert f"{SAMPLE_SIZE} distinct vs upstream total {SAMPLE_SIZE}: match" in line
    # Kept for operators (the console's health page): the run and its line.
    (state,) = await sync_states(sessions)
    assert (state.source, state.cursor) == ("hubspot", first.cursor_after)
    assert state.last_run is not None
    assert (state.last_run.status, state.last_run.reconciled) == ("ok", "match")
    assert state.last_run.line == line

    (second,) = await sync(sessions, adapters, ["hubspot"], None)
    assert (second.read, second.created, second.updated, second.linked) == (0, 0, 0, 0)
    assert second.upstream_total == 0
    assert second.reconciled == "match"
    assert second.cursor_after == first.cursor_after
    assert "read 0, created 0, updated 0, linked 0" in second.line()
    (state,) = await sync_states(sessions)
    assert state.last_run is not None
    assert state.last_run.line == second.line()  # the newest run


async def test_a_touched_contact_is_picked_up(
    sessions: async_sessionmaker[AsyncSession],
    adapters: dict[str, Adapter],
    samples: SampleUpstreams,
) -> None:
    (first,) = await sync(sessions, adapters, ["hubspot"], None)
    hubspot = samples.hubspot
    original = hubspot.people
    person = original[7]
    touched = dataclasses.replace(
        person, first_name="Zebedee", updated_at=datetime.now(UTC) + timedelta(seconds=1)
    )
    # Search reads the sample's people list: swapping in a changed copy is a CRM edit.
    hubspot.people = [touched if p is person else p for p in original]
    try:
        (second,) = await sync(sessions, adapters, ["hubspot"], None)
    finally:
        hubspot.people = original
    assert (second.read, second.updated, second.created) == (1, 1, 0)
    assert second.ids == {person.hubspot_id}
    assert second.upstream_total == 1
    assert second.reconciled == "match"
    assert second.cursor_after is not None
    assert first.cursor_after is not None
    assert second.cursor_after > first.cursor_after
    async with sessions() as session:
        name = await session.scalar(
            select(Customer.first_name)
            .join(Identity, Identity.customer_id == Customer.id)
            .where(Identity.source == "hubspot", Identity.external_id == person.hubspot_id)
        )
    assert name == "Zebedee"


async def test_upstream_failure_keeps_the_cursor(
    sessions: async_sessionmaker[AsyncSession],
    adapters: dict[str, Adapter],
    samples: SampleUpstreams,
) -> None:
    samples.hubspot.faults.update(error_rate=1.0)
    (failed,) = await sync(sessions, adapters, ["hubspot"], None)
    assert failed.status == "failed"
    assert await load_cursor(sessions, "hubspot") is None
    assert await _count(sessions, Customer) == 0
    assert "FAILED (" in failed.line()
    assert "cursor kept at 1970-01-01" in failed.line()
    (state,) = await sync_states(sessions)  # a failed run is kept too, without a cursor
    assert state.cursor is None
    assert state.last_run is not None
    assert (state.last_run.status, state.last_run.line) == ("failed", failed.line())

    samples.hubspot.faults.reset()
    (recovered,) = await sync(sessions, adapters, ["hubspot"], None)
    assert recovered.status == "ok"
    assert recovered.read == SAMPLE_SIZE
    assert await load_cursor(sessions, "hubspot") == recovered.cursor_after


async def test_seeded_customers_are_updated_not_duplicated(
    sessions: async_sessionmaker[AsyncSession],
    adapters: dict[str, Adapter],
    samples: SampleUpstreams,
) -> None:
    await seed(sessions, samples.people)
    before = await _count(sessions, Customer)
    (report,) = await sync(sessions, adapters, ["hubspot"], None)
    assert report.updated == SAMPLE_SIZE - report.rejected
    assert report.created == 0
    assert await _count(sessions, Customer) == before


async def test_sources_without_a_change_feed_are_skipped(
    sessions: async_sessionmaker[AsyncSession], adapters: dict[str, Adapter]
) -> None:
    reports = {r.source: r for r in await sync(sessions, adapters, None, None)}
    assert reports["hubspot"].status == "ok"
    assert reports["shopify"].line() == "shopify: skipped (the commerce adapter has no change feed)"
    assert reports["segment"].status == "skipped"
    with pytest.raises(InvalidInput):
        await sync(sessions, adapters, ["nowhere"], None)


async def test_the_soap_crm_syncs_and_reconciles_too(
    sessions: async_sessionmaker[AsyncSession], samples: SampleUpstreams
) -> None:
    tables = dict.fromkeys(samples.base_urls, FAST)
    tables["soap_crm"] = {**FAST, "enabled": True}
    built = build_adapters(sample_upstreams_config(samples.base_urls, tables))
    try:
        (first,) = await sync(sessions, built, ["soap_crm"], None)
        (second,) = await sync(sessions, built, ["soap_crm"], None)
    finally:
        await aclose_adapters(built)
    assert first.status == "ok", first.line()
    assert first.read == SAMPLE_SIZE
    assert first.upstream_total == SAMPLE_SIZE
    assert first.reconciled == "match"
    assert second.read == 0
    assert second.reconciled == "match"

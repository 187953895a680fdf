"""Retention: a dry run changes nothing; a real run erases (with tombstones) the customers
whose consent was withdrawn long enough ago and removes or anonymises old events, and an
export afterwards carries those as deletions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.db.engine import create_sessionmaker
from gateway.db.models import Consent, Customer, Event
from gateway.db.recommendation_models import RecommendationImpression
from gateway.export.service import Exporter
from gateway.privacy.erasure import Erasure
from gateway.privacy.forgetting import Forgetting
from gateway.privacy.retention import Retention, RetentionRules
from gateway.privacy.tombstones import Tombstones
from gateway.profiles.customers import CustomerStore
from gateway.profiles.profile_cache import CachedCustomers
from gateway.settings import SettingsError, load_settings
from gateway.upstreams.cache import UpstreamCache, build_cache
from gateway.upstreams.federation import Federation
from gateway.upstreams.response_cache import id_tag
from gateway.warehouse_settings import EventRetention
from tests.export.people import add_person, engine
from tests.own_database import own_database_url

__all__ = ["engine", "own_database_url"]  # the export tests' own database, as fixtures

TOMBSTONES = Tombstones(b"retention-test-erasure-key")


def _forgetting(sessions: async_sessionmaker[AsyncSession]) -> Forgetting:
    """Erasure with this process's own caches (the running instances' are
    test_retention_caches.py's)."""
    cache = UpstreamCache(build_cache("memory://"))
    customers = CachedCustomers(CustomerStore(sessions, TOMBSTONES), cache.backend, 60)
    return Forgetting(Erasure(sessions, TOMBSTONES), customers, Federation({}, cache))


async def _state(engine: AsyncEngine) -> tuple[set[uuid.UUID], int, int]:
    async with engine.connect() as connection:
        customers = set(await connection.scalars(select(Customer.id)))
        events = await connection.scalar(select(func.count()).select_from(Event))
        linked = await connection.scalar(
            select(func.count()).select_from(Event).where(Event.customer_id.is_not(None))
        )
    return customers, int(events or 0), int(linked or 0)


async def _withdraw(engine: AsyncEngine, customer: object, days_ago: int) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(Consent)
            .where(Consent.customer_id == customer)
            .values(granted=False, recorded_at=datetime.now(UTC) - timedelta(days=days_ago))
        )


async def test_dry_run_changes_nothing_and_a_real_run_removes_what_the_rules_say(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    gone, recent, kept = [await add_person(engine) for _ in range(3)]
    await _withdraw(engine, gone.id, 400)
    await _withdraw(engine, recent.id, 10)
    sessions = create_sessionmaker(engine)
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), None)
    await exporter.run()
    rules = RetentionRules(consent_withdrawn_days=365, events_days=1)
    retention = Retention(sessions, _forgetting(sessions), rules)
    before = await _state(engine)

    dry = await retention.run()
    assert dry.dry_run
    assert dry.customers == 1
    assert dry.events == 6  # two of each person's three events are a day old or more
    assert await _state(engine) == before

    done = await retention.run(dry_run=False)
    assert (done.customers, done.tombstones > 0) == (1, True)
    customers, events, _ = await _state(engine)
    assert customers == {recent.id, kept.id}
    assert events == 2  # the erased customer's went with them; the others' old ones too
    digest = TOMBSTONES.email_digest(gone.email)
    assert digest is not None
    async with engine.connect() as connection:  # erased as an erasure does: tombstoned
        assert await TOMBSTONES.blocked(connection, {digest}) == {digest}
    # Nothing left to do: a second run finds nothing.
    again = await retention.run(dry_run=False)
    assert (again.customers, again.events) == (0, 0)

    second = await exporter.run()
    deleted = {t.table: t.as_json()["deletes"] for t in second.tables if t.as_json()["deletes"]}
    assert deleted["customers"] == 1
    assert deleted["events"] >= 4


async def test_anonymised_events_stay_without_their_customer(engine: AsyncEngine) -> None:
    person = await add_person(engine)
    sessions = create_sessionmaker(engine)
    rules = RetentionRules(events_days=1, events_action=EventRetention.ANONYMISE)
    report = await Retention(sessions, _forgetting(sessions), rules).run(dry_run=False)
    assert report.events == 2
    customers, events, linked = await _state(engine)
    assert customers == {person.id}
    assert (events, linked) == (3, 1)
    async with engine.connect() as connection:
        left = list(
            await connection.scalars(select(Event.properties).where(Event.customer_id.is_(None)))
        )
    assert left == [{}, {}]


@pytest.mark.parametrize("action", list(EventRetention))
async def test_removing_old_events_drops_the_stored_answers_holding_their_customer(
    engine: AsyncEngine, action: EventRetention
) -> None:
    person, other = await add_person(engine), await add_person(engine)
    sessions = create_sessionmaker(engine)
    cache = UpstreamCache(build_cache("memory://"))
    customers = CachedCustomers(CustomerStore(sessions, TOMBSTONES), cache.backend, 60)
    forgetting = Forgetting(Erasure(sessions, TOMBSTONES), customers, Federation({}, cache))
    answers = cache.responses
    for who in (person, other):
        ticket = (await answers.lookup(str(who.id))).ticket
        assert ticket is not None
        assert await answers.store(str(who.id), ticket, b"events", [id_tag(who.id)], 60)
    async with engine.begin() as connection:  # only the person's events are old
        await connection.execute(
            update(Event).where(Event.customer_id == other.id).values(occurred_at=datetime.now(UTC))
        )
    rules = RetentionRules(events_days=1, events_action=action)
    report = await Retention(sessions, forgetting, rules).run(dry_run=False)
    assert report.events == 2
    assert (await answers.lookup(str(person.id))).hit is None
    assert (await answers.lookup(str(other.id))).hit is not None  # untouched: kept


async def _served(
    engine: AsyncEngine, customer: uuid.UUID, days_ago: float, experiment: str | None
) -> str:
    """A served list stored as the impression log writes one, ``days_ago`` old."""
    list_id = uuid.uuid4().hex[:16]
    async with engine.begin() as connection:
        await connection.execute(
            insert(RecommendationImpression).values(
                list_id=list_id,
                customer_id=customer,
                served_at=datetime.now(UTC) - timedelta(days=days_ago),
                surface="api",
                strategy="popularity",
                experiment=experiment,
                variant="control" if experiment else None,
                items=["p1", "p2"],
            )
        )
    return list_id


async def _lists(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.scalars(select(RecommendationImpression.list_id)))


async def test_served_lists_older_than_the_window_are_pruned(engine: AsyncEngine) -> None:
    """Lists outside any experiment and in each experiment, past the window and within it;
    a window of 0 keeps them all."""
    person = await add_person(engine)
    ages = {None: (200, 30), "homepage": (181, 179), "subject-line": (365, 0.01)}
    old, recent = set(), set()
    for experiment, (past, within) in ages.items():
        old.add(await _served(engine, person.id, past, experiment))
        recent.add(await _served(engine, person.id, within, experiment))
    sessions = create_sessionmaker(engine)
    kept = await Retention(sessions, _forgetting(sessions), RetentionRules(impressions_days=0)).run(
        dry_run=False
    )
    assert kept.impressions == 0
    assert old | recent <= await _lists(engine)

    retention = Retention(sessions, _forgetting(sessions), RetentionRules(impressions_days=180))
    dry = await retention.run()
    assert dry.impressions == 3
    assert "impressions: 3 would delete" in dry.lines()
    assert old | recent <= await _lists(engine)

    done = await retention.run(dry_run=False)
    assert done.impressions == 3
    left = await _lists(engine)
    assert not old & left
    assert recent <= left
    assert (await retention.run(dry_run=False)).impressions == 0


def test_the_impressions_window_is_longer_than_the_conversion_window() -> None:
    # Off by default: pruning rewrites older experiments' results, an operator's choice.
    assert load_settings().retention_impressions_days is None
    assert load_settings(retention_impressions_days=180).retention_impressions_days == 180
    with pytest.raises(SettingsError, match="IMPRESSIONS_DAYS must be longer"):
        load_settings(retention_impressions_days=7, conversion_window_hours=24 * 7)
    assert load_settings(retention_impressions_days=0).retention_impressions_days == 0  # kept

"""The demo's timeline is anchored to the present (a fixed date made the data a month stale
a month later: scores judged it against the clock, and every "recent" customer looked
lapsed), fixed per process, overridable, and read back from a database seeded before."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from demo.people.behaviour import behaviour
from demo.people.orders import orders_for
from demo.people.population import EPOCH_ENV, population
from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import ids_from_before, seeded_epoch
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Customer
from tests.conftest import REPO

FIXED = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.skipif(bool(os.environ.get(EPOCH_ENV)), reason="the run fixes the demo's anchor")
def test_the_history_runs_up_to_today() -> None:
    people = population(1000)
    now = datetime.now(UTC)
    latest_order = max(o.created_at for p in people for o in orders_for(p))
    latest_event = max(e.timestamp for p in people[:300] for e in behaviour(p).events)
    assert now - timedelta(days=3) < latest_order < now
    assert now - timedelta(days=3) < latest_event < now
    # Both classes for a 30-day propensity holdout judged against the clock.
    recent = sum(
        any(o.created_at > now - timedelta(days=30) for o in orders_for(p)) for p in people
    )
    assert 20 < recent < 500


def test_another_anchor_shifts_every_date_and_nothing_else() -> None:
    shift = timedelta(days=400)
    early, late = population(40, epoch=FIXED), population(40, epoch=FIXED + shift)
    for a, b in zip(early, late, strict=True):
        assert (a.email, a.first_name, a.phone) == (b.email, b.first_name, b.phone)
        assert b.created_at - a.created_at == b.updated_at - a.updated_at == shift
        assert b.date_of_birth - a.date_of_birth == shift
        orders_a, orders_b = orders_for(a), orders_for(b)
        assert [o.id for o in orders_a] == [o.id for o in orders_b]
        assert all(
            y.created_at - x.created_at == shift for x, y in zip(orders_a, orders_b, strict=True)
        )
        assert [o.financial_status for o in orders_a] == [o.financial_status for o in orders_b]
        events_a, events_b = behaviour(a).events, behaviour(b).events
        assert [e.message_id for e in events_a] == [e.message_id for e in events_b]
        assert all(
            y.timestamp - x.timestamp == shift for x, y in zip(events_a, events_b, strict=True)
        )


def test_the_variable_fixes_the_anchor_for_a_process() -> None:
    code = "from demo.people.population import population; print(population(1)[0].epoch)"
    env = {**os.environ, EPOCH_ENV: "2026-11-01", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str(FIXED)


def test_samples_serve_the_anchor_they_are_given() -> None:
    samples = SampleUpstreams(size=5, epoch=FIXED)
    assert {p.epoch for p in samples.people} == {FIXED}
    assert samples.people == population(5, epoch=FIXED)


def test_a_seeded_database_gives_back_its_anchor(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    assert seeded_epoch(url) is None  # no schema yet
    upgrade(url)
    assert seeded_epoch(url) is None  # no demo people yet

    async def seeded() -> None:
        engine = create_engine(url)
        try:
            await seed(create_sessionmaker(engine), population(30, epoch=FIXED)[3:])
        finally:
            await engine.dispose()

    asyncio.run(seeded())
    assert seeded_epoch(url) == FIXED


def test_a_database_seeded_with_email_ids_is_told_apart(tmp_path: Path) -> None:
    """A database an earlier demo seeded keeps its people's ids, made from their e-mail
    addresses: ``gateway demo`` goes on with them, and says how to start afresh."""
    people = population(5, epoch=FIXED)
    fresh, earlier = (f"sqlite+aiosqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    for url in (fresh, earlier):
        upgrade(url)

    async def populate() -> None:
        engine = create_engine(fresh)
        try:
            await seed(create_sessionmaker(engine), people)
        finally:
            await engine.dispose()
        engine = create_engine(earlier)
        try:
            async with engine.begin() as connection:
                # The first person as the earlier seed stored them.
                old = uuid.uuid5(uuid.UUID("6f1c2d4e-8a5b-4c3d-9e7f-0a1b2c3d4e5f"), people[0].email)
                await connection.execute(insert(Customer).values(id=old, email=people[0].email))
        finally:
            await engine.dispose()

    asyncio.run(populate())
    assert not ids_from_before(fresh)
    assert ids_from_before(earlier)

"""What the demo writes for the console's pages: the evidence of its seeded identities, and
its experiment with a campaign's results (demo/console_experiment.py), written
once, each list under the variant serving would choose, each click attributed to its
list; extended rather than written again once it has ended; and no start stopped by an
experiment someone saved over the same time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from demo.console_experiment import SEND_ID, prepare_demo_experiment
from demo.people.population import Person, population
from demo.seed import customer_id_for, seed_evidence
from demo.simulated_send import EXPERIMENT
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.identity_models import IdentityLink
from gateway.db.models import Event, Identity
from gateway.db.recommendation_models import (
    RecommendationClick,
    RecommendationImpression,
    RecommendationItem,
)
from gateway.experiments.assignment import experiment
from gateway.experiments.impressions import ImpressionLog
from gateway.experiments.results import ExperimentResults
from gateway.experiments.store import ExperimentStore
from tests.demo_database import demo_database


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_demo_experiment_is_written_once_and_kept_running(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    people = population(400)
    with demo_database(backend, "demoexp", people, tmp_path_factory, model=False) as url:
        asyncio.run(_check(url))


async def _check(url: str) -> None:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions.begin() as session:  # popular products to serve (no model)
            await session.execute(
                insert(RecommendationItem),
                [
                    {"product_id": f"p{n}", "category": "x", "popularity": n, "trending": 0.0}
                    for n in range(10)
                ],
            )
        now = datetime.now(UTC)
        written = await prepare_demo_experiment(sessions, now)
        assert written > 100
        found = await ExperimentStore(sessions).get(EXPERIMENT)
        assert found is not None
        assert found.running(now)
        async with sessions() as session:
            served = (await session.execute(select(RecommendationImpression))).scalars().all()
            clicks = (await session.execute(select(RecommendationClick))).scalars().all()
            events = await session.scalar(select(func.count()).select_from(Event))
        assert len(served) == written
        for row in served:  # the variant serving would have chosen
            assert row.variant == found.variant_of(row.customer_id).name
            assert row.send_id == SEND_ID
            assert found.start <= _utc(row.served_at) < found.end
        assert clicks, "no one clicked"
        results = await ExperimentResults(engine, ImpressionLog(sessions), 168.0).of(found)
        assert sum(v.impressions for v in results.variants) == written
        assert sum(v.clicks for v in results.variants) == len({c.list_id for c in clicks})
        control, personal = (v.click_through.value for v in results.variants)
        assert control is not None
        assert personal is not None
        assert personal > control

        # Again: nothing more. After its end: the same experiment, running again.
        assert await prepare_demo_experiment(sessions, now) == 0
        later = now + timedelta(days=90)
        assert await prepare_demo_experiment(sessions, later) == 0
        extended = await ExperimentStore(sessions).get(EXPERIMENT)
        assert extended is not None
        assert extended.running(later)
        assert extended.start == found.start
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Event)) == events

        # Another experiment over the time: the demo starts anyway, its own left as is.
        other = experiment(
            "other",
            [("a", "model", 1), ("b", "popularity", 1)],
            later + timedelta(days=60),
            later + timedelta(days=90),
        )
        await ExperimentStore(sessions).save(other)
        assert await prepare_demo_experiment(sessions, later + timedelta(days=70)) == 0
    finally:
        await engine.dispose()


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_seeds_identity_evidence_is_written_once(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    people = population(30)
    with demo_database(backend, "evidence", people, tmp_path_factory, model=False) as url:
        asyncio.run(_evidence(url, people))


async def _evidence(url: str, people: tuple[Person, ...]) -> None:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    try:
        assert await seed_evidence(sessions, people) == 4 * len(people)
        assert await seed_evidence(sessions, people) == 0
        async with sessions() as session:
            rules = (
                await session.execute(
                    select(Identity.source, IdentityLink.rule, IdentityLink.matched_identity_id)
                    .join(IdentityLink, IdentityLink.identity_id == Identity.id)
                    .where(Identity.customer_id == customer_id_for(people[0]))
                )
            ).all()
            crm = await session.scalar(
                select(Identity.id).where(
                    Identity.customer_id == customer_id_for(people[0]), Identity.source == "hubspot"
                )
            )
        assert sorted((source, rule, matched) for source, rule, matched in rules) == [
            ("hubspot", "new", None),
            ("segment", "email", crm),
            ("shopify", "email", crm),
            ("soap_crm", "email", crm),
        ]
    finally:
        await engine.dispose()

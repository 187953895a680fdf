"""``gateway simulate-send``: a campaign rendered through ``renderBatch`` for the demo's
customers in an experiment, their taste-driven clicks posted as signed SendGrid events;
what it prints agrees with figures recomputed here from the stored rows with SQL of our
own and scipy's Wilson interval, and the personal variant's lift shows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest
from sqlalchemy import text

from demo.simulated_send import EXPERIMENT, simulate
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.experiments.impressions import ImpressionLog
from gateway.experiments.results import ExperimentResult, ExperimentResults
from gateway.experiments.store import ExperimentStore
from gateway.settings import load_settings

# Lists per variant, clicked lists, and lists whose click an order followed within the
# default window (7 days), counted independently of the gateway's queries.
_RECOUNT = """
SELECT i.variant,
       count(*) AS lists,
       count(DISTINCT i.customer_id) AS people,
       sum(CASE WHEN EXISTS (SELECT 1 FROM recommendation_clicks c
                             WHERE c.list_id = i.list_id) THEN 1 ELSE 0 END) AS clicked,
       sum(CASE WHEN EXISTS (SELECT 1 FROM recommendation_clicks c JOIN events o
                               ON o.customer_id = c.customer_id
                             WHERE c.list_id = i.list_id AND o.type = 'orders/create'
                               AND julianday(o.occurred_at) > julianday(c.clicked_at)
                               AND julianday(o.occurred_at) - julianday(c.clicked_at) <= 7)
                THEN 1 ELSE 0 END) AS converted
FROM recommendation_impressions i
WHERE i.experiment = :name AND i.send_id = :send
GROUP BY i.variant
"""


async def _recount(url: str, send: str) -> tuple[dict[str, Any], ExperimentResult]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text(_RECOUNT), {"name": EXPERIMENT, "send": send})
            ours = {row.variant: row for row in rows}
        sessions = create_sessionmaker(engine)
        found = await ExperimentStore(sessions).get(EXPERIMENT)
        assert found is not None
        impressions = ImpressionLog(sessions)
        theirs = await ExperimentResults(engine, impressions, 168.0).of(found)
        return ours, theirs
    finally:
        await engine.dispose()


def test_a_simulated_send_shows_the_personal_variants_lift(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sim.db'}"
    settings = load_settings(database_url=url, insecure_demo=True)
    report = simulate(settings, customers=300, seed=25, send_id="sim-test")
    assert "Experiment simulated-send:" in report
    assert "click-through: personal vs control +" in report
    ours, theirs = asyncio.run(_recount(url, "sim-test"))
    assert set(ours) == {"control", "personal"}
    for variant in theirs.variants:
        mine = ours[variant.name]
        assert (variant.impressions, variant.customers) == (mine.lists, mine.people)
        assert (variant.clicks, variant.conversions) == (mine.clicked, mine.converted)
        interval = binomtest(mine.clicked, mine.lists).proportion_ci(0.95, method="wilson")
        assert variant.click_through.low == pytest.approx(interval.low, abs=1e-9)
        assert variant.click_through.high == pytest.approx(interval.high, abs=1e-9)
        assert f"{variant.name:<10}" in report
    control, personal = theirs.variants
    assert personal.click_through.value > control.click_through.value  # type: ignore[operator]
    assert theirs.compared == "personal"


def test_a_simulated_send_dates_nothing_after_it_reported_it(tmp_path: Path) -> None:
    """An ESP reports what happened, and a shop an order placed: the simulation's events
    and orders were dated up to hours after they were posted, so a second run (or any
    send within those hours) counted the first run's future orders as its conversions,
    and ``lastEmailOpenAt`` showed an open that had not happened yet."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sim.db'}"
    settings = load_settings(database_url=url, insecure_demo=True)
    simulate(settings, customers=100, seed=25, send_id="sim-future")

    async def future() -> int:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return int(
                    await connection.scalar(
                        text(
                            "SELECT count(*) FROM events WHERE source IN ('sendgrid', 'shopify') "
                            "AND julianday(occurred_at) > julianday(received_at)"
                        )
                    )
                    or 0
                )
        finally:
            await engine.dispose()

    assert asyncio.run(future()) == 0

"""The demo population: realistic, deterministic, and seeded idempotently."""

from __future__ import annotations

from demo.people.population import _population, population
from demo.seed import count_customers, seed
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.settings import Settings


def test_population_is_deterministic_and_unique() -> None:
    people = population(1000)
    assert len(people) == 1000
    assert len({p.email for p in people}) == 1000
    assert len({p.hubspot_id for p in people}) == 1000
    _population.cache_clear()
    assert population(1000) == people
    assert population(10) == people[:10]  # a prefix, whatever the size asked for


async def test_seeding_twice_adds_nothing_the_second_time(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    try:
        people = population(1000)[:50]
        before = await count_customers(sessions)
        first = await seed(sessions, people)
        again = await seed(sessions, people)
        assert again == 0
        assert await count_customers(sessions) == before + first
    finally:
        await engine.dispose()

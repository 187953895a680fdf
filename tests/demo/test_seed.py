"""The demo population: realistic, deterministic, and seeded idempotently."""

from __future__ import annotations

from demo.people.population import _population, population
from demo.seed import count_customers, customer_id_for, seed
from demo.wiring import prepare
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Customer
from gateway.identity.merges import merge_customers
from gateway.privacy.erasure import Erasure
from gateway.privacy.tombstones import Tombstones
from gateway.settings import Settings, load_settings
from tests.own_database import own_database_url

__all__ = ["own_database_url"]  # the fixture: a database of this test's own


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


async def test_the_demo_starts_again_after_a_merge_and_an_erasure_adding_nobody(
    own_database_url: str,
) -> None:
    # A fresh review: the seed found its people by golden e-mail, so a restart of the demo
    # after a merge seeded the merged-away person again (and failed on their identities),
    # after an erasure brought the erased person back, ids and all; and the demo history
    # then failed on the erased customer's events (a foreign key): the demo did not start.
    settings = load_settings(database_url=own_database_url, cache_url="memory://")
    people = population(1000)[:12]
    assert await prepare(settings, people) == 12
    engine = create_engine(own_database_url)
    sessions = create_sessionmaker(engine)
    try:
        before = await count_customers(sessions)  # the people, and the console's pairs
        kept, merged, erased = (customer_id_for(p) for p in people[:3])
        await merge_customers(sessions, kept, merged, "same person")
        forgotten = await Erasure(sessions, Tombstones.from_settings(settings)).forget(erased)
        assert forgotten is not None

        assert await prepare(settings, people) == 0
        async with sessions() as session:
            assert await session.get(Customer, erased) is None
            assert await session.get(Customer, merged) is None
        assert await count_customers(sessions) == before - 2
    finally:
        await engine.dispose()

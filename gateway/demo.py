"""Preparing the demo: the seeded embedded database behind `gateway demo`."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.samples.population import Person
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.seed import seed
from gateway.settings import Settings


async def prepare(settings: Settings, people: Sequence[Person]) -> int:
    """Seed the demo population into an already migrated database; returns rows added."""
    engine = create_engine(settings.database_url)
    try:
        return await seed(create_sessionmaker(engine), people)
    finally:
        await engine.dispose()

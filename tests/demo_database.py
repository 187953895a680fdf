"""A database of a test module's own, holding the demo's people: for tests that change
what they read (merges, erasures) or need their behaviour and a built model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from demo.people.catalogue import catalogue
from demo.people.population import Person
from demo.recommendation_history import store_demo_history
from demo.seed import seed
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from tests.conftest import create_postgres_database, drop_postgres_database


@contextmanager
def demo_database(
    backend: str,
    name: str,
    people: tuple[Person, ...],
    tmp_path_factory: pytest.TempPathFactory,
    *,
    model: bool = True,
) -> Iterator[str]:
    """A database of a test module's own (``backend`` "sqlite" or "postgres") holding
    ``people``, their behaviour as stored events and, with ``model``, a recommendation
    model built on it; a Postgres one is dropped afterwards."""
    if backend == "postgres":
        url = create_postgres_database(f"gateway_{name}")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp(name) / 'g.db'}"
    upgrade(url)

    async def populate() -> None:
        engine = create_engine(url)
        try:
            sessions = create_sessionmaker(engine)
            await seed(sessions, people)
            await store_demo_history(sessions, people)
            if model:
                # Imported here: the training stack (implicit, scipy) is slow to import
                # and most test modules never build a model.
                from gateway.recommendations.store import RecommendationStore
                from gateway.recommendations.training.builder import build

                categories = {str(p.id): p.category for p in catalogue().products}
                await build(RecommendationStore(sessions), categories=categories)
        finally:
            await engine.dispose()

    asyncio.run(populate())
    try:
        yield url
    finally:
        if backend == "postgres":
            drop_postgres_database(url)

"""The privacy tests' gateways: a seeded database per backend for the package (each test
takes people of its own from it), instances started on demand, and the bare webhook
gateway of the erasure-after-merge tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from demo.people.catalogue import catalogue
from demo.recommendation_history import store_demo_history
from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import Scope
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.recommendations.store import RecommendationStore
from gateway.recommendations.training.builder import build
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import (
    FAST,
    api_client,
    bearer,
    create_postgres_database,
    drop_postgres_database,
)
from tests.in_process import asgi, lifespan, services_of
from tests.ingest.webhook_requests import (
    SECRETS,
    realtime_app,
)
from tests.privacy.instances import BASE, Instance


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def privacy_url(
    request: pytest.FixtureRequest,
    samples: SampleUpstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('privacy') / 'g.db'}"
    else:
        url = create_postgres_database("gateway_privacy")
    upgrade(url)

    async def populate() -> None:
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        await seed(sessions, samples.people)
        # Their history as events, and a built recommendation model on it.
        await store_demo_history(sessions, samples.people)
        categories = {str(p.id): p.category for p in catalogue().products}
        await build(RecommendationStore(sessions), categories=categories)
        await engine.dispose()

    asyncio.run(populate())
    yield url
    if request.param == "postgres":
        drop_postgres_database(url)


@pytest.fixture
def instance(samples: SampleUpstreams, privacy_url: str) -> Iterator[Any]:
    samples.reset()

    @asynccontextmanager
    async def start(
        cache_url: str = "memory://", scopes: tuple[Scope, ...] = (Scope.ADMIN,)
    ) -> AsyncIterator[Instance]:
        config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
        settings = load_settings(database_url=privacy_url, cache_url=cache_url)
        app = create_app(
            settings.model_copy(update={"webhook_secrets": dict(SECRETS)}), upstreams=config
        )
        async with lifespan(app):
            name = f"privacy-{uuid.uuid4().hex[:10]}"
            key, _ = await services_of(app).api_keys.create(name, scopes, 10**6)
            async with httpx.AsyncClient(
                transport=asgi(app), base_url=BASE, headers=bearer(key)
            ) as http:
                yield Instance(app, http, name)

    yield start
    samples.reset()


@pytest.fixture
async def gw(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    async with lifespan(app), api_client(app, base_url=BASE) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client

"""The privacy tests' gateways: a seeded database per backend for the package (each test
takes people of its own from it), instances started on demand, and the bare webhook
gateway of the erasure-after-merge tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import Scope
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import (
    FAST,
    api_client,
    bearer,
)
from tests.demo_database import demo_database
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
    with demo_database(request.param, "privacy", samples.people, tmp_path_factory) as url:
        yield url


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

"""A gateway serving the demo's people with a built model, ESP and shop webhooks signed,
and a one-hour conversion window (tests/experiments/serving.py drives it); and, for
tests that need no demo data, one taking signed webhooks on the shared test databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from demo.upstreams.runner import SampleUpstreams
from gateway.settings import load_settings
from tests.conftest import api_client
from tests.demo_database import demo_database
from tests.experiments.serving import Served, serving_app
from tests.in_process import lifespan
from tests.ingest.webhook_requests import BASE, realtime_app


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def experiments_url(
    request: pytest.FixtureRequest,
    samples: SampleUpstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    with demo_database(request.param, "experiments", samples.people, tmp_path_factory) as url:
        yield url


@pytest.fixture
async def served(experiments_url: str, samples: SampleUpstreams) -> AsyncIterator[Served]:
    samples.reset()
    app = serving_app(experiments_url, samples)
    async with lifespan(app), api_client(app, base_url=BASE) as client:
        yield Served(app, client, samples, experiments_url)
    samples.reset()


@pytest.fixture
async def webhooks(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """One instance taking signed webhooks, on each database (as tests/ingest's
    ``gateway``): customers made through the API, no demo people."""
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    async with lifespan(app), api_client(app, base_url=BASE) as client:
        yield client

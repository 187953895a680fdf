"""The webhook tests' gateway: one instance on each database, webhooks configured.

(It shadows the root conftest's ``gateway`` factory, which no ingest test uses.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.settings import load_settings
from tests.conftest import api_client
from tests.in_process import lifespan
from tests.ingest.webhook_requests import BASE, realtime_app


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    async with lifespan(app), api_client(app, base_url=BASE) as client:
        yield client

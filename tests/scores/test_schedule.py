"""Scores runs scheduled inside ``gateway serve`` (GATEWAY_SCORES_BUILD_INTERVAL_S: a
build with retraining; GATEWAY_SCORES_REFRESH_INTERVAL_S: a refresh): off by default,
skipped while the command line's lock is held on another instance, and serving goes on
while they run (they run off the event loop)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.locks import lock_key
from gateway.db.models import Event
from gateway.db.score_models import CustomerScore, ScoreBuild
from gateway.scores.build import build
from gateway.scores.store import ScoreStore
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.in_process import asgi, lifespan

ERASURE_KEY = "the scores tests' erasure key"  # conftest's TEST_MODEL_KEY derives from it


@asynccontextmanager
async def _serving(url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    configured = load_settings(
        database_url=url, cache_url="memory://", erasure_key=ERASURE_KEY, **settings
    )
    app = create_app(configured)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=asgi(app), base_url="http://t") as c,
    ):
        yield c


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(table)) or 0)


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 240.0) -> None:
    # Generous: a build fits several models, and the test machine is shared.
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.1)


async def test_a_retraining_build_runs_on_its_schedule_and_waits_for_the_lock(
    shop: str,
) -> None:
    engine = create_engine(shop)
    try:
        async with _serving(shop, scores_refresh_interval_s=None):
            await asyncio.sleep(0.5)  # off by default
        assert await _count(engine, ScoreBuild) == 0
        if engine.dialect.name == "postgresql":
            # A `gateway scores build` running on another instance: this one skips its turns.
            async with engine.connect() as elsewhere:
                await elsewhere.execute(text(f"SELECT pg_advisory_lock({lock_key('scores')})"))
                await elsewhere.commit()
                async with _serving(shop, scores_build_interval_s=0.1):
                    await asyncio.sleep(1.0)
                    assert await _count(engine, ScoreBuild) == 0
                await elsewhere.execute(text(f"SELECT pg_advisory_unlock({lock_key('scores')})"))
                await elsewhere.commit()
        async with _serving(shop, scores_build_interval_s=0.1) as http:

            async def built() -> bool:
                return await _count(engine, ScoreBuild) >= 1

            await _until(built)
            assert (await http.get("/healthz")).status_code == 200
        # Every customer scored, with a model trained by the schedule (not kept: none was).
        assert await _count(engine, CustomerScore) == 401
        async with engine.connect() as connection:
            version = await connection.scalar(select(ScoreBuild.model_version))
        assert str(version).startswith("hgb-")
    finally:
        await engine.dispose()


async def test_a_refresh_runs_on_its_schedule(shop: str, store: ScoreStore) -> None:
    await build(store, horizon=30)
    async with store._sessions() as session:
        row = await session.scalar(
            select(CustomerScore)
            .where(CustomerScore.frequency > 1)
            .order_by(CustomerScore.customer_id)
        )
    assert row is not None
    customer, orders = row.customer_id, row.frequency
    async with store._sessions.begin() as session:
        session.add(
            Event(
                customer_id=customer,
                source="shopify",
                event_id=f"new-{uuid.uuid4()}",
                type="orders/create",
                occurred_at=datetime.now(UTC),
                properties={"order_id": "scheduled-1", "total_price": "50.00"},
            )
        )

    async def refreshed() -> bool:
        async with store._sessions() as session:
            frequency = await session.scalar(
                select(CustomerScore.frequency).where(CustomerScore.customer_id == customer)
            )
        return frequency == orders + 1

    async with _serving(shop, scores_refresh_interval_s=0.1):
        await _until(refreshed, 120.0)
    async with store._sessions() as session:
        builds = await session.scalar(select(func.count()).select_from(ScoreBuild))
    assert builds == 1  # a refresh, not a build

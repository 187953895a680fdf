"""A send walks a segment of 100,000 customers (Postgres; 20,000 on SQLite) through
GraphQL a page of 1,000 at a time while customers join, leave, withdraw consent and
change scores: every customer that stays a member throughout is seen exactly once, in
id order, and nobody is seen who was never a member."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Consent, Customer
from gateway.db.score_models import CustomerScore
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import api_client, create_postgres_database, drop_postgres_database
from tests.gql_client import gql
from tests.in_process import lifespan
from tests.segments.audience import write_audience
from tests.segments.oracle import members

AUDIENCE = {"postgres": 100_000, "sqlite": 20_000}
DEFINITION = {"all": [{"field": "purchasePropensity", "gte": 0.2}]}
WALK = """query($after: String) {
  segment(name: "walked") {
    customers(first: 1000, after: $after) { nodes { id } pageInfo { endCursor hasNextPage } }
  }
}"""


@pytest.fixture(params=["postgres", "sqlite"])
async def crowd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, AsyncEngine, list[uuid.UUID]]]:
    if request.param == "postgres":
        url = await asyncio.to_thread(create_postgres_database, "gateway_walk")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('walk') / 'w.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    ids = await write_audience(engine, AUDIENCE[request.param], seed=11)
    yield url, engine, ids
    await engine.dispose()
    if request.param == "postgres":
        await asyncio.to_thread(drop_postgres_database, url)


@dataclass
class Churn:
    """Changes made while the walk runs; ``touched``: every customer they concern."""

    engine: AsyncEngine
    ids: list[uuid.UUID]
    touched: set[uuid.UUID] = field(default_factory=set)
    rounds: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(5))

    def _pick(self, count: int) -> list[uuid.UUID]:
        chosen = self.rng.sample(self.ids, count)
        self.touched.update(chosen)
        return chosen

    async def round(self) -> None:
        newcomers = [uuid.uuid4() for _ in range(20)]
        self.touched.update(newcomers)
        gone, withdrawn, rescored = self._pick(10), self._pick(20), self._pick(20)
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(Customer),
                [{"id": i, "email": f"new-{i}@example.com"} for i in newcomers],
            )
            await connection.execute(
                insert(CustomerScore),
                [_scored(i, self.rng.random()) for i in newcomers],
            )
            await connection.execute(
                insert(Consent),
                [_consent(i) for i in newcomers],
            )
            await connection.execute(delete(Customer).where(Customer.id.in_(gone)))
            await connection.execute(
                update(Consent)
                .where(Consent.customer_id.in_(withdrawn), Consent.purpose == "email_marketing")
                .values(granted=False)
            )
            await connection.execute(
                update(CustomerScore)
                .where(CustomerScore.customer_id.in_(rescored))
                .values(purchase_propensity=self.rng.choice([0.05, 0.9]))
            )
        left = set(gone)
        self.ids = [i for i in self.ids if i not in left] + newcomers
        self.rounds += 1


def _scored(customer_id: uuid.UUID, propensity: float) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "frequency": 1,
        "monetary": 10.0,
        "r_score": 3,
        "f_score": 1,
        "m_score": 1,
        "engagement_30d": 0,
        "engagement_90d": 0,
        "purchase_propensity": propensity,
        "model_version": "hgb-test",
    }


def _consent(customer_id: uuid.UUID) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "purpose": "email_marketing",
        "granted": True,
        "source": "test",
    }


async def _walk(client: httpx.AsyncClient, churn: Churn) -> tuple[list[uuid.UUID], int]:
    """Every page, each read while a round of changes commits beside it; the walked ids
    and the number of pages."""
    walked: list[uuid.UUID] = []
    after, pages = None, 0
    while True:
        body, _ = await asyncio.gather(gql(client, WALK, after=after), churn.round())
        assert "errors" not in body, body
        page = body["data"]["segment"]["customers"]
        walked += [uuid.UUID(node["id"]) for node in page["nodes"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            return walked, pages
        after = page["pageInfo"]["endCursor"]


async def test_a_walk_sees_each_steady_member_once_while_customers_change(
    crowd: tuple[str, AsyncEngine, list[uuid.UUID]],
) -> None:
    url, engine, ids = crowd
    app = create_app(load_settings(database_url=url, cache_url="memory://"))
    async with lifespan(app), api_client(app) as client:
        saved = await gql(
            client,
            'mutation($f: SegmentFilter!) { saveSegment(name: "walked", filter: $f) { name } }',
            f=DEFINITION,
        )
        assert "errors" not in saved, saved
        before = await members(engine, DEFINITION, include_suppressed=False)
        churn = Churn(engine, list(ids))
        walked, pages = await _walk(client, churn)
    after = await members(engine, DEFINITION, include_suppressed=False)

    assert pages >= 8
    assert churn.rounds == pages
    assert walked == sorted(set(walked)), "a customer seen twice, or out of id order"
    steady = (before & after) - churn.touched
    assert len(steady) > 0.9 * len(before)
    assert steady <= set(walked), f"{len(steady - set(walked))} steady members skipped"
    never = set(walked) - before - after - churn.touched
    assert not never, f"{len(never)} customers seen that never were members"
    # The changes reached members on both sides of the cursor, so the walk met some.
    assert churn.touched & set(walked)
    assert churn.touched & (before | after)

"""The stored shop the build and refresh tests score: 400 customers with a synthetic
purchase history, each order seen twice (shop webhook and analytics call), and one
customer who never ordered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Customer, Event
from gateway.scores.ledger import date_of
from gateway.scores.model_seal import model_key
from gateway.scores.store import ScoreStore
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.scores.synthetic import START, history

NOW = datetime(2026, 12, 1, tzinfo=UTC)
# The tests' deployment secret, passed explicitly as every caller passes its own.
TEST_MODEL_KEY = model_key("the scores tests' erasure key")


@pytest.fixture(params=["sqlite", "postgres"])
async def shop(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database of its own on each backend, holding the shop: a build
    scores every customer stored."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'scores.db'}"
    else:
        url = await asyncio.to_thread(create_postgres_database, "gateway_test_scores")
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    ledger = history(400, days=540)
    shift = (NOW.date() - date_of(START + 540)).days
    ids = {key: uuid.uuid4() for key in ledger.keys}
    async with sessions.begin() as session:
        session.add_all(Customer(id=i, email=f"{k}@example.com") for k, i in ids.items())
        session.add(Customer(id=uuid.uuid4(), email="never@example.com"))  # no order
    async with sessions.begin() as session:
        for n, (c, day, amount) in enumerate(
            zip(ledger.customer, ledger.day, ledger.amount, strict=True)
        ):
            at = datetime.combine(date_of(int(day) + shift), datetime.min.time(), UTC)
            customer = ids[ledger.keys[int(c)]]
            session.add(
                Event(
                    customer_id=customer,
                    source="shopify",
                    event_id=f"o{n}",
                    type="orders/create",
                    occurred_at=at,
                    properties={"order_id": str(n), "total_price": f"{amount:.2f}"},
                )
            )
            # The same order seen through Segment counts once.
            session.add(
                Event(
                    customer_id=customer,
                    source="segment",
                    event_id=f"s{n}",
                    type="track:Order Completed",
                    occurred_at=at + timedelta(minutes=1),
                    properties={"event": "Order Completed", "properties": {"order_id": str(n)}},
                )
            )
    await engine.dispose()
    yield url
    if request.param == "postgres":
        await asyncio.to_thread(drop_postgres_database, url)


@pytest.fixture
async def store(shop: str) -> AsyncIterator[ScoreStore]:
    engine = create_engine(shop)
    yield ScoreStore(create_sessionmaker(engine), TEST_MODEL_KEY)
    await engine.dispose()

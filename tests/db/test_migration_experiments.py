"""Migration 0014 (experiments, impressions, clicks), on Postgres and SQLite: up from
0013 with data in place, its rows tied to their customer and click event (gone with
them, moved by a merge), down to 0013 leaving everything else as it was, up again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, delete, func, inspect, select
from sqlalchemy.engine import Connection

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import downgrade, upgrade
from gateway.db.models import Customer, Event
from gateway.db.recommendation_models import (
    Experiment,
    RecommendationClick,
    RecommendationImpression,
)
from gateway.identity.merges import merge_customers
from tests.db.test_migrations import empty_database  # noqa: F401 (the fixture)

NEW = {"experiments", "recommendation_impressions", "recommendation_clicks"}
AT = datetime(2026, 12, 5, 12, tzinfo=UTC)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _run(url: str, step: Any) -> Any:
    engine = create_engine(url)
    try:
        return await step(engine)
    finally:
        await engine.dispose()


async def _customers(engine: Any) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(Customer)) or 0)


async def _served(engine: Any) -> tuple[uuid.UUID, uuid.UUID, int]:
    """Two customers; the first served a list and clicking it (one event)."""
    first, second = uuid.uuid4(), uuid.uuid4()
    tag = uuid.uuid4().hex[:8]
    async with engine.begin() as connection:
        await connection.execute(
            _table(Customer).insert(),
            [{"id": c, "created_at": AT, "updated_at": AT} for c in (first, second)],
        )
        event = (
            await connection.execute(
                _table(Event).insert().returning(Event.id),
                [
                    {
                        "customer_id": first,
                        "source": "sendgrid",
                        "event_id": uuid.uuid4().hex,
                        "type": "email:click",
                        "occurred_at": AT,
                        "properties": {},
                        "received_at": AT,
                    }
                ],
            )
        ).scalar_one()
        await connection.execute(
            _table(Experiment).insert(),
            [
                {
                    "name": tag,
                    "variants": [["a", "model", 1.0], ["b", "none", 1.0]],
                    "start_at": AT,
                    "end_at": AT,
                    "created_at": AT,
                    "updated_at": AT,
                }
            ],
        )
        await connection.execute(
            _table(RecommendationImpression).insert(),
            [
                {
                    "list_id": f"{tag}{n}",
                    "customer_id": first,
                    "served_at": AT,
                    "surface": "api",
                    "strategy": "model",
                    "experiment": tag,
                    "variant": "a",
                    "send_id": None,
                    "items": ["1", "2"],
                }
                for n in range(2)
            ],
        )
        await connection.execute(
            _table(RecommendationClick).insert(),
            [
                {
                    "event_id": event,
                    "list_id": f"{tag}0",
                    "position": 1,
                    "customer_id": first,
                    "send_id": "s",
                    "clicked_at": AT,
                }
            ],
        )
    return first, second, event


async def _counts(engine: Any, customer: uuid.UUID) -> tuple[int, int]:
    async with engine.connect() as connection:
        lists = await connection.scalar(
            select(func.count()).where(RecommendationImpression.customer_id == customer)
        )
        clicks = await connection.scalar(
            select(func.count()).where(RecommendationClick.customer_id == customer)
        )
    return int(lists or 0), int(clicks or 0)


async def _ties(engine: Any) -> None:
    first, second, event = await _served(engine)
    # A merge moves them to the customer kept.
    await merge_customers(create_sessionmaker(engine), second, first, "test")
    assert await _counts(engine, second) == (2, 1)
    # The click goes with its event; the lists with their customer.
    async with engine.begin() as connection:
        await connection.execute(delete(Event).where(Event.id == event))
    assert await _counts(engine, second) == (2, 0)
    async with engine.begin() as connection:
        await connection.execute(delete(Customer).where(Customer.id == second))
    assert await _counts(engine, second) == (0, 0)


def test_0014_up_and_down(empty_database: str) -> None:  # noqa: F811
    upgrade(empty_database, "0013")
    upgrade(empty_database)
    tables = asyncio.run(_run(empty_database, _tables_of))
    assert tables >= NEW
    asyncio.run(_run(empty_database, _ties))
    asyncio.run(_run(empty_database, _served))
    before = asyncio.run(_run(empty_database, _customers))
    downgrade(empty_database, "0013")
    assert not asyncio.run(_run(empty_database, _tables_of)) & NEW
    assert asyncio.run(_run(empty_database, _customers)) == before  # nothing else touched
    upgrade(empty_database)
    assert asyncio.run(_run(empty_database, _tables_of)) >= NEW


async def _tables_of(engine: Any) -> set[str]:
    async with engine.connect() as connection:
        found: set[str] = await connection.run_sync(_tables)
    return found

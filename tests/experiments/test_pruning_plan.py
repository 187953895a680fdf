"""Pruning old impressions (gateway/experiments/pruning.py) finds them through the
``(experiment, served_at)`` index, one range per experiment name, lists served outside
any experiment (NULL, most of the table) included: no range may scan the table."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Customer
from gateway.db.recommendation_models import RecommendationImpression as Impression
from gateway.experiments.pruning import _ranges


def test_every_range_pruning_reads_is_found_through_the_index(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    upgrade(url)

    async def plans() -> list[str]:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                customer = uuid.uuid4()
                await connection.execute(insert(Customer).values(id=customer))
                for n, experiment in enumerate((None, "a", "b")):
                    await connection.execute(
                        insert(Impression).values(
                            list_id=f"l{n}",
                            customer_id=customer,
                            served_at=datetime(2026, 1, 1, tzinfo=UTC),
                            surface="api",
                            strategy="model",
                            experiment=experiment,
                            items=[],
                        )
                    )
                found = []
                async for clause in _ranges(connection):
                    query = select(func.count()).where(
                        clause, Impression.served_at < datetime(2026, 6, 1, tzinfo=UTC)
                    )
                    sql = str(
                        query.compile(
                            dialect=connection.dialect, compile_kwargs={"literal_binds": True}
                        )
                    )
                    rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
                    found.append(" ".join(str(row[-1]) for row in rows))
                return found
        finally:
            await engine.dispose()

    found = asyncio.run(plans())
    assert len(found) == 3  # NULL, "a", "b"
    for plan in found:
        assert "INDEX ix_recommendation_impressions_experiment" in plan, plan

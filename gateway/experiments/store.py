"""Saved experiments (the repository; sessions passed in).

One experiment serves recommendations at a time: a customer in two running experiments
would be served by one of them only, and the other's results would measure nothing. So
an experiment whose window overlaps another's is refused, naming it. Saving under an
existing name replaces that experiment (its results count what was served inside its
new window, under its variants' names).
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.bulk import is_postgres
from gateway.db.models import utcnow
from gateway.db.recommendation_models import Experiment as ExperimentRow
from gateway.errors import Conflict
from gateway.experiments.assignment import Experiment, experiment


class ExperimentStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def all(self) -> list[Experiment]:
        """Every saved experiment, earliest start first."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(ExperimentRow).order_by(ExperimentRow.start_at, ExperimentRow.name)
            )
            return [_of(row) for row in rows]

    async def get(self, name: str) -> Experiment | None:
        async with self.sessions() as session:
            row = await session.get(ExperimentRow, name.strip())
            return _of(row) if row is not None else None

    async def save(self, found: Experiment) -> Experiment:
        """Store a validated experiment (``assignment.experiment``), replacing one of the
        same name; ``Conflict`` when another one's window overlaps it."""
        async with self.sessions.begin() as session:
            connection = await session.connection()
            if is_postgres(connection):
                # Two saves at once on two instances: one checks after the other wrote.
                await connection.execute(text("LOCK TABLE experiments IN EXCLUSIVE MODE"))
            overlapping = await session.scalar(
                select(ExperimentRow.name)
                .where(
                    ExperimentRow.name != found.name,
                    ExperimentRow.start_at < found.end,
                    ExperimentRow.end_at > found.start,
                )
                .order_by(ExperimentRow.start_at)
                .limit(1)
            )
            if overlapping is not None:
                raise Conflict(
                    f"Experiment '{overlapping}' runs in part of that time; one experiment "
                    "serves recommendations at a time",
                    field="start",
                )
            now = utcnow()
            values = {
                "name": found.name,
                "variants": [[v.name, v.strategy, v.weight] for v in found.variants],
                "start_at": found.start,
                "end_at": found.end,
                "created_at": now,
                "updated_at": now,
            }
            dialect_insert = postgres_insert if is_postgres(connection) else sqlite_insert
            statement = dialect_insert(ExperimentRow).values(values)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["name"],
                    set_={
                        name: statement.excluded[name]
                        for name in ("variants", "start_at", "end_at", "updated_at")
                    },
                )
            )
        return found


def _of(row: ExperimentRow) -> Experiment:
    variants = [
        (str(name), str(strategy), float(weight)) for name, strategy, weight in row.variants
    ]
    return experiment(row.name, variants, row.start_at, row.end_at)

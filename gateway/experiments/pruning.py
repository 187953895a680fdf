"""Served lists (impressions) older than the retention window, removed in slices.

The table has no index on ``served_at`` alone, and gets none: every served list is a row
written, and another index would be paid on each of them. The ``(experiment,
served_at)`` index finds them instead: one range of it per experiment name, NULL (lists
served outside any experiment) included, the names themselves read by skipping through
the index (one seek per name, not a scan of the table).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gateway.db.recommendation_models import RecommendationImpression as Impression

SLICE = 5000


async def count_old(sessions: async_sessionmaker[AsyncSession], cutoff: datetime) -> int:
    """How many lists were served before ``cutoff``."""
    total = 0
    async with sessions() as session:
        connection = await session.connection()
        async for clause in _ranges(connection):
            query = select(func.count()).where(clause, Impression.served_at < cutoff)
            total += int(await connection.scalar(query) or 0)
    return total


async def remove_old(sessions: async_sessionmaker[AsyncSession], cutoff: datetime) -> int:
    """Delete the lists served before ``cutoff``, ``SLICE`` a transaction; how many."""
    async with sessions() as session:
        names = [clause async for clause in _ranges(await session.connection())]
    done = 0
    for clause in names:
        while True:
            async with sessions.begin() as session:
                ids = list(
                    await session.scalars(
                        select(Impression.list_id)
                        .where(clause, Impression.served_at < cutoff)
                        .limit(SLICE)
                    )
                )
                if not ids:
                    break
                await session.execute(delete(Impression).where(Impression.list_id.in_(ids)))
            done += len(ids)
    return done


async def _ranges(connection: AsyncConnection) -> AsyncIterator[Any]:
    """A WHERE clause per experiment name in the table (lists outside any first)."""
    yield Impression.experiment.is_(None)
    last: str | None = None
    while True:
        query = select(Impression.experiment).where(Impression.experiment.is_not(None))
        if last is not None:
            query = query.where(Impression.experiment > last)
        last = await connection.scalar(query.order_by(Impression.experiment).limit(1))
        if last is None:
            return
        yield Impression.experiment == last

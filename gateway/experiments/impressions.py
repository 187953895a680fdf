"""Every served recommendation list, recorded without a round trip per request.

Serving queues a row (list id, customer, strategy, experiment and variant, send, items)
and returns; the rows are written in bulk every ``flush_interval_s`` through the same
buffer as the audit log (gateway/row_buffer.py). A customer erased (or merged away)
between serving and the write leaves a row the foreign key refuses: the batch is then
written without that customer's rows, rather than retried for ever.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Customer
from gateway.db.recommendation_models import RecommendationImpression
from gateway.row_buffer import RowBuffer

logger = logging.getLogger("gateway.impressions")
_CHUNK = 200  # rows per statement: the loop serves requests between them (as the audit log)
_IDS_PER_QUERY = 500
_INSERT = insert(cast(Table, RecommendationImpression.__table__))
SURFACES = ("graphql", "api", "render")


@dataclass(frozen=True, slots=True)
class Impression:
    list_id: str
    customer_id: uuid.UUID
    served_at: datetime
    surface: str
    strategy: str
    experiment: str | None
    variant: str | None
    send_id: str | None
    items: tuple[str, ...]


class ImpressionLog:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        flush_interval_s: float = 1.0,
        *,
        enabled: bool = True,
    ) -> None:
        self._sessions = sessions
        self.enabled = enabled
        self._buffer = RowBuffer(
            self._write, name="impressions", logger=logger, interval_s=flush_interval_s
        )

    def record(self, impression: Impression) -> None:
        """Queue one served list; returns at once."""
        if not self.enabled:
            return
        self._buffer.add(
            (
                {
                    "list_id": impression.list_id,
                    "customer_id": impression.customer_id,
                    "served_at": impression.served_at,
                    "surface": impression.surface,
                    "strategy": impression.strategy,
                    "experiment": impression.experiment,
                    "variant": impression.variant,
                    "send_id": impression.send_id,
                    "items": list(impression.items),
                },
            )
        )

    async def flush(self) -> None:
        """Write everything queued so far (results read after this see this process's)."""
        await self._buffer.flush()

    async def aclose(self) -> None:
        await self._buffer.aclose()

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            await self._insert(batch)
        except IntegrityError:
            # A customer gone since: keep the rows of those still stored.
            kept = await self._of_existing(batch)
            if len(kept) < len(batch):
                logger.info(
                    "impressions of customers erased or merged meanwhile not written",
                    extra={"dropped": len(batch) - len(kept)},
                )
            await self._insert(kept)

    async def _insert(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        async with self._sessions.begin() as session:
            for start in range(0, len(batch), _CHUNK):
                await session.execute(_INSERT, batch[start : start + _CHUNK])

    async def _of_existing(self, batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = list({row["customer_id"] for row in batch})
        found: set[uuid.UUID] = set()
        async with self._sessions() as session:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                part = ids[start : start + _IDS_PER_QUERY]
                found.update(
                    await session.scalars(select(Customer.id).where(Customer.id.in_(part)))
                )
        return [row for row in batch if row["customer_id"] in found]

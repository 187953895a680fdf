"""The scores' SQL: orders and engagement read from the stored events, the computed
rows written in bulk, the propensity models kept and chosen.

Orders are events: Shopify ``orders/*`` webhooks (``order_id``, ``total_price``) and
Segment ``Order Completed`` calls (``properties.order_id``, ``properties.total`` or
``revenue``); an order seen through both counts once, at its earliest time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.bulk import insert_tuples
from gateway.db.models import Customer, Event
from gateway.db.score_models import CustomerScore, ScoreModel
from gateway.scores.ledger import Ledger, day_of, ledger_from

ORDER_TYPES = ("orders/create", "orders/paid", "orders/updated", "track:Order Completed")
_BEHAVIOURAL = or_(Event.type.like("track:%"), Event.type == "page")
_TABLE: Table = CustomerScore.__table__  # type: ignore[assignment]
COLUMNS = tuple(c.name for c in _TABLE.columns)


@dataclass(frozen=True)
class CustomerScores:
    """One customer's stored traits and scores, as served."""

    recency_days: int | None
    frequency: int
    monetary: float
    average_order_value: float | None
    days_between_orders: float | None
    rfm_segment: str | None
    engagement_30d: int
    engagement_90d: int
    purchase_propensity: float | None
    churn_risk: float | None
    model_version: str
    computed_at: datetime

    @classmethod
    def of(cls, row: CustomerScore) -> CustomerScores:
        return cls(
            row.recency_days,
            row.frequency,
            row.monetary,
            row.average_order_value,
            row.days_between_orders,
            row.rfm_segment,
            row.engagement_30d,
            row.engagement_90d,
            row.purchase_propensity,
            row.churn_risk,
            row.model_version,
            row.computed_at,
        )

    def liquid(self) -> dict[str, Any]:
        """As a template reads it: ``customer.scores.purchase_propensity``."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class StoredModel:
    version: str
    horizon_days: int
    evaluation: dict[str, Any]
    estimator: bytes


def _number(*values: Any) -> float:
    for value in values:
        try:
            if value is not None:
                return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0


class ScoreStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def ledger(self, events_since: datetime) -> Ledger:
        """Every customer (those without an order too), their orders, and their
        behavioural events from ``events_since`` on."""
        props = Event.properties
        inner = props["properties"]
        orders = select(
            Event.customer_id,
            Event.occurred_at,
            props["order_id"].as_string(),
            inner["order_id"].as_string(),
            props["total_price"].as_string(),
            inner["total"].as_string(),
            inner["revenue"].as_string(),
        ).where(Event.customer_id.is_not(None), Event.type.in_(ORDER_TYPES))
        events = select(Event.customer_id, Event.occurred_at).where(
            Event.customer_id.is_not(None), _BEHAVIOURAL, Event.occurred_at >= events_since
        )
        async with self._sessions() as session:
            keys = [str(k) for k in (await session.scalars(select(Customer.id))).all()]
            seen: dict[tuple[str, str], tuple[int, float]] = {}
            anonymous = 0
            for customer, at, order, inner_order, total, inner_total, revenue in (
                await session.execute(orders)
            ).all():
                key = order or inner_order
                if key is None:
                    anonymous += 1
                    key = f"#{anonymous}"
                day = day_of(at)
                found = seen.get((str(customer), key))
                if found is None or day < found[0]:
                    seen[(str(customer), key)] = (day, _number(total, inner_total, revenue))
            rows = [(customer, day, amount) for (customer, _), (day, amount) in seen.items()]
            behaviour = [
                (str(customer), day_of(at)) for customer, at in (await session.execute(events))
            ]
        return ledger_from(rows, behaviour, keys)

    async def replace_scores(self, records: Sequence[tuple[Any, ...]]) -> None:
        """All the rows (tuples in ``COLUMNS`` order) in place of the old, at once."""
        async with self._sessions.begin() as session:
            connection = await session.connection()
            await connection.execute(delete(CustomerScore))
            await insert_tuples(connection, _TABLE, COLUMNS, records)

    async def active_model(self) -> StoredModel | None:
        async with self._sessions() as session:
            row = await session.scalar(select(ScoreModel).where(ScoreModel.active.is_(True)))
            if row is None:
                return None
            return StoredModel(row.version, row.horizon_days, row.evaluation, row.estimator)

    async def save_model(self, model: StoredModel, *, active: bool) -> None:
        async with self._sessions.begin() as session:
            if active:
                await session.execute(update(ScoreModel).values(active=False))
            session.add(
                ScoreModel(
                    version=model.version,
                    horizon_days=model.horizon_days,
                    evaluation=model.evaluation,
                    estimator=model.estimator,
                    active=active,
                )
            )

    async def scores_for(
        self, customer_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, CustomerScores]:
        """The stored scores of these customers (absent: not scored yet), in one query."""
        if not customer_ids:
            return {}
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CustomerScore).where(CustomerScore.customer_id.in_(customer_ids))
            )
            return {row.customer_id: CustomerScores.of(row) for row in rows}

    async def segments(self) -> list[tuple[str, int]]:
        """Each RFM segment of the last build and how many customers it holds, largest
        first (customers without an order have none)."""
        size = func.count().label("size")
        async with self._sessions() as session:
            rows = await session.execute(
                select(CustomerScore.rfm_segment, size)
                .where(CustomerScore.rfm_segment.is_not(None))
                .group_by(CustomerScore.rfm_segment)
                .order_by(size.desc(), CustomerScore.rfm_segment)
            )
            return [(str(name), int(count)) for name, count in rows]

    async def segment_sample(self, segment: str, size: int) -> list[uuid.UUID]:
        """Up to ``size`` customers of one RFM segment, the same ones each time (by id),
        so a preview can be looked at again."""
        async with self._sessions() as session:
            found = await session.scalars(
                select(CustomerScore.customer_id)
                .where(CustomerScore.rfm_segment == segment)
                .order_by(CustomerScore.customer_id)
                .limit(size)
            )
            return list(found)

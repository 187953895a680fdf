"""Reading and replacing the stored model (the repository; sessions passed in)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Customer
from gateway.db.recommendation_models import (
    RecommendationItem,
    RecommendationList,
    RecommendationModel,
    RecommendationNeighbour,
)

_BATCH = 5000
_IDS_PER_QUERY = 500  # bound parameters per statement stay far below any database's cap


@dataclass(frozen=True, slots=True)
class Candidate:
    """A product the model ranks for a customer, before stock and purchase filters."""

    product_id: str
    score: float
    category: str | None
    reason: str  # bought_with | viewed_with | popular_in | trending
    anchor: str | None = None  # the customer's product the reason names

    def as_row(self) -> list[Any]:
        return [self.product_id, round(self.score, 6), self.category, self.reason, self.anchor]

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Candidate:
        return cls(str(row[0]), float(row[1]), row[2], str(row[3]), row[4])


@dataclass(frozen=True, slots=True)
class CustomerList:
    candidates: tuple[Candidate, ...]
    purchased: frozenset[str]


@dataclass(frozen=True, slots=True)
class ModelRows:
    """Everything one build writes."""

    lists: dict[uuid.UUID, CustomerList]
    items: list[dict[str, Any]]  # product_id, category, popularity, trending
    neighbours: list[dict[str, Any]]  # product_id, neighbour_id, score
    label: str = "item_to_item"
    reason: str = ""
    selection: dict[str, Any] = field(default_factory=dict)  # Selection.record()


@dataclass(frozen=True, slots=True)
class StoredModel:
    label: str
    reason: str
    selection: dict[str, Any]
    built_at: datetime


class RecommendationStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def customer_list(self, customer_id: uuid.UUID) -> CustomerList | None:
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(RecommendationList.items, RecommendationList.purchased).where(
                        RecommendationList.customer_id == customer_id
                    )
                )
            ).first()
        if row is None:
            return None
        items, purchased = row
        return CustomerList(
            tuple(Candidate.of_row(r) for r in items), frozenset(str(p) for p in purchased)
        )

    async def customer_lists(
        self, customer_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, CustomerList]:
        """Many customers' lists in one query per 500 ids (absent: no stored list)."""
        found: dict[uuid.UUID, CustomerList] = {}
        ids = list(dict.fromkeys(customer_ids))
        async with self.sessions() as session:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                rows = await session.execute(
                    select(
                        RecommendationList.customer_id,
                        RecommendationList.items,
                        RecommendationList.purchased,
                    ).where(RecommendationList.customer_id.in_(ids[start : start + _IDS_PER_QUERY]))
                )
                for customer_id, items, purchased in rows:
                    found[customer_id] = CustomerList(
                        tuple(Candidate.of_row(r) for r in items),
                        frozenset(str(p) for p in purchased),
                    )
        return found

    async def model(self) -> StoredModel | None:
        """Which model the last build chose, and why (None before the first build)."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(
                        RecommendationModel.label,
                        RecommendationModel.reason,
                        RecommendationModel.selection,
                        RecommendationModel.built_at,
                    )
                    .order_by(RecommendationModel.built_at.desc())
                    .limit(1)
                )
            ).first()
        return StoredModel(*row) if row else None

    async def popular(self, category: str | None, limit: int) -> list[Candidate]:
        """Recent best sellers ("trending"), or a category's best sellers of all time."""
        # Trending first; all-time best sellers break ties (and fill a quiet fortnight).
        order = [RecommendationItem.trending.desc(), RecommendationItem.popularity.desc()]
        if category is not None:
            order = [RecommendationItem.popularity.desc()]
        query = select(
            RecommendationItem.product_id,
            RecommendationItem.category,
            RecommendationItem.popularity,
            RecommendationItem.trending,
        )
        if category is not None:
            query = query.where(RecommendationItem.category == category)
        query = query.order_by(*order, RecommendationItem.product_id).limit(limit)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            Candidate(
                product_id,
                trending if category is None else pop,
                found_category,
                "trending" if category is None else "popular_in",
            )
            for product_id, found_category, pop, trending in rows
        ]

    async def neighbours(self, product_ids: Sequence[str]) -> list[tuple[str, str, float]]:
        """(product, neighbour, score) for these products' stored neighbours."""
        found: list[tuple[str, str, float]] = []
        wanted = list(dict.fromkeys(product_ids))
        async with self.sessions() as session:
            for start in range(0, len(wanted), _IDS_PER_QUERY):
                query = select(
                    RecommendationNeighbour.product_id,
                    RecommendationNeighbour.neighbour_id,
                    RecommendationNeighbour.score,
                ).where(
                    RecommendationNeighbour.product_id.in_(wanted[start : start + _IDS_PER_QUERY])
                )
                found += [(a, b, float(s)) for a, b, s in (await session.execute(query)).all()]
        return found

    async def categories(self, product_ids: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        wanted = list(dict.fromkeys(product_ids))
        async with self.sessions() as session:
            for start in range(0, len(wanted), _IDS_PER_QUERY):
                query = select(RecommendationItem.product_id, RecommendationItem.category).where(
                    RecommendationItem.product_id.in_(wanted[start : start + _IDS_PER_QUERY])
                )
                found.update((p, c) for p, c in (await session.execute(query)).all())
        return found

    async def replace(self, rows: ModelRows) -> int:
        """Swap the stored model for this one in one transaction; returns lists written
        (customers erased since the history was read are left out)."""
        built_at = datetime.now(UTC)
        async with self.sessions.begin() as session:
            existing = set(await session.scalars(select(Customer.id)))
            for table in (
                RecommendationList,
                RecommendationItem,
                RecommendationNeighbour,
                RecommendationModel,
            ):
                await session.execute(delete(table))
            lists = [
                {
                    "customer_id": customer_id,
                    "items": [c.as_row() for c in found.candidates],
                    "purchased": sorted(found.purchased),
                    "built_at": built_at,
                }
                for customer_id, found in rows.lists.items()
                if customer_id in existing
            ]
            model = {
                "label": rows.label[:500],
                "reason": rows.reason,
                "selection": rows.selection,
                "built_at": built_at,
            }
            for table, values in (
                (RecommendationList, lists),
                (RecommendationItem, rows.items),
                (RecommendationNeighbour, rows.neighbours),
                (RecommendationModel, [model]),
            ):
                for start in range(0, len(values), _BATCH):
                    await session.execute(insert(table), values[start : start + _BATCH])
        return len(lists)

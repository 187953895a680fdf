"""What ``gateway recs build`` stores so that serving one customer is a lookup and a filter.

Kept in its own module (same ``Base``); ``gateway.db`` imports it so Alembic sees the
tables. A build replaces all four tables in one transaction: readers see the old
model or the new one, never half of each.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, utcnow


class RecommendationList(Base):
    """One customer's ranked candidates (before stock filtering) and purchased products.

    ``items`` is a list of ``[product_id, score, category, reason, anchor_product_id]``;
    empty for a customer without personalisation consent, whose history is not profiled.
    Erasing the customer erases the row (cascade).
    """

    __tablename__ = "recommendation_lists"

    customer_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    items: Mapped[list[Any]] = mapped_column(JSON, default=list)
    purchased: Mapped[list[Any]] = mapped_column(JSON, default=list)
    built_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecommendationItem(Base):
    """A product's popularity overall and recently (``trending``), with its category."""

    __tablename__ = "recommendation_items"
    __table_args__ = (
        Index("ix_recommendation_items_category_popularity", "category", "popularity"),
        Index("ix_recommendation_items_trending", "trending"),
    )

    product_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[str | None] = mapped_column(String(100))
    popularity: Mapped[float] = mapped_column(Float)
    trending: Mapped[float] = mapped_column(Float)


class RecommendationNeighbour(Base):
    """One edge of the item-to-item similarity: customers who liked ``product_id`` also
    liked ``neighbour_id`` this much (used for send-time context)."""

    __tablename__ = "recommendation_neighbours"

    product_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    neighbour_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    score: Mapped[float] = mapped_column(Float)


class RecommendationModel(Base):
    """Which model the build chose and why: the validation of every candidate on the
    training data (``Selection.record()``), kept with the lists it produced."""

    __tablename__ = "recommendation_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label: Mapped[str] = mapped_column(String(500))
    reason: Mapped[str] = mapped_column(Text)
    selection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    built_at: Mapped[datetime] = mapped_column(default=utcnow)

"""What ``gateway recs build`` stores so that serving one customer is a lookup and a filter;
and what serving leaves behind for measuring it: experiments, every served list
(impressions) and the clicks attributed to them.

Kept in its own module (same ``Base``); ``gateway.db`` imports it so Alembic sees the
tables. A build replaces the four model tables in one transaction: readers see the old
model or the new one, never half of each. Impressions and clicks are a customer's
(erased with them, moved by a merge).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, SmallInteger, String, Text, Uuid
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


class Experiment(Base):
    """A saved experiment: its variants (``[[name, strategy, weight], …]``, the control
    first) and when it runs. Who is in which variant is a hash, never stored."""

    __tablename__ = "experiments"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    variants: Mapped[list[Any]] = mapped_column(JSON)
    start_at: Mapped[datetime] = mapped_column()
    end_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecommendationImpression(Base):
    """One served list: its id (in its items' tracking parameter), whom it was served to,
    how (``strategy``: item_to_item, popularity, model, none), under which experiment
    and variant, for which send, and its product ids in order."""

    __tablename__ = "recommendation_impressions"
    __table_args__ = (
        Index("ix_recommendation_impressions_experiment", "experiment", "served_at"),
        Index("ix_recommendation_impressions_customer_id", "customer_id"),
    )

    list_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("customers.id", ondelete="CASCADE")
    )
    served_at: Mapped[datetime] = mapped_column(default=utcnow)
    surface: Mapped[str] = mapped_column(String(16))  # graphql | api | render
    strategy: Mapped[str] = mapped_column(String(32))
    experiment: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str | None] = mapped_column(String(64))
    send_id: Mapped[str | None] = mapped_column(String(255))
    items: Mapped[list[Any]] = mapped_column(JSON, default=list)


class RecommendationClick(Base):
    """An ESP's click event whose link carried a valid tracking parameter: the list and
    position it names (the list's row may be written after the click arrives), the
    recipient, and the send the ESP's custom argument ``send_id`` names."""

    __tablename__ = "recommendation_clicks"
    __table_args__ = (
        Index("ix_recommendation_clicks_list_id", "list_id"),
        Index("ix_recommendation_clicks_customer_clicked", "customer_id", "clicked_at"),
    )

    event_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    list_id: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(SmallInteger)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("customers.id", ondelete="CASCADE")
    )
    send_id: Mapped[str | None] = mapped_column(String(255))
    clicked_at: Mapped[datetime] = mapped_column()


# A customer's rows of what was served to them: a merge moves them to the kept customer.
SERVED = (RecommendationImpression, RecommendationClick)

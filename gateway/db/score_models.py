"""What ``gateway scores build`` stores: one row of computed traits and scores per
customer, the propensity models (the one serving and those it beat or lost to), and
the saved segments. Kept in its own module (same ``Base``); ``gateway.db`` imports it
so Alembic sees the tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, utcnow


class CustomerScore(Base):
    """One customer's traits and scores as of ``computed_at``; a build replaces them all
    in one transaction. Erasing the customer erases the row (cascade)."""

    __tablename__ = "customer_scores"
    __table_args__ = (
        # Segment filters and their keyset pagination (customer_id) ride on these.
        Index("ix_customer_scores_segment", "rfm_segment", "customer_id"),
        Index("ix_customer_scores_propensity", "purchase_propensity"),
        Index("ix_customer_scores_churn", "churn_risk"),
    )

    customer_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    recency_days: Mapped[int | None] = mapped_column(Integer)
    frequency: Mapped[int] = mapped_column(Integer)
    monetary: Mapped[float] = mapped_column(Float)
    average_order_value: Mapped[float | None] = mapped_column(Float)
    days_between_orders: Mapped[float | None] = mapped_column(Float)
    r_score: Mapped[int] = mapped_column(SmallInteger)
    f_score: Mapped[int] = mapped_column(SmallInteger)
    m_score: Mapped[int] = mapped_column(SmallInteger)
    rfm_segment: Mapped[str | None] = mapped_column(String(32))
    engagement_30d: Mapped[int] = mapped_column(Integer)
    engagement_90d: Mapped[int] = mapped_column(Integer)
    purchase_propensity: Mapped[float | None] = mapped_column(Float)
    churn_risk: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScoreModel(Base):
    """A trained propensity model with its evaluation on its holdout; ``active`` marks
    the one serving. ``estimator`` is the fitted scikit-learn object (joblib bytes),
    written and read only by the gateway itself."""

    __tablename__ = "score_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    trained_at: Mapped[datetime] = mapped_column(default=utcnow)
    horizon_days: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    evaluation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    estimator: Mapped[bytes] = mapped_column(LargeBinary)


class Segment(Base):
    """A saved audience: a typed filter (``definition``), never SQL."""

    __tablename__ = "segments"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    include_suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScoreBuild(Base):
    """What one full build fixed for the rows it wrote, so ``gateway scores refresh``
    scores a changed customer the same way: the RFM quintile boundaries, the BG/NBD
    fit, the feature names, the horizon and the model version. The latest row serves."""

    __tablename__ = "score_builds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    built_at: Mapped[datetime] = mapped_column(default=utcnow)
    horizon_days: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

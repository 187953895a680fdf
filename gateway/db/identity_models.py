"""Identity-resolution tables: what each source record said, how it was linked, and why.

Kept beside ``models.py`` (same ``Base``) so the identity work can change without
touching the profile schema; ``gateway.db`` imports this module so Alembic sees it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, utcnow


class IdentityRecord(Base):
    """The comparison keys of the latest record seen for one identity (folded, no raw PII
    beyond what ``attributes`` holds); the linker matches new records against these."""

    __tablename__ = "identity_records"

    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True
    )
    email_key: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    date_of_birth: Mapped[str | None] = mapped_column(String(8))
    address: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(String(200))
    postcode: Mapped[str | None] = mapped_column(String(32))
    observed_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdentityBlockKey(Base):
    """One blocking key of one identity (hashed): only records sharing a key are compared."""

    __tablename__ = "identity_block_keys"

    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True
    )
    key_hash: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)


class IdentityLink(Base):
    """Evidence: which rule (and score) put this identity into this customer, and when."""

    __tablename__ = "identity_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Only identity_id is a foreign key: deleting a customer cascades through its identities
    # to these rows anyway, and every key checked costs a bulk import dearly.
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), index=True
    )
    matched_identity_id: Mapped[int | None] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float)  # match probability (probabilistic)
    reason: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[int | None] = mapped_column(Integer)  # the model that scored it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)


class IdentityReview(Base):
    """A possible match that was not merged, for a person to judge: a pair in the review
    band, a merge a name or the clusters as wholes vetoed, or one over the identity limit.
    ``status`` is open, merged (by a person or a later merge) or kept_apart."""

    __tablename__ = "identity_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), index=True
    )
    candidate_customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    # The record it was compared with (None for the identity limit: no one pair).
    candidate_identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), index=True
    )
    score: Mapped[float | None] = mapped_column(Float)  # match probability
    levels: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # field -> comparison level
    model_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolved_by: Mapped[str | None] = mapped_column(String(100))  # API key name, never a secret
    resolution_reason: Mapped[str | None] = mapped_column(String(200))


class IdentityNeverLink(Base):
    """Two identities a person judged to be different people: the linker never puts them
    in one customer, directly or through others (``KEEP_APART``)."""

    __tablename__ = "identity_never_links"
    __table_args__ = (Index("ix_identity_never_links_other", "other_identity_id"),)

    # The smaller identity id first, so one pair has one row.
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True
    )
    other_identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True
    )
    review_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdentityModel(Base):
    """One version of the linkage model: Splink's settings JSON with the trained m, u and
    λ, the term frequencies, and the probability thresholds.  The active one links."""

    __tablename__ = "identity_models"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    term_frequencies: Mapped[dict[str, Any]] = mapped_column(JSON)
    match_probability: Mapped[float] = mapped_column(Float)
    review_probability: Mapped[float] = mapped_column(Float)
    trained: Mapped[dict[str, Any]] = mapped_column(JSON)  # records, source, seconds, notes
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

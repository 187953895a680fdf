"""Access and erasure bookkeeping: API keys (hashed) and tombstones of erased customers.

Kept apart from the profile schema: neither table holds customer data. A key row
stores only a hash of the secret; a tombstone only a keyed hash of an identifier.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, utcnow


class ApiKey(Base):
    """One client's credential: its scopes and limit; the secret itself is never stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Tombstone(Base):
    """An identifier of an erased customer, as a keyed hash: it blocks re-creation
    from a later sync, webhook or import without keeping the identifier itself."""

    __tablename__ = "tombstones"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)

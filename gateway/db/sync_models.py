"""Incremental-sync bookkeeping: how far each upstream's change feed has been read.

Kept in its own module (same ``Base``) so sync can change without touching the
profile or identity schemas; ``gateway.db`` imports it so Alembic sees the table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, utcnow


class SyncCursor(Base):
    """The upstream modification time up to which one source has been read and committed."""

    __tablename__ = "sync_cursors"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

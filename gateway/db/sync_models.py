"""Incremental-sync bookkeeping: how far each upstream's change feed has been read, and
what each run did.

Kept in its own module (same ``Base``) so sync can change without touching the
profile or identity schemas; ``gateway.db`` imports it so Alembic sees the table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, utcnow


class SyncCursor(Base):
    """The upstream modification time up to which one source has been read and committed."""

    __tablename__ = "sync_cursors"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncRun(Base):
    """One source's finished sync run: its reconciliation line, for operators (the
    console's health page); counts and a checksum of ids, never the data."""

    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_source_finished", "source", "finished_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    source: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # ok | failed | skipped
    reconciled: Mapped[str] = mapped_column(String(16))  # match | mismatch | unverified
    line: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)

"""Warehouse-export bookkeeping: how far each table has been exported to each target, and
the rows deleted since (the tombstone rows an incremental export writes).

Kept in its own module (same ``Base``) so the export can change without touching the
profile schema; ``gateway.db`` imports it so Alembic sees the tables.  Migration 0011
adds ``changed_at`` to the exported tables and the triggers that keep it and
``export_deletions`` current: every writer (ORM, bulk, raw SQL, a cascade) is covered
without having to remember it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, utcnow


class ExportCursor(Base):
    """Everything of ``table_name`` changed before ``cursor`` is in ``target``'s files."""

    __tablename__ = "export_cursors"

    target: Mapped[str] = mapped_column(String(1000), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[datetime] = mapped_column()
    run_id: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExportDeletion(Base):
    """One row deleted from an exported table (by a trigger): its key, never its data."""

    __tablename__ = "export_deletions"
    __table_args__ = (Index("ix_export_deletions_table_deleted", "table_name", "deleted_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    table_name: Mapped[str] = mapped_column(String(64))
    row_id: Mapped[str] = mapped_column(String(64))
    deleted_at: Mapped[datetime] = mapped_column(server_default=func.now())

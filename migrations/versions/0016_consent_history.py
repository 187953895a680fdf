"""every consent statement, not only each purpose's latest: consent_history

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05

``consents`` keeps one current row per customer and purpose, so an earlier statement was
lost when a newer one replaced it (only the audit log said a change was made, not what).
A steward asking "when did this person opt out, and who said so" needs each statement:
``consent_history`` gets one row per statement recorded from now on, and each current
statement is copied in as its first row. Erased with the customer (cascade).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_consent_history_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_history")),
    )
    op.create_index(
        "ix_consent_history_customer",
        "consent_history",
        ["customer_id", "purpose", "recorded_at"],
    )
    op.execute(
        "INSERT INTO consent_history (customer_id, purpose, granted, source, recorded_at) "
        "SELECT customer_id, purpose, granted, source, recorded_at FROM consents"
    )


def downgrade() -> None:
    op.drop_index("ix_consent_history_customer", table_name="consent_history")
    op.drop_table("consent_history")

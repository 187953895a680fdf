"""what each full scores build fixed, for the incremental refresh

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04

``gateway scores refresh`` rescores only customers whose events changed since their
row was computed; to score them as the build scored everyone else it needs that
build's RFM quintile boundaries, BG/NBD fit, feature names, horizon and model version.
Each build writes one row here; the latest serves.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "score_builds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score_builds")),
    )


def downgrade() -> None:
    op.drop_table("score_builds")

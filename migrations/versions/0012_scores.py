"""customer_scores, score_models, segments: computed traits and purchase propensity per
customer, the propensity models with their evaluations, and saved segments

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_scores",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("recency_days", sa.Integer(), nullable=True),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("monetary", sa.Float(), nullable=False),
        sa.Column("average_order_value", sa.Float(), nullable=True),
        sa.Column("days_between_orders", sa.Float(), nullable=True),
        sa.Column("r_score", sa.SmallInteger(), nullable=False),
        sa.Column("f_score", sa.SmallInteger(), nullable=False),
        sa.Column("m_score", sa.SmallInteger(), nullable=False),
        sa.Column("rfm_segment", sa.String(length=32), nullable=True),
        sa.Column("engagement_30d", sa.Integer(), nullable=False),
        sa.Column("engagement_90d", sa.Integer(), nullable=False),
        sa.Column("purchase_propensity", sa.Float(), nullable=True),
        sa.Column("churn_risk", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_scores_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_scores")),
    )
    op.create_index("ix_customer_scores_segment", "customer_scores", ["rfm_segment", "customer_id"])
    op.create_index("ix_customer_scores_propensity", "customer_scores", ["purchase_propensity"])
    op.create_index("ix_customer_scores_churn", "customer_scores", ["churn_risk"])
    op.create_table(
        "score_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("evaluation", sa.JSON(), nullable=False),
        sa.Column("estimator", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score_models")),
        sa.UniqueConstraint("version", name=op.f("uq_score_models_version")),
    )
    op.create_table(
        "segments",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("include_suppressed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_segments")),
    )


def downgrade() -> None:
    op.drop_table("segments")
    op.drop_table("score_models")
    op.drop_index("ix_customer_scores_churn", table_name="customer_scores")
    op.drop_index("ix_customer_scores_propensity", table_name="customer_scores")
    op.drop_index("ix_customer_scores_segment", table_name="customer_scores")
    op.drop_table("customer_scores")

"""experiments, recommendation_impressions, recommendation_clicks: saved experiments,
every served recommendation list, and the ESP clicks attributed to them

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_experiments")),
    )
    op.create_table(
        "recommendation_impressions",
        sa.Column("list_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("surface", sa.String(length=16), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("experiment", sa.String(length=64), nullable=True),
        sa.Column("variant", sa.String(length=64), nullable=True),
        sa.Column("send_id", sa.String(length=255), nullable=True),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_recommendation_impressions_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("list_id", name=op.f("pk_recommendation_impressions")),
    )
    op.create_index(
        "ix_recommendation_impressions_experiment",
        "recommendation_impressions",
        ["experiment", "served_at"],
    )
    op.create_index(
        "ix_recommendation_impressions_customer_id", "recommendation_impressions", ["customer_id"]
    )
    op.create_table(
        "recommendation_clicks",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("send_id", sa.String(length=255), nullable=True),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_recommendation_clicks_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_recommendation_clicks_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_recommendation_clicks")),
    )
    op.create_index("ix_recommendation_clicks_list_id", "recommendation_clicks", ["list_id"])
    op.create_index(
        "ix_recommendation_clicks_customer_clicked",
        "recommendation_clicks",
        ["customer_id", "clicked_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_recommendation_clicks_customer_clicked", table_name="recommendation_clicks")
    op.drop_index("ix_recommendation_clicks_list_id", table_name="recommendation_clicks")
    op.drop_table("recommendation_clicks")
    op.drop_index(
        "ix_recommendation_impressions_customer_id", table_name="recommendation_impressions"
    )
    op.drop_index(
        "ix_recommendation_impressions_experiment", table_name="recommendation_impressions"
    )
    op.drop_table("recommendation_impressions")
    op.drop_table("experiments")

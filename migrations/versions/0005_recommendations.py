"""recommendations: per-customer candidate lists, item popularity, item neighbours

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recommendation_lists",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("purchased", sa.JSON(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_recommendation_lists_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_recommendation_lists")),
    )
    op.create_table(
        "recommendation_items",
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("popularity", sa.Float(), nullable=False),
        sa.Column("trending", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_recommendation_items")),
    )
    op.create_index(
        "ix_recommendation_items_category_popularity",
        "recommendation_items",
        ["category", "popularity"],
    )
    op.create_index("ix_recommendation_items_trending", "recommendation_items", ["trending"])
    op.create_table(
        "recommendation_neighbours",
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("neighbour_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "product_id", "neighbour_id", name=op.f("pk_recommendation_neighbours")
        ),
    )


def downgrade() -> None:
    op.drop_table("recommendation_neighbours")
    op.drop_index("ix_recommendation_items_trending", table_name="recommendation_items")
    op.drop_index("ix_recommendation_items_category_popularity", table_name="recommendation_items")
    op.drop_table("recommendation_items")
    op.drop_table("recommendation_lists")

"""identity resolution: source record keys, blocking keys, link evidence, review queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _identity_fk(
    table: str, column: str = "identity_id", ondelete: str = "CASCADE"
) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["identities.id"], name=op.f(f"fk_{table}_{column}_identities"), ondelete=ondelete
    )


def _customer_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["customers.id"], name=op.f(f"fk_{table}_{column}_customers"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "identity_records",
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("date_of_birth", sa.String(length=8), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("city", sa.String(length=200), nullable=True),
        sa.Column("postcode", sa.String(length=32), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        _identity_fk("identity_records"),
        sa.PrimaryKeyConstraint("identity_id", name=op.f("pk_identity_records")),
    )
    with op.batch_alter_table("identity_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_records_email_key"), ["email_key"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_identity_records_phone"), ["phone"], unique=False)

    op.create_table(
        "identity_block_keys",
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.BigInteger(), nullable=False),
        _identity_fk("identity_block_keys"),
        sa.PrimaryKeyConstraint("identity_id", "key_hash", name=op.f("pk_identity_block_keys")),
    )
    with op.batch_alter_table("identity_block_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_block_keys_key_hash"), ["key_hash"], unique=False
        )

    op.create_table(
        "identity_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("matched_identity_id", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _identity_fk("identity_links"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_links")),
    )
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_links_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_identity_links_identity_id"), ["identity_id"], unique=False
        )

    op.create_table(
        "identity_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("candidate_customer_id", sa.Uuid(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _identity_fk("identity_reviews"),
        _customer_fk("identity_reviews", "candidate_customer_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_reviews")),
    )
    with op.batch_alter_table("identity_reviews", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_reviews_candidate_customer_id"),
            ["candidate_customer_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_identity_reviews_identity_id"), ["identity_id"], unique=False
        )


def downgrade() -> None:
    for table, indexes in (
        (
            "identity_reviews",
            ("ix_identity_reviews_identity_id", "ix_identity_reviews_candidate_customer_id"),
        ),
        ("identity_links", ("ix_identity_links_identity_id", "ix_identity_links_customer_id")),
        ("identity_block_keys", ("ix_identity_block_keys_key_hash",)),
        ("identity_records", ("ix_identity_records_phone", "ix_identity_records_email_key")),
    ):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for index in indexes:
                batch_op.drop_index(index)
        op.drop_table(table)

"""identity models, never-link pairs and a review queue people can work

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

- ``identity_models``: versions of the trained linkage model (Splink settings JSON,
  term frequencies, probability thresholds), one of them active;
- ``identity_never_links``: pairs of identities a person judged to be different people;
- ``identity_reviews`` gains the record compared with, the comparison levels, the model
  version, and who resolved it, when and why; ``identity_links`` the model version.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_models",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("term_frequencies", sa.JSON(), nullable=False),
        sa.Column("match_probability", sa.Float(), nullable=False),
        sa.Column("review_probability", sa.Float(), nullable=False),
        sa.Column("trained", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_identity_models")),
    )
    op.create_table(
        "identity_never_links",
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("other_identity_id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_identity_never_links_identity_id_identities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["other_identity_id"],
            ["identities.id"],
            name=op.f("fk_identity_never_links_other_identity_id_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "identity_id", "other_identity_id", name=op.f("pk_identity_never_links")
        ),
    )
    with op.batch_alter_table("identity_never_links", schema=None) as batch_op:
        batch_op.create_index("ix_identity_never_links_other", ["other_identity_id"], unique=False)

    with op.batch_alter_table("identity_reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("candidate_identity_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("levels", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("model_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("resolution_reason", sa.String(length=200), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_identity_reviews_candidate_identity_id_identities"),
            "identities",
            ["candidate_identity_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(
            batch_op.f("ix_identity_reviews_candidate_identity_id"),
            ["candidate_identity_id"],
            unique=False,
        )
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.drop_column("model_version")
    with op.batch_alter_table("identity_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_reviews_candidate_identity_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_identity_reviews_candidate_identity_id_identities"), type_="foreignkey"
        )
        for column in (
            "resolution_reason",
            "resolved_by",
            "resolved_at",
            "model_version",
            "levels",
            "candidate_identity_id",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("identity_never_links", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_never_links_other")
    op.drop_table("identity_never_links")
    op.drop_table("identity_models")

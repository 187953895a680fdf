"""which identity a consent statement was made for: consent_history.identity_id

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05

A merge moves every statement to the survivor, so an unmerge could not tell whose a
statement was: the survivor kept the split-off person's marketing grant, and the
split-off customer started with none of their own history. A statement now names the
identity it was made for when its customer had exactly one identity then (NULL: made
for a customer of several identities, so whose it is cannot be told). Existing rows of
a customer that has one identity now are that identity's (a merged customer has
several); the rest stay NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("consent_history", sa.Column("identity_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE consent_history SET identity_id = ("
        " SELECT min(identities.id) FROM identities"
        " WHERE identities.customer_id = consent_history.customer_id)"
        " WHERE (SELECT count(*) FROM identities"
        " WHERE identities.customer_id = consent_history.customer_id) = 1"
    )


def downgrade() -> None:
    with op.batch_alter_table("consent_history") as batch:
        batch.drop_column("identity_id")

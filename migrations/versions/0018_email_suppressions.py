"""email suppressions: withdrawals for addresses no customer has yet

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05

An ESP's unsubscribe, group unsubscribe or spam report for an address no customer has
was acknowledged and forgotten: a customer created later with that address (an import,
a webhook, the stream) was mailed. The withdrawal is now kept under the address's keyed
hash (as tombstones keep theirs: no address stored) with its source and time, and a
customer created with that address starts with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_suppressions",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("email_suppressions")

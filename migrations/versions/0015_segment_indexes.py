"""an index for segments' suppression: each customer's e-mail status observations

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05

A send audience leaves out customers whose latest ``email_status`` observation is a
hard bounce (gateway/segments/fields.py). Those observations are a sliver of
``attributes`` (every email, phone and name each source reported), and without an
index of their own every page of a segment read them all: 16 ms of a 30 ms page over
100,000 customers. A partial index holds only them, by customer and time, which is
what the check asks (is there a later observation?). Partial indexes work on Postgres
and SQLite alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONLY = sa.text("name = 'email_status'")


def upgrade() -> None:
    op.create_index(
        "ix_attributes_email_status",
        "attributes",
        ["customer_id", "observed_at"],
        postgresql_where=_ONLY,
        sqlite_where=_ONLY,
    )


def downgrade() -> None:
    op.drop_index("ix_attributes_email_status", table_name="attributes")

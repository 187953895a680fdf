"""an index of the e-mail addresses each customer was ever observed with

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05

An ESP's unsubscribe names the address the mail went to. After a merge (or a changed
address) that address is no longer the customer's golden one, but it is still one of
their ``email`` observations; the ESP batch looks it up there when no customer has it
as their address (gateway/ingest/esp_batches.py). A partial index holds only those
observations, by value, on Postgres and SQLite alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONLY = sa.text("name = 'email'")


def upgrade() -> None:
    op.create_index(
        "ix_attributes_email_value",
        "attributes",
        ["value"],
        postgresql_where=_ONLY,
        sqlite_where=_ONLY,
    )


def downgrade() -> None:
    op.drop_index("ix_attributes_email_value", table_name="attributes")

"""events.session_id: the call's session id, kept beside its properties

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05

``engagement`` counts each customer's distinct session ids; read out of the ``json``
``properties`` column, every row was parsed whole for it (409 ms of a 1,000-customer
batch's query over 40,000 rows, 172 ms without). A generated column holds it instead:
the database fills it from ``properties`` on every insert and update, whichever path
writes the row (webhooks, the stream consumer, imports), and for the rows already
there. Postgres stores it (the table is rewritten once, here); SQLite can only add a
virtual one to an existing table, computed when read, as the query did before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written here, not imported, so this revision stays what it was when the models change.
# Both backends read ``->``/``->>`` alike (SQLite from 3.38); the column's text type makes
# a numeric id its text on SQLite too, as Postgres' ``->>`` answers it.
SESSION_ID = "properties -> 'properties' ->> 'session_id'"


def upgrade() -> None:
    persisted = op.get_bind().dialect.name == "postgresql"
    op.add_column(
        "events",
        sa.Column("session_id", sa.Text(), sa.Computed(SESSION_ID, persisted=persisted)),
    )


def downgrade() -> None:
    op.drop_column("events", "session_id")

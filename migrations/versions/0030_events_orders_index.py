"""a customer's orders have an index of their own

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-06

An experiment's results ask, for every list served, whether its customer ordered within
the window after it (the ORDER metric), and for every click whether an order followed
(conversions, a send's figures). Through ``ix_events_customer_occurred`` each such look
read every event of the customer in the window, opens, clicks and views included:
~25-50 us a list on SQLite, seconds for a send of 100,000. A partial index holds the
orders only: its upkeep is one condition evaluated a write, and an entry an order. On
Postgres it is built concurrently, beside a running gateway's event writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written here, not imported, so this revision stays what it was.
_ONLY = sa.text(
    "type IN ('orders/create', 'orders/paid', 'orders/updated', 'track:Order Completed')"
)
_NAME, _COLUMNS = "ix_events_customer_orders", ["customer_id", "occurred_at"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(_NAME, "events", _COLUMNS, sqlite_where=_ONLY)
        return
    # Beside the running gateway: a plain CREATE INDEX would hold every event write (the
    # webhooks, the stream) for the whole scan of a table of millions of rows. A
    # concurrent build that failed or was cancelled leaves an invalid index of this name
    # (and the revision not applied): dropped first, so running the upgrade again works.
    with op.get_context().autocommit_block():
        op.drop_index(_NAME, table_name="events", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            _NAME, "events", _COLUMNS, postgresql_where=_ONLY, postgresql_concurrently=True
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(_NAME, table_name="events")
        return
    with op.get_context().autocommit_block():
        op.drop_index(_NAME, table_name="events", postgresql_concurrently=True)

"""the merges in the audit log have an index of their own

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05

The audit log holds a row for every read (thousands a second under load) and, among
them, the merges and the linker's folds, each with the id it removed. The impressions
writer reads those of a time range to give a list served to a customer merged away since
to the survivor (gateway/experiments/impressions.py): through the time index alone that
read every audited read of the range, an hour and more of them. A partial index holds
the merges only: its upkeep is one condition evaluated a write, and an entry a merge.
On Postgres it is built concurrently, beside a running gateway's audit writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written here, not imported, so this revision stays what it was.
_ONLY = sa.text("operation IN ('merge_customers', 'fold_customers')")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index("ix_audit_log_merges", "audit_log", ["occurred_at"], sqlite_where=_ONLY)
        return
    # Built beside the running gateway: a plain CREATE INDEX would hold every audit write
    # (a row a read) for the whole scan of a table of millions of rows, and the writers'
    # buffers would overflow and drop entries.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_audit_log_merges",
            "audit_log",
            ["occurred_at"],
            postgresql_where=_ONLY,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index("ix_audit_log_merges", table_name="audit_log")
        return
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_audit_log_merges",
            table_name="audit_log",
            postgresql_concurrently=True,
        )

"""audit entries carry an id of their own, unique

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-06

The audit log's buffered writer (gateway/privacy/audit.py) keeps a batch whose write
failed and writes it again. When the commit went through but its reply was lost (a
connection cut after COMMIT was sent), the retry stored every entry of the batch a
second time: the rows had no key to tell them apart (an autoincrement id, COPYed). Each
entry now gets an id when it is queued, and a unique index refuses a second row of it.

Rows written before keep NULL: the table holds a row for every read (millions an hour of
a busy worker), and giving each an id would rewrite all of them, for nothing (they were
written by code that could not retry them again). The index is partial, over the rows
that have an id, so those rows add nothing to it; every ``ON CONFLICT`` naming it
repeats its condition. On Postgres it is built concurrently, beside a running gateway's
audit writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written here, not imported, so this revision stays what it was.
_HAS_ID = sa.text("entry_id IS NOT NULL")
_NAME = "ux_audit_log_entry_id"


def upgrade() -> None:
    # A nullable column without a default: no rewrite of the table on either backend.
    # Present already when a first run's concurrent index build failed after the column
    # was committed (the autocommit block below commits it): left as it is, so the
    # upgrade runs again (a fresh review found it refused "column already exists").
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("audit_log")}
    if "entry_id" not in columns:
        op.add_column("audit_log", sa.Column("entry_id", sa.Uuid(), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(_NAME, "audit_log", ["entry_id"], unique=True, sqlite_where=_HAS_ID)
        return
    # Beside the running gateway: a plain CREATE INDEX would hold every audit write (a row
    # a read) for the whole scan, and the writers' buffers would overflow and drop
    # entries. A concurrent build that failed or was cancelled leaves an invalid index of
    # this name (and the revision not applied): dropped first, so running the upgrade
    # again works.
    with op.get_context().autocommit_block():
        op.drop_index(_NAME, table_name="audit_log", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            _NAME,
            "audit_log",
            ["entry_id"],
            unique=True,
            postgresql_where=_HAS_ID,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(_NAME, table_name="audit_log")
    else:
        with op.get_context().autocommit_block():
            op.drop_index(_NAME, table_name="audit_log", postgresql_concurrently=True)
    op.drop_column("audit_log", "entry_id")

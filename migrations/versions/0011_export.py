"""warehouse export: changed_at on the exported tables, a log of their deletions, and
the export cursors

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

An incremental export reads the rows changed since its cursor and the rows deleted
since.  ``changed_at`` is kept by the database, not by each writer: merges move
identities, events and attributes with bulk UPDATEs, consents are upserted, erasure and
retention delete through cascades (0006's triggers on Postgres), and a writer that
forgot the column would silently drop rows from every later export.

- Postgres: ``changed_at`` defaults to ``now()`` (the transaction's start: the export
  bounds its window by the oldest transaction still open, so a row committed late is
  never behind a cursor), a BEFORE UPDATE row trigger sets it again, and an AFTER
  DELETE statement trigger logs the deleted ids from the transition table (one INSERT
  per statement, so a bulk delete stays one statement).
- SQLite: a column added to a table cannot default to an expression, so AFTER INSERT
  and AFTER UPDATE row triggers set it, and an AFTER DELETE trigger logs the id.  Times
  are written as SQLAlchemy writes them (``YYYY-MM-DD HH:MM:SS.ffffff``) so they
  compare as text.

Existing rows get the migration's time: the first export takes them all anyway.
Downgrade drops the triggers, the columns and the two tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written here, not imported, so this revision stays what it was.
TABLES = ("customers", "identities", "identity_links", "consents", "events", "attributes")
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"

_PG_FUNCTIONS = (
    """
CREATE FUNCTION export_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_at := now();
    RETURN NEW;
END $$
""",
    """
CREATE FUNCTION export_log_deletions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO export_deletions (table_name, row_id, deleted_at)
    SELECT TG_TABLE_NAME, id::text, now() FROM old_rows;
    RETURN NULL;
END $$
""",
)


def _postgres(table: str) -> None:
    op.add_column(
        table,
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.execute(
        f"CREATE TRIGGER export_touch BEFORE UPDATE ON {table} FOR EACH ROW "
        "EXECUTE FUNCTION export_touch()"
    )
    op.execute(
        f"CREATE TRIGGER export_log_deletions AFTER DELETE ON {table} "
        "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION export_log_deletions()"
    )


def _sqlite(table: str) -> None:
    op.add_column(
        table,
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default="1970-01-01 00:00:00.000000",
        ),
    )
    op.execute(f"UPDATE {table} SET changed_at = {_SQLITE_NOW}")
    key = "rowid"
    op.execute(
        f"CREATE TRIGGER export_touch_insert_{table} AFTER INSERT ON {table} BEGIN "
        f"UPDATE {table} SET changed_at = {_SQLITE_NOW} WHERE {key} = NEW.{key}; END"
    )
    # WHEN: the trigger's own UPDATE must not count as a change to stamp again.
    op.execute(
        f"CREATE TRIGGER export_touch_update_{table} AFTER UPDATE ON {table} "
        f"WHEN NEW.changed_at IS OLD.changed_at BEGIN "
        f"UPDATE {table} SET changed_at = {_SQLITE_NOW} WHERE {key} = NEW.{key}; END"
    )
    op.execute(
        f"CREATE TRIGGER export_log_deletions_{table} AFTER DELETE ON {table} BEGIN "
        "INSERT INTO export_deletions (table_name, row_id, deleted_at) "
        f"VALUES ('{table}', OLD.id, {_SQLITE_NOW}); END"
    )


def upgrade() -> None:
    op.create_table(
        "export_cursors",
        sa.Column("target", sa.String(length=1000), nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", "table_name", name=op.f("pk_export_cursors")),
    )
    op.create_table(
        "export_deletions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("row_id", sa.String(length=64), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_deletions")),
    )
    op.create_index(
        "ix_export_deletions_table_deleted", "export_deletions", ["table_name", "deleted_at"]
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for function in _PG_FUNCTIONS:
            op.execute(function)
    for table in TABLES:
        (_postgres if postgres else _sqlite)(table)
        op.create_index(f"ix_{table}_changed_at", table, ["changed_at"])


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        op.drop_index(f"ix_{table}_changed_at", table_name=table)
        if postgres:
            op.execute(f"DROP TRIGGER export_touch ON {table}")
            op.execute(f"DROP TRIGGER export_log_deletions ON {table}")
        else:
            for name in ("touch_insert", "touch_update", "log_deletions"):
                op.execute(f"DROP TRIGGER export_{name}_{table}")
        # Natively (SQLite 3.35+): a batch copy would drop and re-create the table, and
        # its cascades would take the children with it.
        op.execute(f"ALTER TABLE {table} DROP COLUMN changed_at")
    if postgres:
        op.execute("DROP FUNCTION export_touch()")
        op.execute("DROP FUNCTION export_log_deletions()")
    op.drop_index("ix_export_deletions_table_deleted", table_name="export_deletions")
    op.drop_table("export_deletions")
    op.drop_table("export_cursors")

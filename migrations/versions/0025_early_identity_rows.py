"""identity records and block keys of new identities may be written before them

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05

An import batch's records and block keys depend only on which identities are new (the
ids are taken from the sequence first), not on the linker's decisions: Postgres copies
them while the gateway decides (two cores working at once instead of one after the
other). The identities themselves follow the decisions, so the statement-level foreign
key checks of 0006 on these two tables are skipped while the transaction says
``gateway.early_identity_rows = 'on'``: the importer sets it only around the COPY of
rows naming identities it took from the sequence itself and inserts before it commits
(ids no one else can hold or delete). Everything else is checked as before. SQLite keeps
its plain foreign keys (no bulk path there).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written here, not imported, so this revision stays what it was.
_TABLES = ("identity_records", "identity_block_keys")
_SETTING = "gateway.early_identity_rows"


def _create(table: str, when: str) -> None:
    name = f"fk_{table}_identity_id_identities_insert"
    op.execute(f"DROP TRIGGER {name} ON {table}")
    op.execute(
        f"CREATE TRIGGER {name} AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT {when}"
        "EXECUTE FUNCTION fk_check_parents('identity_id', 'identities')"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        _create(table, f"WHEN (current_setting('{_SETTING}', true) IS DISTINCT FROM 'on') ")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        _create(table, "")

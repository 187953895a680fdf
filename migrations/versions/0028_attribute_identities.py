"""each attribute names the identity that reported it

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06

An unmerge splits one identity back out of a customer. It moved back only the attributes
that identity's latest record still supported, so an address the source had reported
before (an email changed since) stayed with the survivor, and an unsubscribe or a bounce
for that older address then acted on the wrong person. With the identity kept on each
row, an unmerge takes back everything its identity ever reported.

Rows stored before this revision get the identity when their customer has exactly one
identity of the row's source (every customer never merged or linked twice from one
source) and never had one split off; the rest stay without one, and an unmerge judges
them by the records as before. The backfill rewrites those rows: on a large table run
the upgrade in a quiet hour (writes to attributes wait for it) and VACUUM after.
No foreign key: identities are deleted only with their customer, whose attributes go by
its own cascade, and a key checked on every row would slow the imports' COPY.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One join (UPDATE ... FROM: Postgres, SQLite 3.33+), not a subquery a row: on a large
# table without fresh statistics Postgres took minutes over those.
_ONLY_ONE = """
UPDATE attributes SET identity_id = only_one.id
FROM (
    SELECT customer_id, source, min(id) AS id FROM identities
    GROUP BY customer_id, source HAVING count(*) = 1
) AS only_one
WHERE attributes.customer_id = only_one.customer_id AND attributes.source = only_one.source
AND attributes.customer_id NOT IN ({split})
"""
# Customers an identity was split off before (the unmerge's link says whose): the split
# person's earlier values stayed with them, and naming those for the survivor's identity
# would hand them on with it.
_SPLIT = {
    "postgresql": "SELECT CAST(substr(reason, 12) AS uuid) FROM identity_links "
    "WHERE rule = 'unmerge' AND reason ~ "
    "'^split from [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'",
    "sqlite": "SELECT replace(substr(reason, 12), '-', '') FROM identity_links "
    "WHERE rule = 'unmerge' AND reason LIKE 'split from %'",
}


# The export's change stamps (migration 0011, written here, not imported): a backfill of
# a column the export does not carry must not mark every row it fills as changed (the
# next export would send the whole table again).
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def _unstamped(table: str, backfill: Callable[[], None]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER export_touch")
        backfill()
        op.execute(f"ALTER TABLE {table} ENABLE TRIGGER export_touch")
        return
    op.execute(f"DROP TRIGGER export_touch_update_{table}")
    backfill()
    op.execute(
        f"CREATE TRIGGER export_touch_update_{table} AFTER UPDATE ON {table} "
        f"WHEN NEW.changed_at IS OLD.changed_at BEGIN "
        f"UPDATE {table} SET changed_at = {_SQLITE_NOW} WHERE rowid = NEW.rowid; END"
    )


def upgrade() -> None:
    # Nullable and without a default: on Postgres a change of the catalogue only.
    op.add_column("attributes", sa.Column("identity_id", sa.Integer(), nullable=True))
    dialect = op.get_bind().dialect.name
    split = _SPLIT["postgresql" if dialect == "postgresql" else "sqlite"]
    _unstamped("attributes", lambda: op.execute(_ONLY_ONE.format(split=split)))


def downgrade() -> None:
    # Not in batch mode: SQLite's copy of the table would lose the expression index
    # uq_attributes_observation, which it cannot reflect.
    op.drop_column("attributes", "identity_id")

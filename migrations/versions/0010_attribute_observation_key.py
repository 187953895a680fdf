"""each attribute observation stored once: a natural unique key on attributes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

An observation is (customer, name, source, observed_at, value): an import run again
after a crash, or the same value resent, stored every row again (349,801 rows became
489,799).  Existing duplicates are removed, the oldest row of each kept, then the
unique index ``uq_attributes_observation`` is built; writers insert with ON CONFLICT DO
NOTHING.  The value is compared through ``md5`` on Postgres (a long value would not fit
a btree entry) and as text on SQLite (no ``md5``); a missing value counts as the empty
one.  The index leads with (customer_id, name), so ``ix_attributes_customer_name`` goes.

Downgrade drops the key and brings the old index back; removed duplicates stay removed.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _digest() -> str:
    # Written here, not imported from the models: this revision stays what it was.
    if op.get_bind().dialect.name == "postgresql":
        return "md5(coalesce(value, ''))"
    return "coalesce(value, '')"


def upgrade() -> None:
    key = f"customer_id, name, source, observed_at, {_digest()}"
    # IN over the extra copies, not NOT IN over the keepers: Postgres turns it into a
    # hash join, where NOT IN over half a million ids may fall back to a nested scan.
    op.execute(
        "DELETE FROM attributes WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER "
        f"(PARTITION BY {key} ORDER BY id) AS nth FROM attributes) AS numbered WHERE nth > 1)"
    )
    op.execute(f"CREATE UNIQUE INDEX uq_attributes_observation ON attributes ({key})")
    op.drop_index("ix_attributes_customer_name", table_name="attributes")


def downgrade() -> None:
    op.create_index("ix_attributes_customer_name", "attributes", ["customer_id", "name"])
    op.drop_index("uq_attributes_observation", table_name="attributes")

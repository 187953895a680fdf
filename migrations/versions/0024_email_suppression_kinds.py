"""email suppressions of two kinds: a withdrawal and a hard bounce

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05

A hard bounce for an address no customer had was acknowledged and forgotten: the
customer created later with that address (or a stored one taking it on) came up
deliverable. It is now kept as the withdrawals are, under the address's keyed hash,
with a ``kind`` (``withdraw`` or ``undeliverable``) beside the digest in the key; the
rows kept so far are withdrawals. Down, the bounces go (the table held withdrawals only).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "email_suppressions"
_KEY = "pk_email_suppressions"  # the models' naming convention


def upgrade() -> None:
    op.add_column(
        _TABLE, sa.Column("kind", sa.String(16), nullable=False, server_default="withdraw")
    )
    _primary_key(["digest", "kind"])


def downgrade() -> None:
    op.execute(sa.text(f"DELETE FROM {_TABLE} WHERE kind <> 'withdraw'"))
    _primary_key(["digest"], drop="kind")


def _primary_key(columns: list[str], drop: str | None = None) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(_KEY, _TABLE, type_="primary")
        op.create_primary_key(_KEY, _TABLE, columns)
        if drop is not None:
            op.drop_column(_TABLE, drop)
        return
    # SQLite cannot alter a key: the rows are copied into a table made with the new one.
    kept = ["digest", *(["kind"] if drop is None else []), "source", "recorded_at"]
    op.create_table(
        "email_suppressions_0024",
        sa.Column("digest", sa.String(64), nullable=False),
        *(
            [sa.Column("kind", sa.String(16), nullable=False, server_default="withdraw")]
            if drop is None
            else []
        ),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*columns, name=_KEY),
    )
    listed = ", ".join(kept)
    op.execute(
        sa.text(f"INSERT INTO email_suppressions_0024 ({listed}) SELECT {listed} FROM {_TABLE}")
    )
    op.drop_table(_TABLE)
    op.rename_table("email_suppressions_0024", _TABLE)

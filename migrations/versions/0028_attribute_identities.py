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
source); the rest stay without one, and an unmerge judges them by the records as before.
No foreign key: identities are deleted only with their customer, whose attributes go by
its own cascade, and a key checked on every row would slow the imports' COPY.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONLY_ONE = """
UPDATE attributes SET identity_id = (
    SELECT min(i.id) FROM identities i
    WHERE i.customer_id = attributes.customer_id AND i.source = attributes.source
)
WHERE (
    SELECT count(*) FROM identities i
    WHERE i.customer_id = attributes.customer_id AND i.source = attributes.source
) = 1
"""


def upgrade() -> None:
    # Nullable and without a default: on Postgres a change of the catalogue only.
    op.add_column("attributes", sa.Column("identity_id", sa.Integer(), nullable=True))
    op.execute(_ONLY_ONE)


def downgrade() -> None:
    # Not in batch mode: SQLite's copy of the table would lose the expression index
    # uq_attributes_observation, which it cannot reflect.
    op.drop_column("attributes", "identity_id")

"""a hard bounce names the address that bounced

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-05

A hard bounce was kept as the customer's ``email_status`` observation ``undeliverable``
alone, and held the person undeliverable whatever address they moved to. Each bounce
is now stored with the address it was for (``bounced_email``, the same customer,
source and time), and a customer is undeliverable only while they have that address
(gateway/segments/fields.py). The bounces stored before named none: each is given the
address its customer has now, the one it was most likely for, so nobody who bounced
becomes mailable at the address that bounced; one who moves to another address from
now on becomes mailable there. A customer without an address gets none (they cannot be
mailed anyway). A partial index on those rows (``ix_attributes_bounced_email``, as
``ix_attributes_email_status`` for the statuses) lets a segment's page read the bounces
of its own customers only. Down, the index and those addresses go (the older code reads
only the status).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written here, not imported, so this revision stays what it was.
_PAIRED = (
    "SELECT 1 FROM attributes address WHERE address.customer_id = bounce.customer_id "
    "AND address.name = 'bounced_email' AND address.source = bounce.source "
    "AND address.observed_at = bounce.observed_at"
)


_ONLY = sa.text("name = 'bounced_email'")


def upgrade() -> None:
    op.create_index(
        "ix_attributes_bounced_email",
        "attributes",
        ["customer_id", "observed_at"],
        postgresql_where=_ONLY,
        sqlite_where=_ONLY,
    )
    op.execute(
        sa.text(
            "INSERT INTO attributes (customer_id, name, value, source, observed_at) "
            "SELECT bounce.customer_id, 'bounced_email', customers.email, bounce.source, "
            "bounce.observed_at FROM attributes bounce "
            "JOIN customers ON customers.id = bounce.customer_id "
            "WHERE bounce.name = 'email_status' AND bounce.value = 'undeliverable' "
            f"AND customers.email IS NOT NULL AND NOT EXISTS ({_PAIRED})"
        )
    )


def downgrade() -> None:
    op.drop_index("ix_attributes_bounced_email", table_name="attributes")
    # Only the addresses paired with a bounce: a source's own attribute of that name stays.
    op.execute(
        sa.text(
            "DELETE FROM attributes WHERE name = 'bounced_email' AND EXISTS ("
            "SELECT 1 FROM attributes bounce WHERE bounce.customer_id = attributes.customer_id "
            "AND bounce.name = 'email_status' AND bounce.value = 'undeliverable' "
            "AND bounce.source = attributes.source "
            "AND bounce.observed_at = attributes.observed_at)"
        )
    )

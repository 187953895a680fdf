"""event subjects (whom unlinked events name, hashed); webhook receipts (signed-body
digests); e-mail and phone provenance backfilled

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

``event_subjects`` holds, per event, keyed hashes of the identifiers it carries without
being linked by them (an anonymous Segment event's traits e-mail, an ``anonymousId``),
so an erasure can remove those events too. ``webhook_receipts`` holds a digest of each
signed Shopify body: its event id header is not signed, so a captured body resent under a
new id must still be a duplicate.

Upserts and the demo seed did not write ``email`` attribute rows (nor the seed's phone
in E.164), and survivorship recomputes golden values from attribute rows only: a merge
then lost the merged customer's e-mail, and the erasure that followed did not tombstone
it. Every write path writes them now; this backfills one row per customer whose golden
e-mail or phone has none, under the source ``profile`` (the profile's own value, from
before provenance was kept), observed at the customer's last update. The downgrade
keeps those rows: they are true statements of what the profile held.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL = """
INSERT INTO attributes (customer_id, name, value, source, observed_at)
SELECT c.id, '{name}', c.{name}, 'profile', c.updated_at
FROM customers AS c
WHERE c.{name} IS NOT NULL
  AND NOT EXISTS (
    SELECT 1 FROM attributes AS a
    WHERE a.customer_id = c.id AND a.name = '{name}' AND a.value = c.{name}
  )
"""


def upgrade() -> None:
    op.create_table(
        "event_subjects",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_event_subjects_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", "digest", name=op.f("pk_event_subjects")),
    )
    op.create_index(op.f("ix_event_subjects_digest"), "event_subjects", ["digest"])
    op.create_table(
        "webhook_receipts",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_webhook_receipts_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source", "digest", name=op.f("pk_webhook_receipts")),
    )
    op.create_index(op.f("ix_webhook_receipts_event_id"), "webhook_receipts", ["event_id"])
    for name in ("email", "phone"):
        op.execute(_BACKFILL.format(name=name))


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_receipts_event_id"), table_name="webhook_receipts")
    op.drop_table("webhook_receipts")
    op.drop_index(op.f("ix_event_subjects_digest"), table_name="event_subjects")
    op.drop_table("event_subjects")

"""customers.email_key: the mailbox a customer's address folds to, where that differs

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-06

``janedoe@gmail.com`` and ``jane.doe@gmail.com`` are one mailbox. Source records carry
their matching key, but a customer created through the API by address alone has none, so
an ESP's unsubscribe from the mailbox could not tell that two customers hold it: it
suppressed only the one holding the plain spelling, and the other kept mailing the person
who had unsubscribed. The key is stored where it is not the address itself (a provider's
dots, plus tag or alias folded), with an index over those rows only.

Existing rows are keyed as the default identity settings fold addresses (Gmail's dots,
the plus tags of the large providers, googlemail.com as gmail.com), copied here so this
revision stays what it was; a deployment folding other domains keys its rows at their
next write. Unlike the gateway, this also keys a placeholder local part such as
``test+x@gmail.com`` (as ``test@gmail.com``: a statement for that mailbox reaches it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DOTLESS = {"gmail.com", "googlemail.com"}
_PLUS_TAG = {
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "fastmail.com",
}
_ALIASES = {"googlemail.com": "gmail.com"}
_WHERE = sa.text("email_key IS NOT NULL")


def _key(email: str) -> str:
    local, _, domain = email.rpartition("@")
    domain = _ALIASES.get(domain, domain)
    if domain in _PLUS_TAG:
        local = local.split("+", 1)[0]
    if domain in _DOTLESS:
        local = local.replace(".", "")
    return f"{local}@{domain}"


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
    op.add_column("customers", sa.Column("email_key", sa.String(320), nullable=True))
    bind = op.get_bind()
    domains = sorted(_DOTLESS | _PLUS_TAG)
    # A page at a time by id (a shop's Gmail customers may be millions: never all in
    # memory); the new column holds writers off until the migration commits.
    page = sa.text(
        "SELECT id, email FROM customers WHERE id > :after AND ("
        + " OR ".join(f"email LIKE :d{i}" for i in range(len(domains)))
        + ") ORDER BY id LIMIT 10000"
    ).bindparams(sa.bindparam("after", type_=sa.Uuid()))
    domain_of = {f"d{i}": f"%@{domain}" for i, domain in enumerate(domains)}

    def backfill() -> None:
        after = uuid.UUID(int=0)
        while rows := bind.execute(page, {"after": after, **domain_of}).all():
            keyed = [{"i": i, "k": _key(email)} for i, email in rows if _key(email) != email]
            if keyed:
                bind.execute(sa.text("UPDATE customers SET email_key = :k WHERE id = :i"), keyed)
            after = uuid.UUID(str(rows[-1][0]))

    _unstamped("customers", backfill)
    op.create_index(
        "ix_customers_email_key",
        "customers",
        ["email_key"],
        postgresql_where=_WHERE,
        sqlite_where=_WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_customers_email_key", table_name="customers")
    op.drop_column("customers", "email_key")

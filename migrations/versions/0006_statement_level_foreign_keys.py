"""statement-level foreign keys on Postgres for the tables a bulk import fills

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

A foreign key checks its parent with one trigger firing per inserted row; an import of
10,000 FEBRL records fired ~160,000 of them, most of the import's time in Postgres.
On Postgres these foreign keys become statement-level triggers that do the same work
once per statement over the transition table:

- after INSERT on the child: lock every referenced parent ``FOR KEY SHARE`` (what a
  foreign key's own check does, so a concurrent delete of the parent waits for us, or
  we see it gone) and raise ``foreign_key_violation`` if any is missing;
- after UPDATE OF the child's key column, per row and only when the value changed (as
  a foreign key checks): the same for the new parent.  Rare (merges move a customer's
  rows), and an update that leaves the key alone locks nothing, so it cannot deadlock
  with a cascade as a statement-level check over all updated rows could;
- after DELETE on the parent: delete the children (``ON DELETE CASCADE``);
- before UPDATE of the parent's key: refuse while children reference it (NO ACTION).

Unlike a foreign key they do not stop a TRUNCATE of the parent alone (nothing here
truncates), and the cascade sees children through its own statement's snapshot: right
under READ COMMITTED, which is all the gateway uses (tests/db/test_migrations.py races
the two orders), while a REPEATABLE READ deleter could miss a child committed after
its snapshot began.  SQLite keeps the plain foreign keys (one writer, no bulk path to speed up).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (child table, column, parent table); the parent's key is ``id``.  Written here, not
# imported, so this revision stays what it was when the application changes.
REFERENCES = (
    ("identities", "customer_id", "customers"),
    ("attributes", "customer_id", "customers"),
    ("identity_records", "identity_id", "identities"),
    ("identity_block_keys", "identity_id", "identities"),
    ("identity_links", "identity_id", "identities"),
)

_FUNCTIONS = (
    """
CREATE FUNCTION fk_check_parents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    locked bigint;
BEGIN
    -- TG_ARGV: child column, parent table.
    EXECUTE format('SELECT count(DISTINCT %I) FROM new_rows', TG_ARGV[0]) INTO wanted;
    EXECUTE format(
        'SELECT count(*) FROM (SELECT 1 FROM %I AS p WHERE p.id IN '
        '(SELECT %I FROM new_rows) FOR KEY SHARE OF p) AS locked',
        TG_ARGV[1], TG_ARGV[0]
    ) INTO locked;
    IF locked < wanted THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%I.%I references a missing %I row', TG_TABLE_NAME, TG_ARGV[0],
                             TG_ARGV[1]),
            TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END $$
""",
    """
CREATE FUNCTION fk_check_parent() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    present boolean;
BEGIN
    -- TG_ARGV: child column, parent table.
    EXECUTE format('SELECT true FROM %I AS p WHERE p.id = ($1).%I FOR KEY SHARE OF p',
                   TG_ARGV[1], TG_ARGV[0])
        INTO present USING NEW;
    IF present IS NULL THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%I.%I references a missing %I row', TG_TABLE_NAME, TG_ARGV[0],
                             TG_ARGV[1]),
            TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END $$
""",
    """
CREATE FUNCTION fk_cascade_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV: child table, child column.
    EXECUTE format('DELETE FROM %I WHERE %I IN (SELECT id FROM old_rows)', TG_ARGV[0],
                   TG_ARGV[1]);
    RETURN NULL;
END $$
""",
    """
CREATE FUNCTION fk_restrict_key_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    referenced boolean;
BEGIN
    -- TG_ARGV: child table, child column.
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I = $1)', TG_ARGV[0], TG_ARGV[1])
        INTO referenced USING OLD.id;
    IF referenced THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%I.id is still referenced from %I', TG_TABLE_NAME, TG_ARGV[0]),
            TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END $$
""",
)


def _fk_name(child: str, column: str, parent: str) -> str:
    return f"fk_{child}_{column}_{parent}"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in _FUNCTIONS:
        op.execute(function)
    for child, column, parent in REFERENCES:
        name = _fk_name(child, column, parent)
        op.drop_constraint(name, child, type_="foreignkey")
        op.execute(
            f"CREATE TRIGGER {name}_insert AFTER INSERT ON {child} "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION fk_check_parents('{column}', '{parent}')"
        )
        op.execute(
            f"CREATE TRIGGER {name}_update AFTER UPDATE OF {column} ON {child} FOR EACH ROW "
            f"WHEN (OLD.{column} IS DISTINCT FROM NEW.{column}) "
            f"EXECUTE FUNCTION fk_check_parent('{column}', '{parent}')"
        )
        op.execute(
            f"CREATE TRIGGER {name}_cascade AFTER DELETE ON {parent} "
            "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION fk_cascade_delete('{child}', '{column}')"
        )
        op.execute(
            f"CREATE TRIGGER {name}_key BEFORE UPDATE OF id ON {parent} FOR EACH ROW "
            "WHEN (OLD.id IS DISTINCT FROM NEW.id) "
            f"EXECUTE FUNCTION fk_restrict_key_update('{child}', '{column}')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for child, column, parent in reversed(REFERENCES):
        name = _fk_name(child, column, parent)
        for trigger, table in (
            (f"{name}_key", parent),
            (f"{name}_cascade", parent),
            (f"{name}_update", child),
            (f"{name}_insert", child),
        ):
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
        op.create_foreign_key(name, child, parent, [column], ["id"], ondelete="CASCADE")
    for function in (
        "fk_restrict_key_update",
        "fk_cascade_delete",
        "fk_check_parent",
        "fk_check_parents",
    ):
        op.execute(f"DROP FUNCTION {function}()")

"""statement-level foreign keys on Postgres for events and event_subjects

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04

The stream consumer inserts thousands of events and their subjects per statement, and
each row's foreign key fired a trigger of its own: two checks per event, more than half
of Postgres' CPU for a batch (41 of 42 ms per 1,000 events went to the INSERT, 19 ms
with these). They become the statement-level triggers of 0006 (its functions), checking
a whole insert at once; a NULL ``events.customer_id`` (an anonymous event, a retained
one) references nothing and is not checked, as a foreign key does not check it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (child table, column, parent table); the parent's key is ``id``. Written here, not
# imported, so this revision stays what it was when the application changes.
REFERENCES = (
    ("events", "customer_id", "customers"),
    ("event_subjects", "event_id", "events"),
)


def _fk_name(child: str, column: str, parent: str) -> str:
    return f"fk_{child}_{column}_{parent}"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for child, column, parent in REFERENCES:
        name = _fk_name(child, column, parent)
        op.drop_constraint(name, child, type_="foreignkey")
        op.execute(
            f"CREATE TRIGGER {name}_insert AFTER INSERT ON {child} "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION fk_check_parents('{column}', '{parent}')"
        )
        # Set to NULL (retention keeps an erased person's events anonymised): no parent.
        op.execute(
            f"CREATE TRIGGER {name}_update AFTER UPDATE OF {column} ON {child} FOR EACH ROW "
            f"WHEN (OLD.{column} IS DISTINCT FROM NEW.{column} AND NEW.{column} IS NOT NULL) "
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

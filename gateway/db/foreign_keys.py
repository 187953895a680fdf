"""Foreign keys that Postgres enforces with statement-level triggers, not constraints.

The models keep these ``ForeignKey``s (SQLite has them as constraints, and the ORM
orders its writes and joins by them); migrations 0006 and 0021 replace them on Postgres with
triggers that check a whole bulk insert at once.  ``comparison_options`` tells
Alembic's comparison so, for autogenerate and for the drift test alike.
"""

from __future__ import annotations

from typing import Any

TRIGGER_ENFORCED = frozenset(
    {
        "fk_identities_customer_id_customers",
        "fk_attributes_customer_id_customers",
        "fk_identity_records_identity_id_identities",
        "fk_identity_block_keys_identity_id_identities",
        "fk_identity_links_identity_id_identities",
        # Migration 0021: the stream consumer's bulk inserts of events.
        "fk_events_customer_id_customers",
        "fk_event_subjects_event_id_events",
    }
)


def _not_trigger_enforced(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return not (type_ == "foreign_key_constraint" and name in TRIGGER_ENFORCED)


def comparison_options(dialect: str) -> dict[str, Any]:
    """Extra ``configure`` options for comparing the models with a ``dialect`` database."""
    return {"include_object": _not_trigger_enforced} if dialect == "postgresql" else {}

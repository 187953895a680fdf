"""The customer's fields and where each comes from: which upstream's data (fetched by
one per-request loader) a field needs, so a request fetches only what it selected.

Named in the services' terms (snake case): the GraphQL types and the Liquid render
context both read this table, each in its own spelling.
"""

from __future__ import annotations

# Which per-request loader serves each customer field (None: the stored profile).
FIELD_LOADERS: dict[str, str | None] = {
    **dict.fromkeys(
        (
            "id",
            "email",
            "phone",
            "first_name",
            "last_name",
            "locale",
            "created_at",
            "updated_at",
            "identities",
        ),
        None,
    ),
    **dict.fromkeys(
        (
            "lifecycle_stage",
            "owner_id",
            "company",
            "job_title",
            "city",
            "country",
            "date_of_birth",
            # Consent is stored too; the CRM is read for its newer statements.
            "consent",
            "consents",
            "suppressed",
        ),
        "crm",
    ),
    **dict.fromkeys(("lifetime_value", "order_count"), "commerce"),
    **dict.fromkeys(("orders", "last_order_at"), "orders"),
    **dict.fromkeys(("recent_events", "engagement", "cart"), "analytics"),
}

"""0028: an attribute names the identity that reported it. Stored rows of a customer with
one identity of the row's source get it; a customer with two of that source (merged) and
the gateway's own sources get none; down and up again keeps the rows and the unique
observation index (SQLite's batch copy would have dropped it). Neither backfill marks
a row changed for the warehouse export.

0029: a customer's address gets its mailbox key where the provider folds it to another
spelling (as the gateway's own ``folded_email`` does with the default settings), and
none where the address is its own key."""

from __future__ import annotations

import uuid

from sqlalchemy import Uuid, bindparam, text

from gateway.db.migrate import downgrade, upgrade
from gateway.identity.config import DEFAULT_CONFIG
from gateway.identity.values import folded_email
from tests.db.test_migrations import empty_database  # noqa: F401 (the fixture)
from tests.own_database import run_sql

_CUSTOMER = text(
    "INSERT INTO customers (id, email, created_at, updated_at) "
    "VALUES (:id, :email, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
).bindparams(bindparam("id", type_=Uuid()))
_ATTRIBUTE = text(
    "INSERT INTO attributes (customer_id, name, value, source, observed_at) "
    "VALUES (:id, 'email', 'a@example.com', :source, CURRENT_TIMESTAMP)"
).bindparams(bindparam("id", type_=Uuid()))
_IDENTITY = text(
    "INSERT INTO identities (customer_id, source, external_id, created_at) "
    "VALUES (:id, 'shopify', :external, CURRENT_TIMESTAMP)"
).bindparams(bindparam("id", type_=Uuid()))
_SPLIT_LINK = text(
    "INSERT INTO identity_links (customer_id, identity_id, rule, reason, created_at) "
    "VALUES (:id, 1, 'unmerge', :reason, CURRENT_TIMESTAMP)"
).bindparams(bindparam("id", type_=Uuid()))
_NAMED = text(
    "SELECT a.customer_id, a.source, i.external_id FROM attributes a "
    "LEFT JOIN identities i ON i.id = a.identity_id"
)
_STAMPS = {
    table: text(f"SELECT id, changed_at FROM {table} ORDER BY id")
    for table in ("attributes", "customers")
}
_INDEX = {
    "postgresql": "SELECT count(*) FROM pg_indexes WHERE indexname = 'uq_attributes_observation'",
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE name = 'uq_attributes_observation'",
}


def _named(url: str) -> dict[tuple[uuid.UUID, str], str | None]:
    rows = run_sql(url, _NAMED)
    return {(uuid.UUID(str(c)), source): external for c, source, external in rows}


def _observation_index(url: str) -> bool:
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    return bool(run_sql(url, text(_INDEX[dialect]))[0][0])


def test_0028_names_the_identity_where_one_identity_of_the_source_reported_it(
    empty_database: str,  # noqa: F811 (the fixture)
) -> None:
    upgrade(empty_database, "0027")
    # One shop identity; two (merged); one left after another was split off.
    single, merged, split = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    customers = (single, merged, split)
    run_sql(empty_database, _CUSTOMER, [{"id": c, "email": None} for c in customers])
    run_sql(
        empty_database,
        _ATTRIBUTE,
        [{"id": c, "source": s} for c in customers for s in ("shopify", "api")],
    )
    identities = ((single, "s1"), (merged, "m1"), (merged, "m2"), (split, "k1"))
    run_sql(empty_database, _IDENTITY, [{"id": c, "external": e} for c, e in identities])
    run_sql(empty_database, _SPLIT_LINK, [{"id": uuid.uuid4(), "reason": f"split from {split}"}])
    stamps = run_sql(empty_database, _STAMPS["attributes"])
    upgrade(empty_database)
    # Filling a column the export does not carry marks no row changed.
    assert run_sql(empty_database, _STAMPS["attributes"]) == stamps
    expected = {
        (single, "shopify"): "s1",
        (single, "api"): None,
        (merged, "shopify"): None,
        (merged, "api"): None,
        (split, "shopify"): None,
        (split, "api"): None,
    }
    assert _named(empty_database) == expected
    downgrade(empty_database, "0027")
    assert _observation_index(empty_database)
    upgrade(empty_database)
    assert _named(empty_database) == expected
    assert _observation_index(empty_database)


ADDRESSES: dict[str | None, str | None] = {
    "ada.lovelace@gmail.com": "adalovelace@gmail.com",
    "ada.l+news@googlemail.com": "adal@gmail.com",
    "ada+shop@outlook.com": "ada@outlook.com",
    "ada.b@outlook.com": None,  # dots count at Outlook
    "adalovelace2@gmail.com": None,  # its own key
    "ada+x@example.com": None,  # plus tags count elsewhere
}


KEYED = {**ADDRESSES, None: None}  # and a customer without an address


def test_0029_keys_the_addresses_a_provider_folds(
    empty_database: str,  # noqa: F811 (the fixture)
) -> None:
    upgrade(empty_database, "0028")
    run_sql(
        empty_database,
        _CUSTOMER,
        [{"id": uuid.uuid4(), "email": email} for email in [*ADDRESSES, None]],
    )
    stamps = run_sql(empty_database, _STAMPS["customers"])
    upgrade(empty_database)
    assert run_sql(empty_database, _STAMPS["customers"]) == stamps
    read = text("SELECT email, email_key FROM customers")
    assert dict(run_sql(empty_database, read)) == KEYED
    # What the gateway stores for the same addresses from now on.
    assert {e: folded_email(e, DEFAULT_CONFIG) for e in ADDRESSES} == ADDRESSES
    downgrade(empty_database, "0028")
    upgrade(empty_database)
    assert dict(run_sql(empty_database, read)) == KEYED

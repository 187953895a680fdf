"""Locking customer rows in one order, so concurrent writers queue instead of deadlocking.

Every transaction that changes several customers (a merge, a batch of linked records,
a fold) locks all of them up front, in ascending id order, before it writes: two such
transactions then wait for each other at most, never in a cycle.  Inserts of child rows
(identities, attributes) lock their customer ``FOR KEY SHARE`` (migration 0006's
triggers, or a plain foreign key), which a row already locked here by the same
transaction satisfies.  SQLite has one writer at a time and needs none of this.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.bulk import is_postgres
from gateway.db.models import Customer
from gateway.identity.linkage.lookup import matching


async def lock_customers(
    connection: AsyncConnection, customer_ids: Iterable[uuid.UUID], *, deleting: bool = False
) -> set[uuid.UUID]:
    """Lock these customers in id order until the transaction ends; returns those that
    exist.  ``deleting``: ``FOR UPDATE`` (a row about to be deleted, or whose key a
    child is about to move to, must exclude key-share lockers); otherwise ``FOR NO KEY
    UPDATE``, which leaves concurrent inserts of child rows free."""
    ids = set(customer_ids)
    if not ids:
        return set()
    found: set[uuid.UUID] = set()
    for clause in matching(connection, Customer.id, ids):
        # ORDER BY under the locking clause: Postgres locks rows as the sort emits them.
        statement = select(Customer.id).where(clause).order_by(Customer.id)
        if is_postgres(connection):
            statement = statement.with_for_update(key_share=not deleting)
        found.update((await connection.execute(statement)).scalars())
    return found

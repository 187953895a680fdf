"""The database's locks: customer rows locked in one order, and one run at a time.

**Rows.** Locking customer rows in one order, so concurrent writers queue instead of deadlocking.

Every transaction that changes several customers (a merge, a batch of linked records,
a fold) locks all of them up front, in ascending id order, before it writes: two such
transactions then wait for each other at most, never in a cycle.  Inserts of child rows
(identities, attributes) lock their customer ``FOR KEY SHARE`` (migration 0006's
triggers, or a plain foreign key), which a row already locked here by the same
transaction satisfies.  SQLite has one writer at a time and needs none of this.

**Runs.** One run at a time: a named lock that a second taker is refused, never queued behind.

Exports and retention runs may be started by the command line, an admin's API call or
the schedule inside ``gateway serve``, on any instance. On Postgres the lock is a
session advisory lock (``pg_try_advisory_lock``): it holds across instances and is
released when the run ends or its process dies (the session goes with it), so a crash
never leaves a stale lock behind. Within one process a set of held names also refuses
a second taker: SQLite has no advisory locks, and there the embedded database has one
process to guard (several processes on one SQLite file are not coordinated).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.bulk import is_postgres
from gateway.db.models import Customer
from gateway.errors import DatabaseUnavailable
from gateway.identity.linkage.lookup import matching

logger = logging.getLogger("gateway.db.locks")

# Names of runs held by this process (SQLite has no advisory locks).
_HELD_HERE: set[str] = set()


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


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key for ``name`` (stable across processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.asynccontextmanager
async def run_lock(engine: AsyncEngine, name: str) -> AsyncIterator[bool]:
    """Yields whether this caller holds ``name`` now; False when a run holds it already
    (in this process or, on Postgres, in any other)."""
    if name in _HELD_HERE:
        yield False
        return
    _HELD_HERE.add(name)
    try:
        if engine.dialect.name != "postgresql":
            yield True
            return
        key = lock_key(name)
        async with engine.connect() as connection:
            held = bool(await connection.scalar(text(f"SELECT pg_try_advisory_lock({key})")))
            await connection.commit()
            try:
                yield held
            finally:
                if held:
                    await _unlock(connection, key, name)
    finally:
        _HELD_HERE.discard(name)


async def _unlock(connection: AsyncConnection, key: int, name: str) -> None:
    """Release the run's lock. A session lost during the run (failover, idle timeout)
    has released it already: the run's own outcome stands, and the broken connection is
    dropped rather than handed back to the pool."""
    try:
        await connection.scalar(text(f"SELECT pg_advisory_unlock({key})"))
        await connection.commit()
    except (SQLAlchemyError, DatabaseUnavailable, OSError):  # the run stands
        logger.warning("run lock %s: its session was lost before the unlock", name)
        await connection.invalidate()

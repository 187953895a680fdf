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

A lock's session can die while its run goes on (a failover, a server's idle timeout,
a proxy's): the lock goes with it, and another instance could start the same run.  So
while a run holds the lock, a watch asks its session every ``WATCH_EVERY_S`` (which
also keeps it from idling out); a session found dead is replaced by a new one that takes
the lock again, and when another run took it meanwhile, this run is stopped
(``RunLockLost``) rather than run beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.bulk import is_postgres, matching
from gateway.db.models import Customer
from gateway.errors import Conflict, DatabaseUnavailable

logger = logging.getLogger("gateway.db.locks")

# Names of runs held by this process (SQLite has no advisory locks).
_HELD_HERE: set[str] = set()
# How often a held run lock's session is checked (and kept from idling out).
WATCH_EVERY_S = 5.0
_LOST = (SQLAlchemyError, DatabaseUnavailable, OSError)


class RunLockLost(Conflict):
    """The session holding a run's lock died mid-run, and another run took the lock."""


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
async def run_lock(
    engine: AsyncEngine, name: str, *, watch_every: float = WATCH_EVERY_S
) -> AsyncIterator[bool]:
    """Yields whether this caller holds ``name`` now; False when a run holds it already
    (in this process or, on Postgres, in any other).  ``RunLockLost`` out of the block
    when the lock was lost and taken by another run while the block ran."""
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
            if not held:
                yield False
                return
            owner = asyncio.current_task()
            if owner is None:  # pragma: no cover - an async with always runs in a task
                raise RuntimeError("run_lock is taken from a task")
            watch = _Watch(engine, connection, key, name, owner)
            watching = asyncio.create_task(watch.run(watch_every), name=f"run-lock:{name}")
            try:
                yield True
            except asyncio.CancelledError:
                if watch.lost and owner.uncancel() == 0:
                    raise RunLockLost(
                        f"the run stopped: the database session holding its lock ({name}) "
                        "was lost, and another run took the lock"
                    ) from None
                raise
            finally:
                watch.stop.set()  # not cancelled: a lock half taken again is not left behind
                await watching
                if not watch.lost:
                    await _unlock(watch.connection, key, name)
                if watch.connection is not connection:
                    await watch.connection.close()
    finally:
        _HELD_HERE.discard(name)


class _Watch:
    """Checks a held run lock's session, takes the lock again on a new session when it
    died, and stops the run (cancels the task that took the lock) when it cannot."""

    def __init__(
        self,
        engine: AsyncEngine,
        connection: AsyncConnection,
        key: int,
        name: str,
        owner: asyncio.Task[object],
    ) -> None:
        self._engine, self._key, self._name, self._owner = engine, key, name, owner
        self._first = connection
        self.connection = connection  # the session holding the lock now
        self.stop = asyncio.Event()
        self.lost = False

    async def run(self, every: float) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), every)
                return
            try:
                await self.connection.scalar(text("SELECT 1"))
                await self.connection.commit()
                continue
            except _LOST:
                await self.connection.invalidate()
            if await self._retake():
                logger.warning("run lock %s: its session was lost; taken again", self._name)
                continue
            logger.error("run lock %s: its session was lost and another run took it", self._name)
            self.lost = True
            self._owner.cancel()
            return

    async def _retake(self) -> bool:
        try:
            connection = await self._engine.connect()
        except _LOST:
            return False  # the database is out of reach: the run cannot go on anyway
        try:
            taken = bool(await connection.scalar(text(f"SELECT pg_try_advisory_lock({self._key})")))
            await connection.commit()
        except _LOST:
            taken = False
        if not taken:
            await connection.close()
            return False
        if self.connection is not self._first:
            await self.connection.close()  # an earlier replacement, dead too
        self.connection = connection
        return True


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


_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


async def committed_before(engine: AsyncEngine) -> datetime:
    """A moment before which every row stamped with its transaction's start is committed
    (an export's window end, a scores refresh's ``computed_at``). On Postgres such a
    stamp (``changed_at``) is the writing transaction's start, so a row stamped earlier
    may still be committing: the oldest open transaction's start, or now, bounds them
    all. On SQLite the write lock for an instant: no writer is between its first write
    and its commit, and SQLite's own clock is the one its triggers stamp with."""
    async with engine.connect() as connection:
        if is_postgres(connection):
            value = await connection.scalar(
                text(
                    "SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND xact_start IS NOT NULL))"
                )
            )
            await connection.rollback()
            assert isinstance(value, datetime)
            return value.astimezone(UTC)
        await connection.exec_driver_sql("BEGIN IMMEDIATE")
        stamp = await connection.exec_driver_sql(f"SELECT {_SQLITE_NOW}")
        value = stamp.scalar_one()
        await connection.exec_driver_sql("COMMIT")
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)

"""One run at a time: a named lock that a second taker is refused, never queued behind.

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
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_HELD_HERE: set[str] = set()


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
                    await connection.scalar(text(f"SELECT pg_advisory_unlock({key})"))
                    await connection.commit()
    finally:
        _HELD_HERE.discard(name)

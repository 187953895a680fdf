"""Running a unit of work in its own transaction again when the database says "try again".

Concurrent writers that meet on the same rows can make Postgres abort one of them with
``deadlock_detected`` (40P01) or, above READ COMMITTED, ``serialization_failure``
(40001); SQLite answers "database is locked" when its one writer slot stays taken
past the busy timeout, or at once when a reader's snapshot went stale before it wrote.
The work rolled back entirely, so running it again from the start is safe: the callable
given to ``retry_transaction`` must open (and commit) its transaction itself, never run
inside a caller's.

Waits grow exponentially with full jitter (a random time between 0 and the capped
exponential), so two transactions that collided do not collide again in step; the
number of attempts is bounded, after which the last error goes to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import IntegrityError

from gateway.observability import metrics

if TYPE_CHECKING:
    from gateway.settings import Settings

logger = logging.getLogger("gateway.db.retries")
T = TypeVar("T")

# SQLSTATEs that mean "this transaction lost a race; the same work may succeed now".
_RETRYABLE_SQLSTATES = {"40P01": "deadlock", "40001": "serialization_failure"}
_SQLITE_LOCKED = ("database is locked", "database table is locked")


class StaleRead(Exception):
    """Raised by work that finds, once it holds its row locks, that rows it read before
    taking them are gone or moved (a concurrent merge folded them away, an erasure
    deleted them, an unmerge split an identity off):
    what Postgres reports as a serialization failure at stricter isolation levels, and
    with the same remedy, the whole transaction again on fresh reads.

    ``keys``: lock keys the work should hold from the start of its next attempt, so the
    writer that moved what it read cannot move it again between its reads and its locks
    (the identity linker's, gateway/identity/linkage/resolution.py)."""

    def __init__(self, message: str, keys: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.keys = keys


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a transaction is retried (settings ``db_retry_*``)."""

    attempts: int = 5  # in all, the first one included
    base_s: float = 0.02  # the cap of the first wait; it doubles for each retry
    cap_s: float = 1.0  # no single wait is longer

    @classmethod
    def of(cls, settings: Settings) -> RetryPolicy:
        """As the settings say (``GATEWAY_DB_RETRY_ATTEMPTS``, ``_BASE_S``, ``_CAP_S``)."""
        return cls(settings.db_retry_attempts, settings.db_retry_base_s, settings.db_retry_cap_s)

    def delay(self, retry: int, draw: Callable[[float, float], float] = random.uniform) -> float:
        """The wait before retry number ``retry`` (1 for the first): full jitter."""
        return draw(0.0, min(self.cap_s, self.base_s * 2 ** (retry - 1)))


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def transient_reason(exc: BaseException) -> str | None:
    """``deadlock``, ``serialization_failure``, ``database_locked``, ``stale_read`` when ``exc`` (or
    what it wraps: SQLAlchemy's ``DBAPIError.orig``, an asyncpg error raised from a raw
    COPY, a cause) says the transaction may succeed if run again; otherwise None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StaleRead):
            return "stale_read"
        # asyncpg errors carry ``sqlstate``; SQLAlchemy's asyncpg adapter ``pgcode`` too.
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and code in _RETRYABLE_SQLSTATES:
            return _RETRYABLE_SQLSTATES[code]
        if isinstance(current, sqlite3.OperationalError) and str(current).startswith(
            _SQLITE_LOCKED
        ):
            return "database_locked"
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return None


@asynccontextmanager
async def stale_if_customer_gone() -> AsyncIterator[None]:
    """``StaleRead`` for a row refused for naming a customer no longer stored (folded
    away by a merge, or erased, after the work looked it up): Postgres's foreign-key
    violation naming ``customers`` (a constraint's name ends with the table it refers
    to; a checking trigger's message names it, gateway/db/foreign_keys.py); SQLite names
    no table, so any of its foreign-key failures.
    Other integrity errors pass through."""
    try:
        yield
    except IntegrityError as exc:
        orig = exc.orig
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        message = str(orig)
        if (code == "23503" and "customers" in message) or (
            "FOREIGN KEY constraint failed" in message
        ):
            raise StaleRead("a customer the work names is gone") from exc
        raise


# The task running the first attempt of a transaction ``retry_transaction`` can run
# again (gateway/identity/linkage/resolution.lock_keys reads optimistically then). The
# task, not a flag: tasks and threads started inside an attempt copy the context, and
# work of theirs is not retried by it.
_FIRST_OF_RETRIED: ContextVar[asyncio.Task[Any] | None] = ContextVar(
    "first_of_retried", default=None
)


def first_of_retried() -> bool:
    """Whether the running transaction is the first attempt of one that is run again
    after a transient failure (``retry_transaction`` with attempts left), in the task
    that runs it: work that can find out it read too early may then read without a
    lock and pay a retry if it did."""
    owner = _FIRST_OF_RETRIED.get()
    return owner is not None and owner is asyncio.current_task()


async def retry_transaction(
    work: Callable[[], Awaitable[T]],
    operation: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await work()``, again after a transient failure, up to ``policy.attempts`` in all.

    ``operation`` names the work in the log and the metric (never data: no ids of
    people, no values)."""
    attempt = 1
    attempts = policy.attempts
    while True:
        optimistic = attempt == 1 and attempts > 1
        token = _FIRST_OF_RETRIED.set(asyncio.current_task() if optimistic else None)
        try:
            return await work()
        except Exception as exc:
            reason = transient_reason(exc)
            if reason == "database_locked" and optimistic:
                # SQLite: an optimistic first attempt that found someone had written
                # since it read (or was writing): expected under load, not a lock wait
                # run out, and not counted against the attempts.
                reason = "optimistic_conflict"
                attempts += 1
            if reason is None or attempt >= attempts:
                raise
            wait = policy.delay(attempt)
            metrics.TRANSACTION_RETRIES.labels(operation, reason).inc()
            logger.log(
                logging.INFO if reason == "optimistic_conflict" else logging.WARNING,
                "transaction retried",
                extra={
                    "operation": operation,
                    "reason": reason,
                    "attempt": attempt,
                    "max_attempts": policy.attempts,
                    "wait_ms": round(wait * 1000, 1),
                },
            )
            await sleep(wait)
            attempt += 1
        finally:
            _FIRST_OF_RETRIED.reset(token)

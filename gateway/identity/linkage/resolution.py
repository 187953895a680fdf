"""Linking batches of source records to unified customers, one transaction per batch."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gateway.db.retries import (
    DEFAULT_RETRY,
    RetryPolicy,
    StaleRead,
    first_of_retried,
    retry_transaction,
)
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.linkage.linker import Decision, KnownState, Linker
from gateway.identity.linkage.lookup import load_state
from gateway.identity.linkage.repository import decide_writing_records, write_batch
from gateway.identity.records import PreparedRecord, prepare
from gateway.identity.scoring.comparison import Scorer
from gateway.identity.scoring.model import LinkageModel
from gateway.identity.scoring.model_store import active_scorer, identity_count

if TYPE_CHECKING:
    from gateway.privacy.suppressions import Suppressions

# Key locks are striped: a big batch takes every stripe (imports serialise), a single
# record a few (unrelated webhooks run side by side), and the lock table stays small.
LOCK_STRIPES = 1024
_LOCK_NAMESPACE = 0x1D3E  # keeps these advisory locks apart from anyone else's
_ATTEMPTS = 3


def key_stripe(key: str) -> int:
    """The advisory lock stripe ``key`` is held by (``lock_keys``)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % LOCK_STRIPES


def record_keys(record: PreparedRecord) -> Iterator[str]:
    """The deterministic keys a record links by (a generator: a batch has thousands)."""
    yield f"id:{record.source}:{record.external_id}"
    if record.email_key:
        yield f"email:{record.email_key}"
    if record.phone:
        yield f"phone:{record.phone}"


def customer_keys(
    identities: Iterable[tuple[str, str]], email_keys: Iterable[str], phones: Iterable[str]
) -> Iterator[str]:
    """The keys of ``record_keys`` (same format) for what a stored customer is known by:
    what a writer must lock to exclude the linker from that customer (erasure)."""
    for source, external_id in identities:
        yield f"id:{source}:{external_id}"
    for email_key in email_keys:
        yield f"email:{email_key}"
    for phone in phones:
        yield f"phone:{phone}"


async def lock_keys(
    connection: AsyncConnection,
    keys: Iterable[str],
    *,
    shared: bool = False,
    custom_plans: bool = False,
) -> None:
    """Hold the stripes of these keys until the transaction ends (Postgres; SQLite has
    one writer at a time).  Two records for one new email then cannot both decide "new
    customer", and an erasure cannot slip between a batch's tombstone check and its
    write.

    ``shared``: for a writer that links nobody and creates no one (an ESP's batch of
    engagement events, found by address), only an erasure (exclusive) must be kept
    out; such writers then run side by side, however many stripes each holds (Postgres:
    on SQLite writers take turns, whatever they lock).

    ``custom_plans``: the rest of the transaction plans each statement for its own
    arrays (``plan_cache_mode``), set in this statement: no round trip of its own.

    On SQLite, one transaction from here (``_sqlite_transaction``): it has one writer
    at a time, but its driver begins a transaction only at the first write, and until
    then each read saw whatever was committed when it ran. A batch's reads and decision
    could then precede an unmerge's commit and its write follow it (the linker gave a
    split identity's new address to the customer it had left)."""
    if connection.dialect.name != "postgresql":
        if connection.dialect.name == "sqlite":
            await _sqlite_transaction(connection)
        return
    stripes = set(map(key_stripe, set(keys)))  # keys deduplicated first: fewer hashes
    # Ascending order everywhere, so two transactions can never wait on each other in a
    # cycle (a writer that finds it needs more stripes later only tries them:
    # ``try_lock_keys``).
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    locking = f"SELECT {function}(:namespace, s) FROM unnest(CAST(:stripes AS int[])) AS s"
    if custom_plans:
        locking = (
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
            f"(SELECT count(*) FROM ({locking}) AS locked)"
        )
    await connection.execute(
        text(locking), {"namespace": _LOCK_NAMESPACE, "stripes": sorted(stripes)}
    )


async def _sqlite_transaction(connection: AsyncConnection) -> None:
    """A transaction on SQLite from here: all the work's reads see one snapshot, and its
    first write fails at once (``database is locked``: retried) if anyone committed since
    or is writing now.

    The first attempt of a retried transaction only begins it (deferred): a writer that
    committed meanwhile costs this one a retry. Any other (a retry, or work that is not
    retried: ``db_retry_attempts`` 1) takes the write lock now (immediate):
    reading under it, it cannot fail so, but it holds every other writer off while it
    reads and decides (an import's 5,000-record batch, seconds: other writers' waits
    then ran past SQLite's busy timeout, and the audit log's and impressions' writes
    failed). Relies on the driver's legacy transaction control (Python's default, which
    the engine keeps): a manual BEGIN is then committed or rolled back by it."""
    await _sqlite_begin(connection, immediate=not first_of_retried())


async def lock_for_writing(connection: AsyncConnection) -> None:
    """SQLite: the database's write lock from here, on every attempt: for rare work a
    person waits for (a review's resolution), which an optimistic read could refuse on a
    stale view (an identity limit checked on it) with no write to find out. Nothing on
    Postgres, whose writers lock the rows they rely on."""
    if connection.dialect.name == "sqlite":
        await _sqlite_begin(connection, immediate=True)


async def _sqlite_begin(connection: AsyncConnection, *, immediate: bool) -> None:
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is not None and not driver.in_transaction:
        await connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
    elif immediate or driver is None:
        # Already begun (a savepoint of a caller's), or not known: a write that changes
        # nothing takes the lock (ids set to themselves, and constant false).
        await connection.exec_driver_sql("UPDATE customers SET id = id WHERE 0")


async def try_lock_keys(connection: AsyncConnection, keys: Iterable[str]) -> bool:
    """Take the stripes of these keys (exclusive) only if none must be waited for (true
    on SQLite, whose one transaction covers every key, ``lock_keys``): for a writer that
    already holds stripes and found it needs more. Waiting for them out of ascending
    order could close a cycle with a writer taking its own in order; refused, it lets go
    of everything and starts again holding them all."""
    if connection.dialect.name != "postgresql":
        return True
    stripes = sorted(set(map(key_stripe, set(keys))))
    taken = await connection.scalar(
        text(
            "SELECT bool_and(pg_try_advisory_xact_lock(:namespace, s))"
            " FROM unnest(CAST(:stripes AS int[])) AS s"
        ),
        {"namespace": _LOCK_NAMESPACE, "stripes": stripes},
    )
    return taken is not False


async def _lock_keys(
    connection: AsyncConnection, records: Sequence[PreparedRecord], held: Iterable[str] = ()
) -> None:
    keys = (key for record in records for key in record_keys(record))
    await lock_keys(connection, itertools.chain(keys, held))


async def _load(
    connection: AsyncConnection, records: Sequence[PreparedRecord], config: IdentityConfig
) -> KnownState:
    """``load_state`` with a plan made for each query's own arrays (Postgres).

    The lookups are prepared statements, and after five runs on a connection Postgres may
    switch to a generic plan costed on the statistics of the moment: early in an import
    that is nearly empty tables, and the plan then stays bad (in an import of 1000-record
    batches the identity lookup went from 5 ms to 50 ms a batch).  Only for the reads:
    the foreign-key checks of the writes are cached plans too, and re-planning them for
    every row doubled the COPYs."""
    if connection.dialect.name != "postgresql":
        return await load_state(connection, records, config)
    await connection.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    state = await load_state(connection, records, config)
    await connection.execute(text("SET LOCAL plan_cache_mode TO DEFAULT"))
    return state


# Given a batch under its key locks, the records that may be linked (an order-keeping
# subset); the rest are left out of the write and counted.
Screen = Callable[[AsyncConnection, Sequence[PreparedRecord]], Awaitable[list[PreparedRecord]]]


@dataclass(frozen=True, slots=True)
class Screened:
    decisions: list[Decision]
    dropped: int  # records the screen left out


class Resolver:
    """Links records to customers: ``link`` a prepared batch, or ``link_one`` raw record.

    Scores with the database's active linkage model, read per batch (a model trained or
    changed meanwhile applies from the next batch on), unless given a ``model``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        config: IdentityConfig = DEFAULT_CONFIG,
        *,
        model: LinkageModel | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        suppressions: Suppressions | None = None,
    ) -> None:
        # ``suppressions``: a customer given an address that withdrew email marketing
        # before anyone had it (created with it, or a stored one taking it on) gets
        # that withdrawal.
        self._suppressions = suppressions
        # ``retry`` None: the sessions join a caller's transaction (a savepoint of it),
        # and only the caller can run the whole unit of work again.
        self._retry = retry
        self._sessions = sessions
        self._config = config
        self._scorer = Scorer(model) if model is not None else None

    @property
    def config(self) -> IdentityConfig:
        return self._config

    async def link(self, records: Sequence[PreparedRecord]) -> list[Decision]:
        """Link and store a batch atomically: all of it is written, or none."""
        return (await self.link_screened(records, None)).decisions

    async def link_screened(
        self, records: Sequence[PreparedRecord], screen: Screen | None
    ) -> Screened:
        """``link``, with ``screen`` deciding which records may be linked at all once the
        batch's keys are locked: a check made before the locks (tombstones of erased
        customers) could be stale by the time the batch writes.  A deadlock or
        serialization failure runs the batch again (``retry``)."""
        if self._retry is None:
            return await self._link_once(records, screen, set())
        held: set[str] = set()  # keys a stale attempt asked the next ones to hold
        return await retry_transaction(
            lambda: self._link_once(records, screen, held), "identity_link", self._retry
        )

    async def _link_once(
        self, records: Sequence[PreparedRecord], screen: Screen | None, held: set[str]
    ) -> Screened:
        for attempt in range(_ATTEMPTS):
            try:
                async with self._sessions.begin() as session:
                    # Core on the session's connection: no ORM unit of work for bulk rows.
                    connection = await session.connection()
                    await _lock_keys(connection, records, held)
                    kept = await screen(connection, records) if screen else list(records)
                    decisions = await self._write(connection, kept) if kept else []
                    return Screened(decisions, len(records) - len(kept))
            except StaleRead as exc:
                held.update(exc.keys)
                raise
            except IntegrityError:
                # Someone committed one of our keys first (on SQLite, or an email that only
                # the unique constraint guards); a fresh attempt sees their row and links to it.
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _write(
        self, connection: AsyncConnection, records: Sequence[PreparedRecord]
    ) -> list[Decision]:
        scorer = self._scorer or await active_scorer(connection)
        scorer = scorer.for_population(await identity_count(connection) + len(records))
        state = await _load(connection, records, self._config)
        batch = list(records)
        linker = Linker(self._config, scorer)
        decisions, written = await decide_writing_records(
            connection, batch, state, partial(linker.decide, batch, state)
        )
        await write_batch(connection, decisions, state, self._config, scorer.model.version, written)
        if self._suppressions is not None:
            # Every customer the batch gives an address, created or stored (an email
            # change, an import or a fold handing them one): a withdrawal kept for it
            # reaches them; one they were given before is not recorded again.
            acquired = [
                (d.customer_id, email)
                for d in decisions
                for email in (d.record.values.get("email"), d.record.given_email)
                if email
            ]
            await self._suppressions.apply(connection, acquired)
        return decisions

    async def link_one(self, data: Mapping[str, Any], source: str) -> Decision:
        """Link one raw record (a webhook, an API call); ``RecordError`` if it is invalid."""
        (decision,) = await self.link([prepare(data, source, self._config)])
        return decision

"""Pipelined linking for bulk imports on Postgres: batch N+1 is read and decided while
batch N is still being written.

Each batch keeps its own transaction (a crash leaves whole batches), and the batches
commit in order.  Two things make the overlap safe:

* The key stripes are held by a session-level advisory lock on one connection of the
  pipeline's own, from before a batch reads until it commits, so no other writer can
  commit one of its keys in between.  While the next batch needs only stripes the
  pipeline can take at once and nobody is queued for ours, batches hand the stripes on;
  otherwise the pipeline drains (commits what it has, lets go of everything) and queues
  for its stripes like anyone else, so a webhook waits at most about a batch.
* Batch N+1's reads may run before batch N commits, so they may miss what N writes: N's
  identities, keys and candidates are laid over what N+1 read (``carry_over``), and N's
  golden emails are added once it has committed, before N+1 writes anything.

If batch N fails on a constraint (an email only the unique index guards), it is linked
again on its own, and N+1 is decided afresh.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gateway.identity.config import IdentityConfig
from gateway.identity.linkage import Candidate, Decision, KnownState, Linker
from gateway.identity.lookup import MATCH_COLUMNS
from gateway.identity.records import PreparedRecord
from gateway.identity.repository import PlannedWrite, plan_write, write_batch
from gateway.identity.resolution import ATTEMPTS, LOCK_NAMESPACE, load_fresh, stripes_of


@dataclass(slots=True)
class Carry:
    """What a batch writes, as the next batch's reads would have found it."""

    identities: dict[tuple[str, str], tuple[int, uuid.UUID]] = field(default_factory=dict)
    owners: dict[int, uuid.UUID] = field(default_factory=dict)  # identity id → customer
    latest: dict[int, PreparedRecord] = field(default_factory=dict)  # identity id → record
    sizes: dict[uuid.UUID, int] = field(default_factory=dict)  # identities per customer, after


def carry_over(decisions: Sequence[Decision], planned: PlannedWrite, state: KnownState) -> Carry:
    carry = Carry(latest=planned.latest)
    for position, decision in enumerate(decisions):
        identity_id = planned.identity_ids[position]
        carry.owners[identity_id] = decision.customer_id
        if decision.identity_id is None and decision.duplicate_of is None:
            carry.identities[decision.record.identity_key] = (identity_id, decision.customer_id)
            owner = decision.customer_id
            carry.sizes[owner] = carry.sizes.get(owner, state.sizes.get(owner, 0)) + 1
    return carry


def lay_over(state: KnownState, carry: Carry, records: Sequence[PreparedRecord]) -> None:
    """Add a still-uncommitted batch's effects to what ``records``' reads found, the way
    ``load_state`` would have seen them after that batch's commit (it may already have)."""
    keys = {record.identity_key for record in records}
    emails = {record.email_key for record in records if record.email_key}
    phones = {record.phone for record in records if record.phone}
    wanted = {key for record in records for key in record.block_keys()}
    for identity_key, value in carry.identities.items():
        if identity_key in keys:
            state.identities.setdefault(identity_key, value)
    # A candidate read before the batch rewrote it has stale fields: the carried one wins.
    for block, members in state.blocks.items():
        if any(member.ref in carry.latest for member in members):
            state.blocks[block] = [member for member in members if member.ref not in carry.latest]
    for identity_id, record in carry.latest.items():
        owner = carry.owners[identity_id]
        if record.email_key in emails:
            state.emails.setdefault(record.email_key, owner)
            state.customer_emails.setdefault(owner, set()).add(record.email_key)
        if record.phone in phones:
            state.phones.setdefault(record.phone, set()).add(owner)
            if record.email_key:
                state.customer_emails.setdefault(owner, set()).add(record.email_key)
        shared = [block for block in record.block_keys() if block in wanted]
        if shared:
            candidate = Candidate(identity_id, owner, record.comparable())
            for block in shared:
                state.blocks.setdefault(block, []).append(candidate)
    for identity_id, _owner in state.identities.values():
        written = carry.latest.get(identity_id)
        if written is not None:
            state.stored[identity_id] = {name: getattr(written, name) for name in MATCH_COLUMNS}
    state.sizes.update(carry.sizes)


@dataclass(slots=True)
class _Batch:
    records: Sequence[PreparedRecord]
    session: AsyncSession
    state: KnownState
    decisions: list[Decision]
    planned: PlannedWrite


class Pipeline:
    """``push`` batches in order; each returns the batches committed meanwhile, and
    ``drain`` the rest.  Use as an async context manager (it owns a connection)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], config: IdentityConfig) -> None:
        self._sessions = sessions
        self._config = config
        self._linker = Linker(config)
        self._holder: AsyncConnection | None = None
        self._held: set[int] = set()
        self._writing: asyncio.Task[dict[str, uuid.UUID]] | None = None
        self._written: _Batch | None = None

    async def __aenter__(self) -> Pipeline:
        # A connection of its own for the whole import: session-level locks belong to it
        # (a session would hand its connection back to the pool at each commit).
        engine = self._sessions.kw["bind"]
        self._holder = await engine.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._writing is not None:
                await asyncio.gather(self._writing, return_exceptions=True)
                self._writing = self._written = None
        finally:
            if self._holder is not None:
                try:
                    # Unconditionally: a lock statement cut short may hold stripes unrecorded.
                    await self._lock_sql("SELECT pg_advisory_unlock_all()")
                    self._held.clear()
                except BaseException:
                    # Never hand a connection holding locks back to the pool: drop it.
                    await self._holder.invalidate()
                    raise
                finally:
                    await self._holder.close()

    async def push(self, records: Sequence[PreparedRecord]) -> list[list[Decision]]:
        committed: list[list[Decision]] = []
        stripes = stripes_of(records)
        if self._written is not None and not await self._extend(stripes):
            committed += await self.drain()
        if self._written is None:
            await self._hold(stripes)
        previous = self._written
        batch = await self._decide(records, previous)
        if previous is not None:
            try:
                committed.append(await self._settle(previous, batch))
            except BaseException:
                await _discard(batch)
                raise
            await self._release(self._held - stripes)
        self._writing = asyncio.create_task(self._write(batch))
        self._written = batch
        return committed

    async def drain(self) -> list[list[Decision]]:
        """Commit the batch in flight and let go of every stripe."""
        committed: list[list[Decision]] = []
        if self._written is not None:
            committed.append(await self._settle(self._written, None))
        await self._release(set(self._held))
        return committed

    async def _settle(self, written: _Batch, following: _Batch | None) -> list[Decision]:
        """Wait for ``written`` to commit (linking it again alone if a constraint stopped
        it); hand its golden emails to ``following``, decided afresh if it had to be."""
        assert self._writing is not None
        writing, self._writing, self._written = self._writing, None, None
        try:
            given = await writing
        except IntegrityError:
            decisions = await self._link_alone(written.records)
            if following is not None:
                # What it was decided against never committed: read everything again.
                await _discard(following)
                fresh = await self._decide(following.records, None)
                (following.session, following.state) = (fresh.session, fresh.state)
                (following.decisions, following.planned) = (fresh.decisions, fresh.planned)
            return decisions
        if following is not None:
            following.state.golden_emails.update(given)
        return written.decisions

    async def _decide(self, records: Sequence[PreparedRecord], previous: _Batch | None) -> _Batch:
        session = self._sessions()
        try:
            connection = await session.connection()
            state = await load_fresh(connection, records, self._config)
            if previous is not None:
                lay_over(
                    state, carry_over(previous.decisions, previous.planned, previous.state), records
                )
            decisions = self._linker.decide(list(records), state)
            planned = await plan_write(connection, decisions, state)
        except BaseException:
            await _discard_session(session)
            raise
        return _Batch(records, session, state, decisions, planned)

    async def _write(self, batch: _Batch) -> dict[str, uuid.UUID]:
        try:
            connection = await batch.session.connection()
            given = await write_batch(
                connection, batch.decisions, batch.state, self._config, batch.planned
            )
            await batch.session.commit()
        finally:
            await _discard_session(batch.session)
        return given

    async def _link_alone(self, records: Sequence[PreparedRecord]) -> list[Decision]:
        """A batch linked on its own, every read after everything before it committed (its
        stripes are still held)."""
        for attempt in range(ATTEMPTS):
            batch = await self._decide(records, None)
            try:
                await self._write(batch)
                return batch.decisions
            except IntegrityError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _lock_sql(self, sql: str, **params: object) -> list[bool]:
        assert self._holder is not None
        try:
            result = await self._holder.execute(text(sql), params)
            values = [bool(value) for value in result.scalars()]
        except BaseException:
            await self._holder.rollback()
            raise
        # Session-level locks outlive the transaction: never sit idle in one.
        await self._holder.commit()
        return values

    async def _hold(self, stripes: set[int]) -> None:
        """Queue for the stripes, in ascending order like every other writer."""
        wanted = sorted(stripes - self._held)
        if wanted:
            await self._lock_sql(
                "SELECT pg_advisory_lock(:namespace, s) FROM unnest(CAST(:stripes AS int[])) AS s",
                namespace=LOCK_NAMESPACE,
                stripes=wanted,
            )
        self._held |= stripes

    async def _extend(self, stripes: set[int]) -> bool:
        """Take the extra stripes the next batch needs without waiting, unless someone is
        queued for stripes of ours; False when the pipeline should drain instead."""
        wanted = sorted(stripes - self._held)
        (waiting, *taken) = await self._lock_sql(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = CAST(:space AS oid) AND objsubid = 2)"
            " UNION ALL SELECT pg_try_advisory_lock(CAST(:namespace AS int), s)"
            " FROM unnest(CAST(:stripes AS int[])) AS s",
            space=LOCK_NAMESPACE,
            namespace=LOCK_NAMESPACE,
            stripes=wanted,
        )
        self._held |= {s for s, ok in zip(wanted, taken, strict=True) if ok}
        return not waiting and all(taken)

    async def _release(self, stripes: set[int]) -> None:
        if stripes:
            await self._lock_sql(
                "SELECT pg_advisory_unlock(:namespace, s)"
                " FROM unnest(CAST(:stripes AS int[])) AS s",
                namespace=LOCK_NAMESPACE,
                stripes=sorted(stripes),
            )
            self._held -= stripes


async def _discard(batch: _Batch) -> None:
    await _discard_session(batch.session)


async def _discard_session(session: AsyncSession) -> None:
    await session.rollback()
    await session.close()

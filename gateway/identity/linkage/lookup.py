"""Loading what the database already knows about the keys of one batch.

Single-table queries with one array parameter each (on Postgres), so a batch of
thousands costs a handful of round trips whatever the planner's statistics say.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.bulk import matching, rows_where_in
from gateway.db.identity_models import IdentityBlockKey, IdentityNeverLink, IdentityRecord
from gateway.db.models import Customer, Identity
from gateway.db.retries import StaleRead
from gateway.identity.config import IdentityConfig
from gateway.identity.linkage.linker import Candidate, Decision, KnownState
from gateway.identity.records import RECORD_FIELDS, PreparedRecord, refinement_value
from gateway.identity.scoring.comparison import FIELDS, Comparable
from gateway.identity.values import email_parts

# A record's fields as ``identity_records`` stores them for matching: the e-mail by its key.
MATCH_COLUMNS = tuple("email_key" if name == "email" else name for name in RECORD_FIELDS)


# Each of the scorer's ``FIELDS`` by its place in a row of ``_match_rows`` (every one
# is a stored column: ``index`` raises on import otherwise).
_PICK = itemgetter(
    *(1 + MATCH_COLUMNS.index("email_key" if name == "email" else name) for name in FIELDS)
)


def _comparable(row: Sequence[Any]) -> Comparable:
    """A row of ``_match_rows`` (identity id, then ``MATCH_COLUMNS``) as the scorer takes it:
    picked by position, without a dict per row (a batch reads tens of thousands)."""
    picked: Comparable = _PICK(row)
    return picked


async def _match_rows(connection: AsyncConnection, identity_ids: Iterable[int]) -> list[Any]:
    """(identity id, *MATCH_COLUMNS) of these identities' stored records."""
    columns = [getattr(IdentityRecord, name) for name in MATCH_COLUMNS]
    return await rows_where_in(
        connection, (IdentityRecord.identity_id, *columns), IdentityRecord.identity_id, identity_ids
    )


async def load_state(
    connection: AsyncConnection, records: Sequence[PreparedRecord], config: IdentityConfig
) -> KnownState:
    # Single-table queries only: right after a bulk load the planner's statistics are
    # stale, and a join it thinks is tiny can become a nested loop over every row.
    state = KnownState()
    by_source: defaultdict[str, list[str]] = defaultdict(list)
    for record in records:
        by_source[record.source].append(record.external_id)
    for source, ids in by_source.items():
        for clause in matching(connection, Identity.external_id, ids):
            rows = await connection.execute(
                select(Identity.id, Identity.customer_id, Identity.external_id).where(
                    Identity.source == source, clause
                )
            )
            for identity_id, customer_id, external_id in rows:
                state.identities[(source, external_id)] = (identity_id, customer_id)

    emails: list[tuple[int, str]] = []
    for clause in matching(
        connection, IdentityRecord.email_key, (r.email_key for r in records if r.email_key)
    ):
        result = await connection.execute(
            select(IdentityRecord.identity_id, IdentityRecord.email_key).where(clause)
        )
        emails += [(identity_id, key) for identity_id, key in result if key]
    phones: list[tuple[int, str, str | None]] = []
    for clause in matching(connection, IdentityRecord.phone, (r.phone for r in records if r.phone)):
        found = await connection.execute(
            select(
                IdentityRecord.identity_id, IdentityRecord.phone, IdentityRecord.email_key
            ).where(clause)
        )
        phones += [(identity_id, phone, key) for identity_id, phone, key in found if phone]
    wanted = {key for record in records for key in record.stored_block_keys()}
    blocks = await rows_where_in(
        connection,
        (IdentityBlockKey.key_hash, IdentityBlockKey.identity_id),
        IdentityBlockKey.key_hash,
        wanted,
    )
    owner_of = await _owners(
        connection, {i for i, _ in emails} | {i for i, *_ in phones} | {i for _, i in blocks}
    )

    for identity_id, email_key in emails:
        state.emails.setdefault(email_key, owner_of[identity_id])
        state.customer_emails.setdefault(owner_of[identity_id], set()).add(email_key)
    for identity_id, phone, other_key in phones:
        state.phones.setdefault(phone, set()).add(owner_of[identity_id])
        if other_key:
            state.customer_emails.setdefault(owner_of[identity_id], set()).add(other_key)
    # Customers written through the API have golden values but no identity records.
    stored = {r.values["email"]: r.email_key for r in records if r.email_key}
    for clause in matching(connection, Customer.email, stored):
        for held, customer_id in await connection.execute(
            select(Customer.email, Customer.id).where(clause)
        ):
            if held is None:
                continue
            state.golden_emails[held] = customer_id
            state.emails.setdefault(stored[held], customer_id)
            state.customer_emails.setdefault(customer_id, set()).add(stored[held])
    for clause in matching(connection, Customer.phone, (r.phone for r in records if r.phone)):
        for number, customer_id, address in await connection.execute(
            select(Customer.phone, Customer.id, Customer.email).where(clause)
        ):
            if number is None:
                continue
            state.phones.setdefault(number, set()).add(customer_id)
            folded = email_parts(address, config)[1] if address else None
            if folded:
                state.customer_emails.setdefault(customer_id, set()).add(folded)

    await _load_candidates(connection, blocks, owner_of, state)
    _refine(records, state, config.max_block_candidates)
    for identity_id, *values in await _match_rows(
        connection, (identity_id for identity_id, _ in state.identities.values())
    ):
        state.stored[identity_id] = dict(zip(MATCH_COLUMNS, values, strict=True))
    owners = {owner for _, owner in state.identities.values()} | set(state.emails.values())
    owners |= {owner for group in state.phones.values() for owner in group}
    owners |= set(owner_of.values())
    for clause in matching(connection, Identity.customer_id, owners):
        rows = await connection.execute(
            select(Identity.customer_id, func.count()).where(clause).group_by(Identity.customer_id)
        )
        for owner, count in cast("Iterable[tuple[uuid.UUID, int]]", rows):
            state.sizes[owner] = int(count)
    await _load_members(connection, state)
    await _load_never(connection, state)
    return state


async def _load_members(connection: AsyncConnection, state: KnownState) -> None:
    """Every stored record of the candidates' customers that have more than one: the
    clusters are judged whole, not by the one record that shares a block."""
    known: dict[int, Candidate] = {}
    for members in state.blocks.values():
        for candidate in members:
            known[candidate.ref] = candidate
    wanted = {c.customer_id for c in known.values() if state.sizes.get(c.customer_id, 1) > 1}
    missing: list[tuple[int, uuid.UUID]] = []
    for clause in matching(connection, Identity.customer_id, wanted):
        rows = await connection.execute(select(Identity.id, Identity.customer_id).where(clause))
        missing += [(i, owner) for i, owner in rows if i not in known]
    owner_of = dict(missing)
    for row in await _match_rows(connection, owner_of):
        known[row[0]] = Candidate(row[0], owner_of[row[0]], _comparable(row))
    for candidate in known.values():
        if candidate.customer_id in wanted:
            state.members.setdefault(candidate.customer_id, []).append(candidate)
    state.candidates = known


async def _load_never(connection: AsyncConnection, state: KnownState) -> None:
    """The never-link pairs touching any identity this batch may be compared with."""
    ids = {c.ref for members in state.blocks.values() for c in members}
    ids |= {c.ref for members in state.members.values() for c in members}
    ids |= {identity_id for identity_id, _ in state.identities.values()}
    for column in (IdentityNeverLink.identity_id, IdentityNeverLink.other_identity_id):
        for clause in matching(connection, column, ids):
            rows = await connection.execute(
                select(IdentityNeverLink.identity_id, IdentityNeverLink.other_identity_id).where(
                    clause
                )
            )
            state.never.update((a, b) for a, b in rows)


_POSTCODE, _CITY = FIELDS.index("postcode"), FIELDS.index("city")


def _refine(records: Sequence[PreparedRecord], state: KnownState, limit: int) -> None:
    """The blocks of the batch's birth-date refinements (not stored: ``PreparedRecord.
    refinements``), found among the members of the birth-date blocks they narrow, in
    that block's order; each such block is indexed once, by postcode and phonetic town.

    Only for a birth date whose block may be too big to compare (over ``limit`` with
    the batch's own records of that date): while it is not, the linker compares all of
    it, and a refinement, a part of it, would bring no one new."""
    dates = Counter(record.date_of_birth for record in records if record.date_of_birth)
    indexes: dict[int, dict[tuple[str, str], list[Candidate]]] = {}
    for record in records:
        for key, date, kind, value in record.refinements:
            members = state.blocks.get(date)
            if not members or key in state.blocks:
                continue
            if len(members) + dates[record.date_of_birth or ""] <= limit:
                break  # the same birth date: the other refinement too
            index = indexes.get(date)
            if index is None:
                index = indexes[date] = {}
                for candidate in members:
                    postcode, city = candidate.fields[_POSTCODE], candidate.fields[_CITY]
                    for part in ("postcode", "city"):
                        shared = refinement_value(part, postcode, city)
                        if shared:
                            index.setdefault((part, shared), []).append(candidate)
            found = index.get((kind, value))
            if found:
                state.blocks[key] = found


async def _owners(connection: AsyncConnection, identity_ids: set[int]) -> dict[int, uuid.UUID]:
    rows = await rows_where_in(
        connection, (Identity.id, Identity.customer_id), Identity.id, identity_ids
    )
    return dict(rows)  # type: ignore[arg-type]


async def _load_candidates(
    connection: AsyncConnection,
    blocks: Sequence[Sequence[Any]],
    owner_of: dict[int, uuid.UUID],
    state: KnownState,
) -> None:
    candidates: dict[int, Candidate] = {}
    for row in await _match_rows(connection, {i for _, i in blocks}):
        candidates[row[0]] = Candidate(row[0], owner_of[row[0]], _comparable(row))
    for key, identity_id in blocks:
        state.blocks.setdefault(key, []).append(candidates[identity_id])


async def check_still_read(
    connection: AsyncConnection,
    decisions: Sequence[Decision],
    state: KnownState,
    owners: set[uuid.UUID],
    locked: set[uuid.UUID],
) -> None:
    """``StaleRead`` (decide again, on fresh reads) when what the batch was decided on
    changed before its customers were locked: a customer it links to folded away or
    erased, or a stored identity it relied on moved to another customer (an unmerge
    split it off) since it was read: one it updates (its new values would land on the
    customer it left), or any record it compared with of a customer it links a record to
    by score or folds (the record may have been matched with the one that left).

    Each is compared with the customer it was read with, not the one a decision links
    to: a match with a record of a customer the batch folds into another is sound.
    An unmerge holds the linker's keys of the customer it splits, so a record sharing an
    address, a phone or a source id with it waits for the split; this catches the rest
    (a record matched by name, birth date and place alone). Identities gone since (their
    customer erased) are left to the customer checks."""
    if not owners <= locked:
        raise StaleRead("a customer the batch links to is gone")
    updated = {d.identity_id for d in decisions if d.identity_id is not None}
    read = {
        identity_id: owner
        for identity_id, owner in state.identities.values()
        if identity_id in updated
    }
    # Every stored record compared with of the customers records are linked to by score,
    # or folded: ``matched`` names only the first pair that joined a record, which may be
    # another record of the batch (two typos of Bob joined each other, then Bob's stored
    # record; that one is named by neither).
    relied = {d.customer_id for d in decisions if d.rule == "probabilistic"}
    relied.update(gone for d in decisions for gone in d.merged)
    if relied:
        read.update(
            (ref, c.customer_id) for ref, c in state.candidates.items() if c.customer_id in relied
        )
        await _kept_apart_since(connection, set(read), state)
    if not read:
        return
    rows = await rows_where_in(
        connection,
        (Identity.id, Identity.customer_id, Identity.source, Identity.external_id),
        Identity.id,
        list(read),
    )
    if any(read[identity_id] != owner for identity_id, owner, *_ in rows):
        # The next attempt holds every such identity's key from its start: an unmerge
        # of their customers (which takes those keys) then waits for it, rather than
        # send it back again (a burst of unmerges exhausted an import batch's retries).
        keys = frozenset(f"id:{source}:{external_id}" for _, _, source, external_id in rows)
        raise StaleRead("an identity the batch relied on changed customer", keys)


async def _kept_apart_since(connection: AsyncConnection, ids: set[int], state: KnownState) -> None:
    """``StaleRead`` when two of the records the batch relied on were kept apart (a
    review's decision, identity_never_links) since it read the pairs: deciding on what
    it read, it could join them in one customer all the same. A keep-apart holds both
    customers' rows as it commits, and the batch calls this holding the rows of the
    customers it links to and folds: one of the two then sees the other's work."""
    column = IdentityNeverLink.identity_id
    other = IdentityNeverLink.other_identity_id
    # The other side filtered here, not in SQL: a second list of every id could pass
    # SQLite's limit of bound values for a large batch.
    pairs = await rows_where_in(connection, (column, other), column, ids)
    if any(b in ids and (a, b) not in state.never for a, b in pairs):
        raise StaleRead("two records the batch relied on were kept apart since it read them")

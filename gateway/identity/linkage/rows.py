"""The rows a batch's decisions become, as tuples for COPY: pure Python, no database.

Built in a worker thread while the event loop waits on the batch's earlier writes
(``repository.write_batch``): on two cores Postgres takes one COPY while the gateway
builds the next one's rows, instead of the two working one after the other.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.identity.linkage.linker import Decision, KnownState
from gateway.identity.linkage.lookup import MATCH_COLUMNS
from gateway.identity.observations import Fact, ObservationRow
from gateway.identity.records import PreparedRecord

Row = tuple[Any, ...]


@dataclass(slots=True)
class RecordRows:
    """``identity_records`` and ``identity_block_keys`` rows, and the identities whose
    stored rows they replace (deleted first)."""

    replaced: list[int]
    records: list[Row]
    keys: list[Row]


def _stored(columns: dict[str, str | None] | None, record: PreparedRecord) -> PreparedRecord | None:
    if columns is None:
        return None
    return replace(
        record,
        email_key=columns["email_key"],
        phone=columns["phone"],
        first_name=columns["first_name"],
        last_name=columns["last_name"],
        date_of_birth=columns["date_of_birth"],
        address=columns["address"],
        city=columns["city"],
        postcode=columns["postcode"],
        values={},
    )


def _overlay(earlier: PreparedRecord, record: PreparedRecord) -> PreparedRecord:
    """A source that omits a field has not erased it: keep the key it gave before."""
    merged = replace(
        record, **{name: getattr(record, name) or getattr(earlier, name) for name in MATCH_COLUMNS}
    )
    merged.index_keys()
    return merged


# Per batch position: the stored identity it updates, or the earlier position with the
# same (source, external id); both None for a new identity (``Decision``'s fields).
Plan = Sequence[tuple[int | None, int | None]]


def identity_plan(
    records: Sequence[PreparedRecord], state: KnownState
) -> list[tuple[int | None, int | None]]:
    """Which identity each record is, before deciding anything: what the linker's
    deterministic rules give as ``identity_id`` and ``duplicate_of`` (checked against
    them after deciding)."""
    first: dict[tuple[str, str], int] = {}
    plan: list[tuple[int | None, int | None]] = []
    for position, record in enumerate(records):
        stored = state.identities.get(record.identity_key)
        if stored is not None:
            plan.append((stored[0], None))
            continue
        earlier = first.setdefault(record.identity_key, position)
        plan.append((None, earlier if earlier != position else None))
    return plan


def plan_of(decisions: Sequence[Decision]) -> list[tuple[int | None, int | None]]:
    return [(d.identity_id, d.duplicate_of) for d in decisions]


def record_rows(
    records: Sequence[PreparedRecord],
    plan: Plan,
    identity_ids: dict[int, int],
    stored: dict[int, dict[str, str | None]],
) -> RecordRows:
    """Each identity's latest record (overlaid on what it said before) and its block keys."""
    latest: dict[int, PreparedRecord] = {}
    for position, record in enumerate(records):
        earlier = latest.get(identity_ids[position]) or _stored(
            stored.get(identity_ids[position]), record
        )
        latest[identity_ids[position]] = _overlay(earlier, record) if earlier else record
    replaced = sorted(
        {
            identity_ids[p]
            for p, (identity_id, duplicate_of) in enumerate(plan)
            if identity_id is not None or duplicate_of is not None
        }
    )
    # Tuples straight to COPY: tens of thousands of rows, no dict per row.
    records_out = [
        (
            identity_id,
            *(r.email_key, r.phone, r.first_name, r.last_name, r.date_of_birth),
            *(r.address, r.city, r.postcode, r.observed_at),
        )
        for identity_id, r in latest.items()
    ]
    keys = [(i, key) for i, r in latest.items() for key in r.stored_block_keys()]
    return RecordRows(replaced, records_out, keys)


def link_rows(
    decisions: Sequence[Decision],
    identity_ids: dict[int, int],
    now: Any,
    model_version: int | None,
) -> list[Row]:
    """An ``identity_links`` row (in ``repository._LINK_COLUMNS`` order) per new identity."""

    def resolve(ref: int | None) -> int | None:
        if ref is None:
            return None
        return ref if ref > 0 else identity_ids[-ref - 1]

    return [
        (
            d.customer_id,
            identity_ids[p],
            resolve(d.matched),
            d.rule,
            d.score,
            None,
            model_version if d.rule == "probabilistic" else None,
            now,
        )
        for p, d in enumerate(decisions)
        if d.identity_id is None and d.duplicate_of is None
    ]


def observation_rows(
    decisions: Sequence[Decision],
    identity_ids: dict[int, int],
    fresh_owners: set[uuid.UUID],
    stored_facts: set[Fact],
) -> tuple[list[ObservationRow], list[ObservationRow]]:
    """The batch's observations, each once, in order (what ``insert_observations`` makes of
    them), each with the identity of the record that made it (``identity_ids``, by batch
    position), split into those of new and of stored customers, these without the ones
    ``stored_facts`` holds already; without hashing a new customer's id per row (a
    Python-level hash, and a batch has tens of thousands of rows): a row can only repeat
    one of the same customer's, so only customers with several records here keep a set
    of what they said."""
    records: defaultdict[uuid.UUID, int] = defaultdict(int)
    for d in decisions:
        records[d.customer_id] += 1
    said: dict[uuid.UUID, set[tuple[str, str, str, Any]]] = {}
    fresh: list[ObservationRow] = []
    known: list[ObservationRow] = []
    for position, d in enumerate(decisions):
        owner, source, observed_at = d.customer_id, d.record.source, d.record.observed_at
        identity = identity_ids[position]
        if owner not in fresh_owners:
            # A stored customer's id came from the driver, whose UUIDs hash in C.
            for name, value in d.record.values.items():
                fact = (owner, name, value, source, observed_at)
                if fact not in stored_facts:
                    stored_facts.add(fact)
                    known.append((*fact, identity))
            continue
        if records[owner] == 1:
            fresh += [
                (owner, n, v, source, observed_at, identity) for n, v in d.record.values.items()
            ]
            continue
        seen = said.setdefault(owner, set())
        for name, value in d.record.values.items():
            said_once = (name, value, source, observed_at)
            if said_once not in seen:
                seen.add(said_once)
                fresh.append((owner, name, value, source, observed_at, identity))
    return fresh, known

"""The linker: decides, in memory, which customer each record of a batch belongs to.

Deterministic rules first, in order, record by record: the same (source, external id);
the same email key; the same phone when the emails do not contradict it.  Then every
other record is scored against the records it shares a blocking key with, stored or in
the batch, and only then are clusters formed (``clustering``): pairs above the model's
match probability join their records' clusters, strongest first, as long as the two
clusters agree as wholes, so that one weak link never chains two people together.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.identity.config import IdentityConfig
from gateway.identity.records import PreparedRecord
from gateway.identity.scoring.clustering import Clusters, Edge
from gateway.identity.scoring.comparison import Comparable, Scorer
from gateway.identity.scoring.model import DEFAULT_MODEL

# A reference to a record: a stored identity id (> 0), or -(batch position + 1).
Ref = int


@dataclass(slots=True)
class Candidate:
    """A record the linker can compare against: stored, or earlier in this batch."""

    ref: Ref
    customer_id: uuid.UUID
    fields: Comparable


@dataclass(slots=True)
class KnownState:
    """What the database already knows about the keys of one batch."""

    identities: dict[tuple[str, str], tuple[int, uuid.UUID]] = field(default_factory=dict)
    emails: dict[str, uuid.UUID] = field(default_factory=dict)
    phones: dict[str, set[uuid.UUID]] = field(default_factory=dict)
    customer_emails: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    golden_emails: dict[str, uuid.UUID] = field(default_factory=dict)
    sizes: dict[uuid.UUID, int] = field(default_factory=dict)
    blocks: dict[int, list[Candidate]] = field(default_factory=dict)
    stored: dict[int, dict[str, str | None]] = field(default_factory=dict)  # by identity id
    # Every stored record of the customers the candidates belong to: a cluster is judged
    # whole, not by the one record that shares a block.
    members: dict[uuid.UUID, list[Candidate]] = field(default_factory=dict)
    # Every stored record compared with (blocks and members), by identity id, with the
    # customer it was read with: what the batch checks again once it holds its locks.
    candidates: dict[int, Candidate] = field(default_factory=dict)
    # Pairs of identity ids a person said are different people (smaller id first).
    never: set[tuple[int, int]] = field(default_factory=set)


@dataclass(slots=True)
class Review:
    candidate_customer_id: uuid.UUID
    score: float | None  # the match probability
    # score (in the review band), evidence (a name disagrees), conflict (the clusters
    # disagree as wholes) or identity_limit
    reason: str
    candidate: Ref | None = None  # the record it was compared with
    levels: dict[str, str] | None = None


@dataclass(slots=True)
class Decision:
    record: PreparedRecord
    customer_id: uuid.UUID
    new_customer: bool
    rule: str  # identity | email | phone | probabilistic | new
    identity_id: int | None = None  # the stored identity this record updates
    duplicate_of: int | None = None  # earlier batch position with the same identity
    score: float | None = None  # match probability, for probabilistic
    matched: Ref | None = None
    review: Review | None = None
    merged: tuple[uuid.UUID, ...] = ()  # stored customers folded into customer_id


class LinkTally(Protocol):
    """What an import's summary and a sync's report count of the linker's decisions."""

    created: int
    updated: int
    linked: int
    review: int


def tally(decisions: Iterable[Decision], into: LinkTally) -> None:
    """Count each decision: a new customer, the same source identity seen again (updated),
    or a record joined to an existing customer (linked); and those left for review."""
    for decision in decisions:
        if decision.new_customer:
            into.created += 1
        elif decision.rule == "identity":
            into.updated += 1
        else:
            into.linked += 1
        if decision.review is not None:
            into.review += 1


@dataclass(slots=True)
class _Deterministic:
    owner: uuid.UUID
    rule: str
    identity_id: int | None = None
    duplicate_of: int | None = None
    review: Review | None = None

    @property
    def open(self) -> bool:
        """Not settled by a key: matched by score, if at all."""
        return self.rule == "new"


class Linker:
    def __init__(self, config: IdentityConfig, scorer: Scorer | None = None) -> None:
        self._config = config
        self._scorer = scorer or Scorer(DEFAULT_MODEL)

    @property
    def scorer(self) -> Scorer:
        return self._scorer

    def decide(self, records: list[PreparedRecord], state: KnownState) -> list[Decision]:
        fields = [record.compared() for record in records]  # once, in the scorer's form
        settled = self._deterministic(records, state)
        edges = self._edges(records, fields, settled, state)
        provisional = [
            (s.owner, s.identity_id, s.open, s.identity_id is None and s.duplicate_of is None)
            for s in settled
        ]
        clusters = Clusters(self._scorer, self._config, state, provisional, fields)
        clusters.join(edges)
        return self._decisions(records, settled, clusters)

    def _deterministic(
        self, records: list[PreparedRecord], state: KnownState
    ) -> list[_Deterministic]:
        emails = dict(state.emails)
        phones = {key: set(owners) for key, owners in state.phones.items()}
        customer_emails: defaultdict[uuid.UUID, set[str]] = defaultdict(set)
        for owner, keys in state.customer_emails.items():
            customer_emails[owner] |= keys
        sizes = defaultdict(int, state.sizes)
        in_batch: dict[tuple[str, str], int] = {}
        settled: list[_Deterministic] = []
        for position, record in enumerate(records):
            decision = self._settle(
                record, state, in_batch, settled, emails, phones, customer_emails, sizes
            )
            settled.append(decision)
            owner = decision.owner
            if record.email_key:
                emails.setdefault(record.email_key, owner)
                customer_emails[owner].add(record.email_key)
            if record.phone:
                phones.setdefault(record.phone, set()).add(owner)
            if decision.identity_id is None and decision.duplicate_of is None:
                in_batch[record.identity_key] = position
        return settled

    def _settle(
        self,
        record: PreparedRecord,
        state: KnownState,
        in_batch: dict[tuple[str, str], int],
        settled: list[_Deterministic],
        emails: dict[str, uuid.UUID],
        phones: dict[str, set[uuid.UUID]],
        customer_emails: defaultdict[uuid.UUID, set[str]],
        sizes: defaultdict[uuid.UUID, int],
    ) -> _Deterministic:
        stored = state.identities.get(record.identity_key)
        if stored is not None:
            return _Deterministic(stored[1], "identity", identity_id=stored[0])
        earlier = in_batch.get(record.identity_key)
        if earlier is not None:
            return _Deterministic(settled[earlier].owner, "identity", duplicate_of=earlier)
        owner, rule = _by_key(record, emails, phones, customer_emails)
        review = None
        if owner is not None and sizes[owner] >= self._config.max_identities_per_customer:
            review, owner = Review(owner, None, "identity_limit"), None
        if owner is None:
            owner = uuid.uuid4()
            sizes[owner] = 1
            return _Deterministic(owner, "new", review=review)
        sizes[owner] += 1
        return _Deterministic(owner, rule)

    def _edges(
        self,
        records: list[PreparedRecord],
        fields: list[Comparable],
        settled: list[_Deterministic],
        state: KnownState,
    ) -> list[Edge]:
        """Every pair worth a look (from the review band up), each scored once: an open
        record against the stored records and the earlier batch records it shares a block
        with; a settled record against the earlier open ones."""
        earlier: dict[int, list[int]] = {}
        weigh = self._scorer.weigh
        floor = self._scorer.review_weight
        limit = self._config.max_block_candidates
        blocks = state.blocks
        opens = [s.open for s in settled]
        edges: list[Edge] = []
        add = edges.append
        # The hot loop of a batch (tens of thousands of block memberships): names bound
        # locally, and a block no earlier record of the batch shared skips that part.
        for position, record in enumerate(records):
            node = -(position + 1)
            mine = fields[position]
            is_open = opens[position]
            seen: set[Ref] = set()
            for key in record.blocks:
                batch = earlier.get(key)
                if batch is None:
                    batch = earlier[key] = []
                stored = blocks.get(key, ()) if is_open else ()
                if len(stored) + len(batch) <= limit:
                    # (An oversized block is a common value, like a stop word: it says nothing.)
                    for candidate in stored:
                        ref = candidate.ref
                        if ref in seen:
                            continue
                        seen.add(ref)
                        weight, vetoed = weigh(mine, candidate.fields)
                        if weight >= floor:
                            add((weight, node, ref, vetoed))
                    for other in batch:
                        ref = -(other + 1)
                        if ref in seen or not (is_open or opens[other]):
                            continue
                        seen.add(ref)
                        weight, vetoed = weigh(mine, fields[other])
                        if weight >= floor:
                            if is_open:
                                add((weight, node, ref, vetoed))
                            else:
                                add((weight, ref, node, vetoed))
                batch.append(position)
        return edges

    def _decisions(
        self, records: list[PreparedRecord], settled: list[_Deterministic], clusters: Clusters
    ) -> list[Decision]:
        decisions = []
        founded: set[uuid.UUID] = set()
        for position, (record, fixed) in enumerate(zip(records, settled, strict=True)):
            node = -(position + 1)
            owner = clusters.owner_of(node)
            review = fixed.review or clusters.review_of(node)
            merged = clusters.merged_by(node)
            if not fixed.open:
                decisions.append(
                    Decision(
                        record,
                        owner,
                        False,
                        fixed.rule,
                        identity_id=fixed.identity_id,
                        duplicate_of=fixed.duplicate_of,
                        review=review,
                        merged=merged,
                    )
                )
                continue
            joined = clusters.evidence_of(node)
            if joined is None or (not clusters.is_stored(owner) and owner not in founded):
                # The first record of a new customer: the others joined it.
                founded.add(owner)
                decisions.append(Decision(record, owner, True, "new", review=review, merged=merged))
                continue
            probability, matched = joined
            decisions.append(
                Decision(
                    record,
                    owner,
                    False,
                    "probabilistic",
                    score=probability,
                    matched=matched,
                    review=review,
                    merged=merged,
                )
            )
        return decisions


def _by_key(
    record: PreparedRecord,
    emails: dict[str, uuid.UUID],
    phones: dict[str, set[uuid.UUID]],
    customer_emails: defaultdict[uuid.UUID, set[str]],
) -> tuple[uuid.UUID | None, str]:
    if record.email_key and record.email_key in emails:
        return emails[record.email_key], "email"
    owners = phones.get(record.phone) if record.phone else None
    if owners and len(owners) == 1:
        (owner,) = owners
        known = customer_emails.get(owner)
        # A shared phone with a different email is a household, not the same person.
        if not (record.email_key and known and record.email_key not in known):
            return owner, "phone"
    return None, "new"

"""The linker: decides, in memory, which customer each record of a batch belongs to.

Rules run in order and the first that applies wins: the same (source, external id);
the same email key; the same phone when the emails do not contradict it; then the
best Fellegi-Sunter score among records sharing a blocking key.  A record joins one
existing cluster or starts its own; two existing customers are never merged here,
so one bad value cannot chain thousands of profiles together.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from gateway.identity.comparison import Comparable, Scorer
from gateway.identity.config import IdentityConfig
from gateway.identity.records import PreparedRecord

# A reference to a matched identity: a stored identity id (> 0), or -(batch position + 1).
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


@dataclass(slots=True)
class Review:
    candidate_customer_id: uuid.UUID
    score: float | None
    reason: str  # "score" (in the review band) or "identity_limit"


@dataclass(slots=True)
class Decision:
    record: PreparedRecord
    customer_id: uuid.UUID
    new_customer: bool
    rule: str  # identity | email | phone | probabilistic | new
    identity_id: int | None = None  # the stored identity this record updates
    duplicate_of: int | None = None  # earlier batch position with the same identity
    score: float | None = None
    matched: Ref | None = None
    review: Review | None = None


class Linker:
    def __init__(self, config: IdentityConfig) -> None:
        self._config = config
        self._scorer = Scorer(config)

    def decide(self, records: list[PreparedRecord], state: KnownState) -> list[Decision]:
        emails = dict(state.emails)
        phones = {key: set(owners) for key, owners in state.phones.items()}
        customer_emails: defaultdict[uuid.UUID, set[str]] = defaultdict(set)
        for owner, keys in state.customer_emails.items():
            customer_emails[owner] |= keys
        sizes = defaultdict(int, state.sizes)
        blocks: defaultdict[int, list[Candidate]] = defaultdict(list)
        for key, members in state.blocks.items():
            blocks[key].extend(members)
        in_batch: dict[tuple[str, str], int] = {}
        decisions: list[Decision] = []
        fields = [record.comparable() for record in records]  # once: scored and stored

        for position, record in enumerate(records):
            decision = self._decide_one(
                position,
                record,
                fields[position],
                state,
                in_batch,
                decisions,
                emails,
                phones,
                customer_emails,
                sizes,
                blocks,
            )
            decisions.append(decision)
            owner = decision.customer_id
            if record.email_key:
                emails.setdefault(record.email_key, owner)
                customer_emails[owner].add(record.email_key)
            if record.phone:
                phones.setdefault(record.phone, set()).add(owner)
            if decision.identity_id is None and decision.duplicate_of is None:
                in_batch[record.identity_key] = position
            # One candidate shared by all of the record's blocks.
            candidate = Candidate(-(position + 1), owner, fields[position])
            for key in record.block_keys():
                blocks[key].append(candidate)
        return decisions

    def _decide_one(
        self,
        position: int,
        record: PreparedRecord,
        fields: Comparable,
        state: KnownState,
        in_batch: dict[tuple[str, str], int],
        decisions: list[Decision],
        emails: dict[str, uuid.UUID],
        phones: dict[str, set[uuid.UUID]],
        customer_emails: defaultdict[uuid.UUID, set[str]],
        sizes: defaultdict[uuid.UUID, int],
        blocks: defaultdict[int, list[Candidate]],
    ) -> Decision:
        stored = state.identities.get(record.identity_key)
        if stored is not None:
            return Decision(record, stored[1], False, "identity", identity_id=stored[0])
        earlier = in_batch.get(record.identity_key)
        if earlier is not None:
            first = decisions[earlier]
            return Decision(record, first.customer_id, False, "identity", duplicate_of=earlier)

        owner, rule, score, matched, review = self._deterministic(
            record, emails, phones, customer_emails
        )
        if owner is None:
            owner, score, matched = self._best_candidate(record, fields, blocks)
            if owner is not None and score is not None and score >= self._config.match_threshold:
                rule = "probabilistic"
            else:
                if (
                    owner is not None
                    and score is not None
                    and score >= self._config.review_threshold
                ):
                    review = Review(owner, score, "score")
                owner = None
        if owner is not None and sizes[owner] >= self._config.max_identities_per_customer:
            review, owner = Review(owner, score, "identity_limit"), None
        if owner is None:
            owner = uuid.uuid4()
            sizes[owner] = 1
            return Decision(record, owner, True, "new", review=review)
        sizes[owner] += 1
        return Decision(record, owner, False, rule, score=score, matched=matched)

    @staticmethod
    def _deterministic(
        record: PreparedRecord,
        emails: dict[str, uuid.UUID],
        phones: dict[str, set[uuid.UUID]],
        customer_emails: defaultdict[uuid.UUID, set[str]],
    ) -> tuple[uuid.UUID | None, str, float | None, Ref | None, Review | None]:
        if record.email_key and record.email_key in emails:
            return emails[record.email_key], "email", None, None, None
        owners = phones.get(record.phone) if record.phone else None
        if owners and len(owners) == 1:
            (owner,) = owners
            known = customer_emails.get(owner)
            # A shared phone with a different email is a household, not the same person.
            if not (record.email_key and known and record.email_key not in known):
                return owner, "phone", None, None, None
        return None, "new", None, None, None

    def _best_candidate(
        self,
        record: PreparedRecord,
        fields: Comparable,
        blocks: defaultdict[int, list[Candidate]],
    ) -> tuple[uuid.UUID | None, float | None, Ref | None]:
        seen: set[Ref] = set()
        best: tuple[uuid.UUID | None, float | None, Ref | None] = (None, None, None)
        limit = self._config.max_block_candidates
        for key in record.block_keys():
            members = blocks.get(key)
            if not members or len(members) > limit:
                # An oversized block is a common value, like a stop word: it says nothing.
                continue
            for candidate in members:
                if candidate.ref in seen:
                    continue
                seen.add(candidate.ref)
                score = self._scorer.score(fields, candidate.fields)
                if best[1] is None or score > best[1]:
                    best = (candidate.customer_id, score, candidate.ref)
        return best

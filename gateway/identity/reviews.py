"""The review queue: pairs the linker would not decide alone, for a person to judge.

``pending`` pages through the open reviews with both records, their comparison levels
and match probability; ``resolve`` either merges the two customers (with the reviewer's
reason as evidence) or records the pair as different people, which the linker then
respects in every later import, sync and webhook (``clustering``).  Each resolution is
one transaction with its audit entry.
"""

from __future__ import annotations

import base64
import binascii
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.db.engine import create_sessionmaker
from gateway.db.identity_models import IdentityNeverLink, IdentityRecord, IdentityReview
from gateway.db.models import AuditEntry, Identity, as_utc, utcnow
from gateway.db.retries import retry_transaction, transient_reason
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.linkage.lookup import MATCH_COLUMNS
from gateway.identity.linkage.resolution import lock_for_writing
from gateway.identity.merges import merge_in
from gateway.identity.review_state import still_apart, still_matched
from gateway.identity.scoring.model import DEFAULT_MODEL, LinkageModel
from gateway.identity.scoring.model_store import ModelStore

MAX_PAGE = 100
MAX_REASON = 200
_CURSOR_PREFIX = "review:"


class ReviewDecision(StrEnum):
    MERGE = "merge"
    KEEP_APART = "keep_apart"


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """One side of a review: the identity and the comparison keys it was linked on."""

    identity_id: int
    source: str
    external_id: str
    customer_id: uuid.UUID
    fields: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class PendingReview:
    id: int
    reason: str  # score | evidence | conflict | identity_limit
    status: str  # open | merged | kept_apart
    probability: float | None
    levels: dict[str, str]
    model_version: int | None
    created_at: datetime
    record: ReviewRecord
    candidate: ReviewRecord | None  # None: over the identity limit, no single pair
    candidate_customer_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ReviewPage:
    items: list[PendingReview]
    end_cursor: str | None
    has_next_page: bool


@dataclass(frozen=True, slots=True)
class Resolution:
    review: PendingReview
    customer_ids: list[uuid.UUID]  # customers whose profile changed (caches to drop)
    merged_into: uuid.UUID | None


def cursor_of(review_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{review_id}".encode()).decode()


def _after(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        return int(text.removeprefix(_CURSOR_PREFIX))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidInput(
            "Invalid value for argument 'after': not a cursor from this list", field="after"
        ) from None


# One queue per engine, as ``attributes.identity_service``: the engine is the long-lived part.
_QUEUES: weakref.WeakKeyDictionary[AsyncEngine, ReviewQueue] = weakref.WeakKeyDictionary()


def review_queue(engine: AsyncEngine) -> ReviewQueue:
    queue = _QUEUES.get(engine)
    if queue is None:
        queue = _QUEUES[engine] = ReviewQueue(create_sessionmaker(engine))
    return queue


def parse_review_id(raw: str) -> int:
    try:
        value = int(str(raw))
    except ValueError:
        raise InvalidInput("Invalid value for argument 'id': not a review id", field="id") from None
    if value <= 0:
        raise InvalidInput("Invalid value for argument 'id': not a review id", field="id")
    return value


class ReviewQueue:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], config: IdentityConfig = DEFAULT_CONFIG
    ) -> None:
        self._sessions = sessions
        self._config = config
        self._models: dict[int | None, LinkageModel | None] = {None: DEFAULT_MODEL}

    async def pending(self, first: int = 20, after: str | None = None) -> ReviewPage:
        """Open reviews, oldest first, whose two records are still in different customers."""
        if not 1 <= first <= MAX_PAGE:
            raise InvalidInput(f"'first' must be between 1 and {MAX_PAGE}", field="first")
        start = _after(after)
        items: list[PendingReview] = []
        async with self._sessions() as session:
            while len(items) <= first:
                rows = list(
                    await session.scalars(
                        select(IdentityReview)
                        .where(IdentityReview.status == "open", IdentityReview.id > start)
                        .order_by(IdentityReview.id)
                        .limit(first + 1)
                    )
                )
                if not rows:
                    break
                start = rows[-1].id
                found = await _shaped(session, rows)
                # A review whose records have since been joined (a merge) is settled.
                items += [r for r in found if r.candidate_customer_id != r.record.customer_id]
        page = items[:first]
        return ReviewPage(
            page, cursor_of(page[-1].id) if page else after, has_next_page=len(items) > first
        )

    async def weights(
        self, model_version: int | None, levels: Mapping[str, str]
    ) -> dict[str, float]:
        """Each compared field's match weight at its level, log2(m / u), from the model
        version that scored the pair (the built-in priors for a pair scored before any
        model was stored); a level that version does not know is left out."""
        if model_version not in self._models:
            try:
                model: LinkageModel | None = await ModelStore(self._sessions).get(model_version)
            except InvalidInput:  # not stored here (any more): its weights are unknown
                model = None
            # Versions are immutable: kept for the life of the process.
            self._models[model_version] = model
        found = self._models[model_version]
        if found is None:
            return {}
        weights = {field: found.level_weight(field, label) for field, label in levels.items()}
        return {field: weight for field, weight in weights.items() if weight is not None}

    async def resolve(
        self, review_id: int, decision: ReviewDecision, reason: str, actor: str
    ) -> Resolution:
        reason = reason.strip()
        if not reason:
            raise InvalidInput("Give a reason for the decision", field="reason")
        if len(reason) > MAX_REASON:
            raise InvalidInput(f"The reason is longer than {MAX_REASON} characters", field="reason")
        # One transaction, run again after a deadlock (a merge meeting a linked batch) or
        # after a record of the pair moved to another customer meanwhile (an unmerge).
        try:
            return await retry_transaction(
                lambda: self._resolve_once(review_id, decision, reason, actor), "resolve_review"
            )
        except Exception as exc:
            if transient_reason(exc) is None:
                raise
            # Retries run out (records moving, deadlocks, a busy database): nothing was
            # decided, and the steward tries again.
            raise Conflict(
                "The records kept changing, or the database stayed busy; try again"
            ) from exc

    async def _resolve_once(
        self, review_id: int, decision: ReviewDecision, reason: str, actor: str
    ) -> Resolution:
        async with self._sessions.begin() as session:
            connection = await session.connection()
            # SQLite: the reads below and the writes in one transaction, under the write
            # lock (its driver begins one only at the first write).
            await lock_for_writing(connection)
            review = await session.get(IdentityReview, review_id)
            if review is None:
                raise NotFound(f"No identity review {review_id}", field="id")
            if review.status != "open":
                raise Conflict(f"The review was already resolved ({review.status})", field="id")
            (shaped,) = await _shaped(session, [review])
            mine, theirs = shaped.record.customer_id, shaped.candidate_customer_id
            merged_into: uuid.UUID | None = None
            touched: list[uuid.UUID] = []
            sides = {shaped.record.identity_id: mine}
            if shaped.candidate is not None:
                sides[shaped.candidate.identity_id] = theirs
            merging = decision is ReviewDecision.MERGE and mine != theirs
            # The two customers, then the review: merges, the linker's folds and erasures
            # lock customers first and reviews after (the other way round, each waited for
            # the other until Postgres broke the deadlock). Held, the records stay where
            # they are read now, and a linker batch linking to either waits (it re-reads
            # the pairs kept apart once it holds them).
            await still_apart(connection, sides, (mine, theirs), deleting=merging)
            status = await session.scalar(
                select(IdentityReview.status)
                .where(IdentityReview.id == review_id)
                .with_for_update()
            )
            if status is None:
                raise NotFound(f"No identity review {review_id}", field="id")
            if status != "open":
                raise Conflict(f"The review was already resolved ({status})", field="id")
            if decision is ReviewDecision.MERGE:
                if merging:
                    if shaped.candidate is None:
                        await still_matched(connection, shaped.record.identity_id, theirs)
                    # Folded into the candidate: the customer the record was compared with.
                    merged_into = await merge_in(
                        session, theirs, mine, reason, config=self._config, actor=actor
                    )
                    touched = [theirs, mine]
                status = "merged"
            else:
                if mine == theirs:
                    raise Conflict(
                        "The two records are already one customer; unmerge the identity instead",
                        field="id",
                    )
                await _keep_apart(session, shaped, review_id, reason, actor)
                status = "kept_apart"
            now = utcnow()
            await session.execute(
                update(IdentityReview)
                .where(IdentityReview.id == review_id)
                .values(status=status, resolved_at=now, resolved_by=actor, resolution_reason=reason)
            )
            session.add(
                AuditEntry(
                    actor=actor,
                    operation="resolve_review",
                    customer_id=mine,
                    details={"review": review_id, "decision": decision.value, "with": str(theirs)},
                )
            )
            await session.flush()
            await session.refresh(review)
            (result,) = await _shaped(session, [review])
        return Resolution(result, touched or [mine, theirs], merged_into)


async def _keep_apart(
    session: AsyncSession, review: PendingReview, review_id: int, reason: str, actor: str
) -> None:
    """Never-link pairs: the record against the one it was compared with, or against every
    identity of the candidate customer when there was no single one (identity limit)."""
    if review.candidate is not None:
        others = [review.candidate.identity_id]
    else:
        others = list(
            await session.scalars(
                select(Identity.id).where(Identity.customer_id == review.candidate_customer_id)
            )
        )
    mine = review.record.identity_id
    for other in others:
        pair = (min(mine, other), max(mine, other))
        exists = await session.get(IdentityNeverLink, pair)
        if exists is None:
            session.add(
                IdentityNeverLink(
                    identity_id=pair[0],
                    other_identity_id=pair[1],
                    review_id=review_id,
                    reason=reason,
                    actor=actor,
                    created_at=utcnow(),
                )
            )


def _fields(record: IdentityRecord | None) -> dict[str, str | None]:
    if record is None:
        return {}
    values: dict[str, Any] = {name: getattr(record, name) for name in MATCH_COLUMNS}
    values["email"] = values.pop("email_key")
    dob = values.get("date_of_birth")
    if dob and len(dob) == 8:
        values["date_of_birth"] = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
    return values


async def _shaped(session: AsyncSession, reviews: list[IdentityReview]) -> list[PendingReview]:
    ids = {r.identity_id for r in reviews} | {
        r.candidate_identity_id for r in reviews if r.candidate_identity_id is not None
    }
    identities = {
        i.id: i for i in await session.scalars(select(Identity).where(Identity.id.in_(ids)))
    }
    records = {
        r.identity_id: r
        for r in await session.scalars(
            select(IdentityRecord).where(IdentityRecord.identity_id.in_(ids))
        )
    }

    def side(identity_id: int) -> ReviewRecord:
        identity = identities[identity_id]
        return ReviewRecord(
            identity_id,
            identity.source,
            identity.external_id,
            identity.customer_id,
            _fields(records.get(identity_id)),
        )

    shaped = []
    for review in reviews:
        candidate = (
            side(review.candidate_identity_id) if review.candidate_identity_id is not None else None
        )
        shaped.append(
            PendingReview(
                id=review.id,
                reason=review.reason,
                status=review.status,
                probability=review.score,
                levels=dict(review.levels or {}),
                model_version=review.model_version,
                created_at=as_utc(review.created_at),
                record=side(review.identity_id),
                candidate=candidate,
                # The candidate's customer now (merges move records), else as recorded.
                candidate_customer_id=(
                    candidate.customer_id if candidate else review.candidate_customer_id
                ),
            )
        )
    return shaped

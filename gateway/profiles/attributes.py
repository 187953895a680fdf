"""Provenance of a profile: every value each source reported, which one is golden, and
the evidence for each identity's place in its customer; plus manual merge and unmerge.

Reads are batched by customer (one query per table for any number of customers) so a
per-request DataLoader can serve a whole list of customers at once.
"""

from __future__ import annotations

import uuid
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from gateway.db.engine import create_sessionmaker
from gateway.db.identity_models import IdentityLink
from gateway.db.models import Attribute, Customer, Identity, as_utc
from gateway.errors import Conflict, InvalidInput
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.merges import merge_customers
from gateway.identity.observations import OBSERVATION
from gateway.identity.survivorship import GOLDEN_FIELDS
from gateway.identity.unmerges import unmerge_customer
from gateway.privacy.suppressions import Suppressions
from gateway.privacy.tombstones import Tombstones

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class AttributeValue:
    name: str
    value: str | None
    source: str
    observed_at: datetime
    golden: bool  # this observation is the one the profile shows for the field


@dataclass(frozen=True, slots=True)
class LinkEvidence:
    source: str
    external_id: str
    rule: str  # identity | email | phone | probabilistic | new | manual | unmerge
    score: float | None
    reason: str | None
    matched_source: str | None
    matched_external_id: str | None
    created_at: datetime


def _mark_golden(
    rows: list[AttributeValue], profile: dict[str, str | None], config: IdentityConfig
) -> list[AttributeValue]:
    """Flag, per golden field, the observation survivorship would pick for the value the
    profile holds (most trusted source, then newest), so exactly one row is golden."""
    rank = {source: i for i, source in enumerate(config.source_priority)}
    ordered = sorted(
        range(len(rows)),
        key=lambda i: (
            rank.get(rows[i].source, len(rank)),
            -(rows[i].observed_at - _EPOCH).total_seconds(),
        ),
    )
    chosen: dict[str, int] = {}
    for i in ordered:
        row = rows[i]
        if (
            row.name in GOLDEN_FIELDS
            and row.name not in chosen
            and row.value is not None
            and row.value == profile.get(row.name)
        ):
            chosen[row.name] = i
    winners = set(chosen.values())
    return [
        AttributeValue(r.name, r.value, r.source, r.observed_at, i in winners)
        for i, r in enumerate(rows)
    ]


def _parse_id(raw: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise InvalidInput(
            f"Invalid value for argument '{field}': not a customer id", field=field
        ) from None


class IdentityService:
    """Provenance reads and the manual identity tools, over one session factory."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        config: IdentityConfig = DEFAULT_CONFIG,
        tombstones: Tombstones | None = None,
    ) -> None:
        self._sessions = sessions
        self._config = config
        # An unmerge giving a customer an address applies what an ESP said of it.
        self._suppressions = Suppressions(tombstones, config) if tombstones is not None else None

    async def attributes(self, customer_ids: Sequence[uuid.UUID]) -> list[list[AttributeValue]]:
        """Each customer's attributes (newest first within a field), aligned to the ids."""
        ids = list(dict.fromkeys(customer_ids))
        found: defaultdict[uuid.UUID, list[AttributeValue]] = defaultdict(list)
        profiles: dict[uuid.UUID, dict[str, str | None]] = {}
        async with self._sessions() as session:
            golden_columns = [getattr(Customer, name) for name in GOLDEN_FIELDS]
            for row in await session.execute(
                select(Customer.id, *golden_columns).where(Customer.id.in_(ids))
            ):
                profiles[row.id] = {name: getattr(row, name) for name in GOLDEN_FIELDS}
            rows = await session.execute(
                select(*OBSERVATION)
                .where(Attribute.customer_id.in_(ids))
                .order_by(Attribute.name, Attribute.observed_at.desc(), Attribute.id.desc())
            )
            for owner, name, value, source, observed_at in rows:
                found[owner].append(AttributeValue(name, value, source, as_utc(observed_at), False))
        marked = {
            owner: _mark_golden(found[owner], profiles.get(owner, {}), self._config)
            for owner in ids
        }
        return [marked[owner] for owner in customer_ids]

    async def links(self, customer_ids: Sequence[uuid.UUID]) -> list[list[LinkEvidence]]:
        """Each customer's identity evidence, oldest first, aligned to the ids."""
        ids = list(dict.fromkeys(customer_ids))
        found: defaultdict[uuid.UUID, list[LinkEvidence]] = defaultdict(list)
        matched = aliased(Identity)
        async with self._sessions() as session:
            rows = await session.execute(
                select(
                    IdentityLink.customer_id,
                    Identity.source,
                    Identity.external_id,
                    IdentityLink.rule,
                    IdentityLink.score,
                    IdentityLink.reason,
                    matched.source,
                    matched.external_id,
                    IdentityLink.created_at,
                )
                .join(Identity, Identity.id == IdentityLink.identity_id)
                .outerjoin(matched, matched.id == IdentityLink.matched_identity_id)
                .where(IdentityLink.customer_id.in_(ids))
                .order_by(IdentityLink.created_at, IdentityLink.id)
            )
            for owner, source, external_id, rule, score, reason, m_src, m_ext, at in rows:
                found[owner].append(
                    LinkEvidence(source, external_id, rule, score, reason, m_src, m_ext, as_utc(at))
                )
        return [found[owner] for owner in customer_ids]

    async def merge(self, into: str, from_: str, reason: str, actor: str = "api") -> uuid.UUID:
        """Fold customer ``from_`` into ``into``; errors name the GraphQL arguments."""
        a, b = _parse_id(into, "into"), _parse_id(from_, "from")
        reason = reason.strip()
        if not reason:
            raise InvalidInput("Give a reason for the merge", field="reason")
        if len(reason) > MAX_REASON:
            raise InvalidInput(f"The reason is longer than {MAX_REASON} characters", field="reason")
        try:
            return await merge_customers(
                self._sessions, a, b, reason, config=self._config, actor=actor
            )
        except InvalidInput as exc:
            raise InvalidInput(str(exc), field=_argument(exc.field)) from exc
        except Conflict as exc:
            raise Conflict(str(exc), field=_argument(exc.field)) from exc

    async def unmerge(self, source: str, external_id: str, actor: str = "api") -> uuid.UUID:
        """Split one identity out into a customer of its own; returns the new customer id."""
        try:
            return await unmerge_customer(
                self._sessions,
                source,
                external_id,
                config=self._config,
                actor=actor,
                suppressions=self._suppressions,
            )
        except InvalidInput as exc:
            raise InvalidInput(str(exc), field="externalId") from exc


def _argument(field: str | None) -> str | None:
    return {"a": "into", "b": "from"}.get(field or "", field)


# One service per engine: resolvers reach it from the request's services without the
# app having to build it (the engine is the long-lived part; this is a thin wrapper).
_SERVICES: weakref.WeakKeyDictionary[AsyncEngine, IdentityService] = weakref.WeakKeyDictionary()


def identity_service(engine: AsyncEngine, tombstones: Tombstones) -> IdentityService:
    service = _SERVICES.get(engine)
    if service is None:
        service = IdentityService(create_sessionmaker(engine), tombstones=tombstones)
        _SERVICES[engine] = service
    return service

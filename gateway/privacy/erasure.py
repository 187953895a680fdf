r"""Erasure and subject access: forget a customer everywhere, or export all we hold.

Forgetting deletes the customer row; the schema's cascades take identities,
attributes, consents, events and identity evidence with it, in one transaction, and
the events linked to nobody that name the person (an anonymous Segment event whose
traits carry their e-mail, or one of their ``anonymousId``\ s: ``event_subjects``)
go too. What stays is a *tombstone* per identifier the customer ever had: every
e-mail and phone (golden, and every value any source reported, merged-in customers'
included), every e-mail's mailbox (its matching key: the same mailbox spelt
otherwise), and every source id and anonymous id: an HMAC of it under the gateway's
erasure key (``Tombstones``), so a later sync, webhook, import or API call cannot bring
the person back, while the identifier itself is not kept. An e-mail, mailbox or phone
another customer still holds is theirs too and gets no tombstone (it would lock them
out). The audit
log keeps its ids-only entries: it is the record that the erasure happened.

Every write path checks the tombstones while holding the identity linker's key locks
(``lock_keys``) for what it writes, and ``forget`` takes the same locks for the
customer's keys: a check and its write are then one step against an erasure, which
either commits first (the check sees its tombstones) or waits for the write (and
erases what it linked).  On SQLite the single writer serialises them anyway.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from gateway.db.access_models import EventSubject, Tombstone
from gateway.db.identity_models import IdentityLink
from gateway.db.models import Attribute, Consent, ConsentChange, Customer, Event, utcnow
from gateway.db.recommendation_models import RecommendationList
from gateway.db.retries import DEFAULT_RETRY, RetryPolicy, retry_transaction, transient_reason
from gateway.errors import Conflict
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.linkage.resolution import lock_keys
from gateway.privacy.erasure_scope import Known, known_identifiers
from gateway.privacy.tombstones import Tombstones

_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Erased:
    """What one erasure removed (counts only) and what it now blocks."""

    customer_id: uuid.UUID
    emails: tuple[str, ...]  # for the caller's cache purge; never logged
    identities: int
    attributes: int
    events: int
    consents: int
    tombstones: int


def _with_identities(customer_id: uuid.UUID) -> Select[Customer]:
    """The customer row with its identities loaded in the same round trip."""
    return (
        select(Customer)
        .where(Customer.id == customer_id)
        .options(selectinload(Customer.identities))
    )


class Erasure:
    """``forget`` and ``export``; each changes or reads in one transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tombstones: Tombstones,
        config: IdentityConfig = DEFAULT_CONFIG,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._sessions = sessions
        self.tombstones = tombstones
        self._config = config
        self._retry = retry

    async def forget(self, customer_id: uuid.UUID) -> Erased | None:
        """Delete the customer and everything hanging off it; None if there is none.

        The transaction holds the linker's key locks for everything the customer is
        known by (and a lock per identifier digest, which an unlinked event takes too),
        so a batch or webhook carrying one of those either commits before it (and is
        erased with the customer) or checks the tombstones after it.
        """
        async with self._sessions() as session:
            customer = await session.scalar(_with_identities(customer_id))
            keys = (await self._known(session, customer)).keys if customer else None
        if keys is None:
            return None
        # Run again after a transient failure, as every writer is: chosen as a deadlock's
        # victim (it holds keys and waits for rows others hold), or kept out of SQLite
        # past its busy timeout (a linker batch's retry holds the write lock as it
        # decides). Before, the person asking to be forgotten got an error, and stayed.
        try:
            return await retry_transaction(
                lambda: self._forget_holding(customer_id, keys), "erasure", self._retry
            )
        except Exception as exc:
            if transient_reason(exc) is None:
                raise
            # Its retries ran out (deadlocks, a database busy throughout): nothing erased.
            raise Conflict("The database stayed busy during the erasure; try again") from exc

    async def _forget_holding(self, customer_id: uuid.UUID, keys: set[str]) -> Erased | None:
        """The erasure's transaction, holding ``keys`` and any the customer gained
        since (added to ``keys``, for the next attempt of ``forget`` too)."""
        for _ in range(_ATTEMPTS):
            async with self._sessions.begin() as session:
                await lock_keys(await session.connection(), keys)
                customer = await self._locked(session, customer_id)
                if customer is None:
                    return None
                known = await self._known(session, customer)
                if known.keys <= keys:
                    return await self._erase(session, customer, known)
            # Linked to more keys between the read and the locks: start again holding
            # those too (taken afresh in ascending order, never added out of order).
            keys |= known.keys
        raise Conflict("The customer kept gaining identities during the erasure; try again")

    async def _locked(self, session: AsyncSession, customer_id: uuid.UUID) -> Customer | None:
        customer: Customer | None = await session.scalar(
            _with_identities(customer_id).with_for_update()
        )
        return customer

    async def _known(self, session: AsyncSession, customer: Customer) -> Known:
        return await known_identifiers(session, customer, self.tombstones, self._config)

    async def _erase(self, session: AsyncSession, customer: Customer, known: Known) -> Erased:
        customer_id = customer.id
        digests = known.digests
        existing = await self.tombstones.blocked(session, digests)
        now = utcnow()
        session.add_all(Tombstone(digest=d, erased_at=now) for d in digests - existing)
        counts = {
            model.__tablename__: await session.scalar(
                select(func.count()).select_from(model).where(model.customer_id == customer_id)
            )
            or 0
            for model in (Attribute, Event, Consent)
        }
        # Events linked to nobody that name the person; the customer's own go with it.
        unlinked = await session.execute(
            delete(Event).where(Event.customer_id.is_(None), Event.id.in_(_naming(digests)))
        )
        identities = len(customer.identities)
        await session.delete(customer)
        return Erased(
            customer_id=customer_id,
            emails=tuple(sorted(known.emails)),
            identities=identities,
            attributes=counts["attributes"],
            events=counts["events"] + (getattr(unlinked, "rowcount", 0) or 0),
            consents=counts["consents"],
            tombstones=len(digests),
        )

    async def export(self, customer_id: uuid.UUID) -> dict[str, Any] | None:
        """Everything stored about one customer, as JSON-ready data; None if unknown."""
        async with self._sessions() as session:
            customer = await session.scalar(_with_identities(customer_id))
            if customer is None:
                return None

            async def rows(model: Any, order: Any) -> list[Any]:
                found = await session.scalars(
                    select(model).where(model.customer_id == customer_id).order_by(order)
                )
                return list(found)

            attributes = await rows(Attribute, Attribute.observed_at)
            consents = await rows(Consent, Consent.purpose)
            history = await rows(ConsentChange, ConsentChange.recorded_at)
            events = await rows(Event, Event.occurred_at)
            # Events linked to nobody that name them: what an erasure would remove too.
            known = await self._known(session, customer)
            unlinked = list(
                await session.scalars(
                    select(Event)
                    .where(Event.customer_id.is_(None), Event.id.in_(_naming(known.digests)))
                    .order_by(Event.occurred_at)
                )
            )
            links = await rows(IdentityLink, IdentityLink.id)
            profiled = await session.get(RecommendationList, customer_id)
        return {
            "exported_at": _time(utcnow()),
            "customer": {
                "id": str(customer.id),
                "email": customer.email,
                "phone": customer.phone,
                "first_name": customer.first_name,
                "last_name": customer.last_name,
                "locale": customer.locale,
                "created_at": _time(customer.created_at),
                "updated_at": _time(customer.updated_at),
            },
            "identities": [
                {"source": i.source, "external_id": i.external_id, "linked_at": _time(i.created_at)}
                for i in customer.identities
            ],
            "attributes": [
                {
                    "name": a.name,
                    "value": a.value,
                    "source": a.source,
                    "observed_at": _time(a.observed_at),
                }
                for a in attributes
            ],
            "consents": [
                {
                    "purpose": c.purpose,
                    "granted": c.granted,
                    "source": c.source,
                    "recorded_at": _time(c.recorded_at),
                }
                for c in consents
            ],
            "consent_history": [
                {
                    "purpose": c.purpose,
                    "granted": c.granted,
                    "source": c.source,
                    "recorded_at": _time(c.recorded_at),
                }
                for c in history
            ],
            "events": [
                {
                    "source": e.source,
                    "event_id": e.event_id,
                    "type": e.type,
                    "occurred_at": _time(e.occurred_at),
                    "properties": e.properties,
                }
                for e in events
            ],
            "unlinked_events": [
                {
                    "source": e.source,
                    "event_id": e.event_id,
                    "type": e.type,
                    "occurred_at": _time(e.occurred_at),
                    "properties": e.properties,
                }
                for e in unlinked
            ],
            "identity_evidence": [_link(link) for link in links],
            # What was derived from their behaviour: the ranked products and purchases.
            "recommendations": (
                {
                    "items": profiled.items,
                    "purchased": profiled.purchased,
                    "built_at": _time(profiled.built_at),
                }
                if profiled is not None
                else None
            ),
        }


def _naming(digests: set[str]) -> Select[int]:
    """The ids of the events whose subjects include one of these digests."""
    return select(EventSubject.event_id).where(EventSubject.digest.in_(digests))


def _link(link: IdentityLink) -> dict[str, Any]:
    return {
        "rule": link.rule,
        "score": link.score,
        "reason": link.reason,
        "linked_at": _time(link.created_at),
    }


def _time(value: datetime) -> str:
    # SQLite hands stored times back naive; every stored time is UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()

r"""Erasure and subject access: forget a customer everywhere, or export all we hold.

Forgetting deletes the customer row; the schema's cascades take identities,
attributes, consents, events and identity evidence with it, in one transaction, and
the events linked to nobody that name the person (an anonymous Segment event whose
traits carry their e-mail, or one of their ``anonymousId``\ s: ``event_subjects``)
go too. What stays is a *tombstone* per identifier the customer ever had: every
e-mail and phone (golden, and every value any source reported, merged-in customers'
included) and every source id and anonymous id: an HMAC of it under the gateway's
erasure key, so a later sync, webhook, import or API call cannot bring the person
back, while the identifier itself is not kept. An e-mail or phone another customer
still holds is theirs too and gets no tombstone (it would lock them out). The audit
log keeps its ids-only entries: it is the record that the erasure happened.

Every write path checks the tombstones while holding the identity linker's key locks
(``lock_keys``) for what it writes, and ``forget`` takes the same locks for the
customer's keys: a check and its write are then one step against an erasure, which
either commits first (the check sees its tombstones) or waits for the write (and
erases what it linked).  On SQLite the single writer serialises them anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from gateway.db.access_models import EventSubject, Tombstone
from gateway.db.bulk import matching
from gateway.db.identity_models import IdentityLink
from gateway.db.models import Attribute, Consent, ConsentChange, Customer, Event, utcnow
from gateway.db.recommendation_models import RecommendationList
from gateway.db.retries import DEFAULT_RETRY, RetryPolicy, retry_transaction, transient_reason
from gateway.errors import Conflict
from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.linkage.resolution import lock_keys
from gateway.identity.records import PreparedRecord
from gateway.privacy.erasure_scope import Known, known_identifiers
from gateway.profiles.contact_points import normalize_email, normalize_phone
from gateway.settings import Settings

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


class Tombstones:
    """Keyed hashes of erased identifiers, and the check every write path makes."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # Keyed once, copied per digest: ``hmac.new`` per value was half the parse time
        # of a stream event (two digests each, thousands a second).
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    @classmethod
    def from_settings(cls, settings: Settings) -> Tombstones:
        return cls(settings.erasure_key.get_secret_value().encode())

    def of_record(self, record: PreparedRecord) -> set[str]:
        """The digests of what a source record would link by (its email, phone and
        source id), and of the email and phone it gave even where they are placeholders
        that link nothing: an erased ``email@shop.example`` still refuses the record."""
        return self.digests(
            [record.values.get("email"), record.given_email],
            [(record.source, record.external_id)],
            [record.phone, record.given_phone],
        )

    def digest(self, kind: str, value: str) -> str:
        mac = self._keyed.copy()
        mac.update(f"{kind}:{value}".encode())
        return mac.hexdigest()

    def digester(self, kind: str) -> Callable[[str], str]:
        """``digest`` of one kind for many values (an export's column): the key and the
        kind hashed once, each value then costs one copy of that state."""
        prefixed = self._keyed.copy()
        prefixed.update(f"{kind}:".encode())

        def one(value: str) -> str:
            mac = prefixed.copy()
            mac.update(value.encode())
            return mac.hexdigest()

        return one

    def email_digest(self, raw: str | None) -> str | None:
        """None for what is not an address: it cannot identify anyone by email."""
        if not raw or "@" not in raw:  # none is an address (and refused without parsing)
            return None
        try:
            return self.digest("email", normalize_email(raw))
        except ValueError:
            return None

    def phone_digest(self, raw: str | None) -> str | None:
        """Over the E.164 form; None for what is not a phone number."""
        try:
            return self.digest("phone", normalize_phone(raw)) if raw else None
        except ValueError:
            return None

    def anonymous_digest(self, source: str, anonymous_id: str) -> str:
        """A device's or browser's id in a source (Segment's ``anonymousId``)."""
        return self.digest("anonymous", f"{source}:{anonymous_id}")

    def digests(
        self,
        emails: Iterable[str | None],
        identities: Iterable[tuple[str, str]],
        phones: Iterable[str | None] = (),
    ) -> set[str]:
        found = {d for e in emails if (d := self.email_digest(e))}
        found |= {d for p in phones if (d := self.phone_digest(p))}
        for source, external_id in identities:
            found.add(self.digest("id", f"{source}:{external_id}"))
        return found

    async def blocked(
        self, executor: AsyncSession | AsyncConnection, digests: set[str]
    ) -> set[str]:
        """Which of these digests belong to erased customers. A bulk batch brings
        thousands: one array parameter on Postgres (an IN list that long costs more to
        bind and plan than to run), slices of an IN list elsewhere."""
        connection = (
            executor if isinstance(executor, AsyncConnection) else await executor.connection()
        )
        found: set[str] = set()
        for clause in matching(connection, Tombstone.digest, digests):
            found.update(await connection.scalars(select(Tombstone.digest).where(clause)))
        return found

    async def unblocked(
        self,
        connection: AsyncConnection,
        records: Sequence[PreparedRecord],
        digests: Sequence[set[str]] | None = None,
    ) -> list[PreparedRecord]:
        """The records none of whose identifiers is an erased customer's, in order: one
        lookup for the batch.  ``digests`` are ``of_record`` of each record, in order, when
        the caller hashed them already.  A ``Screen`` for ``Resolver.link_screened``: run
        under the batch's key locks, it cannot miss an erasure committing meanwhile."""
        own = digests if digests is not None else [self.of_record(r) for r in records]
        blocked = await self.blocked(connection, set().union(*own))
        if not blocked:
            return list(records)
        return [record for record, mine in zip(records, own, strict=True) if not mine & blocked]


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

"""The customer profile store: read and upsert unified customers in the database."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from gateway.db.bulk import matching
from gateway.db.models import Attribute, Customer, Identity
from gateway.db.retries import DEFAULT_RETRY, RetryPolicy, retry_transaction
from gateway.errors import Conflict, Erased, InvalidInput
from gateway.identity.config import DEFAULT_CONFIG
from gateway.identity.linkage.resolution import customer_keys, lock_keys
from gateway.identity.source_ids import DEFAULT_SOURCE_IDS, SourceIds
from gateway.identity.values import email_parts, folded_email
from gateway.privacy.consent import ConsentRecord
from gateway.privacy.consent_owner import sole_identities
from gateway.privacy.suppressions import Suppressions
from gateway.privacy.tombstones import Tombstones
from gateway.profiles.contact_points import normalize_email, normalize_phone

# BCP 47 language tags as ESPs use them: "en", "en-US", "zh-Hant-TW".
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
PROFILE_FIELDS = ("first_name", "last_name", "phone", "locale")


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    source: str
    external_id: str


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    """A unified customer as stored, detached from any database session."""

    id: uuid.UUID
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    created_at: datetime
    updated_at: datetime
    identities: tuple[IdentityRecord, ...]
    consents: tuple[ConsentRecord, ...] = ()  # as stored; the CRM may say more (see consent)


class IdentityDraft(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    source: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    external_id: str = Field(min_length=1, max_length=255)


class CustomerDraft(BaseModel):
    """A validated create-or-update request: email is the key, other fields update."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    email: str
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    phone: str | None = None
    locale: str | None = Field(default=None, max_length=35)  # the column's width
    identities: tuple[IdentityDraft, ...] = ()
    source: str = Field(default="api", min_length=1, max_length=64)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return normalize_phone(value) if value else None

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value and not _LOCALE.match(value):
            raise ValueError("not a BCP 47 language tag such as 'en' or 'en-US'")
        return value or None


def parse_draft(data: Mapping[str, Any]) -> CustomerDraft:
    """Validate raw input; the first problem becomes an ``InvalidInput`` naming its field."""
    try:
        return CustomerDraft.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        reason = error["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"Invalid value for field '{field}': {reason}", field=field) from None


def parse_customer_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput(
            f"Invalid value for argument 'id': {raw!r} is not a customer id", field="id"
        ) from None


def parse_email_argument(raw: str) -> str:
    try:
        return normalize_email(raw)
    except ValueError as exc:
        raise InvalidInput(f"Invalid value for argument 'email': {exc}", field="email") from None


def _profile(customer: Customer) -> CustomerProfile:
    return CustomerProfile(
        id=customer.id,
        email=customer.email,
        phone=customer.phone,
        first_name=customer.first_name,
        last_name=customer.last_name,
        locale=customer.locale,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
        identities=tuple(IdentityRecord(i.source, i.external_id) for i in customer.identities),
        consents=_consents(customer),
    )


def _consents(customer: Customer) -> tuple[ConsentRecord, ...]:
    if "consents" in inspect(customer).unloaded:
        return ()  # a row just created, or read without them: nothing stored yet
    return tuple(
        ConsentRecord(c.purpose, c.granted, c.source, c.recorded_at) for c in customer.consents
    )


_WITH_RELATIONS = (selectinload(Customer.identities), selectinload(Customer.consents))


def _mailbox(email: str | None) -> str | None:
    """The address's matching key (``email_parts``), as the linker folds it."""
    try:
        return email_parts(email, DEFAULT_CONFIG)[1]
    except ValueError:
        return None  # validated already; the linker would not key by it either


def _keys(draft: CustomerDraft) -> Iterator[str]:
    """The draft's keys as the identity linker (and so an erasure) locks them."""
    email_key = _mailbox(draft.email)
    identities = ((i.source, i.external_id) for i in draft.identities)
    phones = [draft.phone] if draft.phone else []
    return customer_keys(identities, [email_key] if email_key else [], phones)


class CustomerStore:
    """Reads and writes unified customers; each call is one short transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tombstones: Tombstones | None = None,
        source_ids: SourceIds = DEFAULT_SOURCE_IDS,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._retry = retry
        self._sessions = sessions
        self._tombstones = tombstones
        self._source_ids = source_ids

    def check_identity(self, source: str, external_id: str, field: str) -> None:
        """``InvalidInput`` naming ``field`` when ``external_id`` cannot be an id of
        ``source``'s upstream (see ``SourceIds``): such an id is never looked up,
        stored or sent."""
        if problem := self._source_ids.problem(source, external_id):
            raise InvalidInput(f"Invalid value for argument '{field}': {problem}", field=field)

    async def get(self, customer_id: uuid.UUID) -> CustomerProfile | None:
        found = await self.get_many([customer_id])
        return found.get(customer_id)

    async def get_many(self, customer_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, CustomerProfile]:
        from gateway.profiles.profile_reads import read_profiles

        ids = list(customer_ids)
        async with self._sessions() as session:
            return {p.id: p for p in await read_profiles(session, Customer.id, ids)}

    async def emails_of(self, customer_ids: Iterable[uuid.UUID]) -> set[str]:
        """The addresses these customers have now: a batch naming them by id alone must
        drop their profiles cached under those too."""
        found: set[str] = set()
        async with self._sessions() as session:
            connection = await session.connection()
            for clause in matching(connection, Customer.id, customer_ids):
                found.update(
                    e for e in await session.scalars(select(Customer.email).where(clause)) if e
                )
        return found

    async def get_many_by_email(self, emails: Iterable[str]) -> dict[str, CustomerProfile]:
        """Customers keyed by normalised email; callers normalise first."""
        from gateway.profiles.profile_reads import read_profiles

        wanted = list(emails)
        async with self._sessions() as session:
            found = await read_profiles(session, Customer.email, wanted)
            return {p.email: p for p in found if p.email}

    async def get_by_identity(self, source: str, external_id: str) -> CustomerProfile | None:
        self.check_identity(source, external_id, "identity")
        async with self._sessions() as session:
            row = await session.scalar(
                select(Customer)
                .join(Identity, Identity.customer_id == Customer.id)
                .where(Identity.source == source, Identity.external_id == external_id)
                .options(*_WITH_RELATIONS)
            )
            return _profile(row) if row else None

    async def get_by_email(self, email: str) -> CustomerProfile | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(Customer)
                .where(Customer.email == normalize_email(email))
                .options(*_WITH_RELATIONS)
            )
            return _profile(row) if row else None

    async def upsert(self, draft: CustomerDraft) -> CustomerProfile:
        """Create the customer with this email, or update the fields the draft gives."""
        for position, identity in enumerate(draft.identities):
            if problem := self._source_ids.problem(identity.source, identity.external_id):
                field = f"identities.{position}.external_id"
                raise InvalidInput(f"Invalid value for field '{field}': {problem}", field=field)
        # Deadlocks and serialization failures: the whole transaction again, with jitter.
        once = partial(retry_transaction, lambda: self._upsert_once(draft), "upsert_customer")
        try:
            return await once(self._retry)
        except IntegrityError:
            # A concurrent writer created the same email or identity first; the second
            # attempt sees its row and updates it instead.
            try:
                return await once(self._retry)
            except IntegrityError as exc:
                raise Conflict(
                    "The customer changed concurrently; retry the request", field="email"
                ) from exc

    async def _upsert_once(self, draft: CustomerDraft) -> CustomerProfile:
        async with self._sessions.begin() as session:
            # The linker's key locks, held to commit: an erasure of this email or source
            # id either committed before the tombstone check below or waits for us.
            await lock_keys(await session.connection(), _keys(draft))
            # The row locked before it is changed (one customer: no order to keep), so a
            # merge or a linked batch touching it queues instead of deadlocking later.
            customer = await session.scalar(
                select(Customer)
                .where(Customer.email == draft.email)
                .options(*_WITH_RELATIONS)
                .with_for_update(key_share=True, of=Customer)
            )
            if customer is None:
                await self._refuse_erased(session, draft, None)
                customer = Customer(id=uuid.uuid4(), email=draft.email, identities=[])
                session.add(customer)
                # Attributes reference the row by key, not relationship: insert it first.
                await session.flush()
                await self._suppress(session, customer)
            else:
                await self._refuse_erased(session, draft, customer)
            await self._link(session, customer, draft.identities)
            await session.flush()
            # Said of the identity the customer is alone, if so: an unmerge splitting it
            # off takes them (with several, or one a merge brought in, whose they are
            # cannot be told).
            sole = await sole_identities(await session.connection(), [customer.id])
            only = sole.get(customer.id)
            # The e-mail too: survivorship (merges) rebuilds golden values from these rows,
            # and an erasure tombstones every address they hold.
            for name in ("email", *PROFILE_FIELDS):
                value = getattr(draft, name)
                if value is not None:
                    setattr(customer, name, value)
                    session.add(
                        Attribute(
                            customer_id=customer.id,
                            name=name,
                            value=value,
                            source=draft.source,
                            identity_id=only,
                        )
                    )
            customer.email_key = folded_email(customer.email, DEFAULT_CONFIG)
            await session.flush()
            return _profile(customer)

    async def _suppress(self, session: AsyncSession, customer: Customer) -> None:
        """A new customer whose address withdrew email marketing before anyone had it
        starts with that withdrawal (gateway/privacy/suppressions.py)."""
        if self._tombstones is None:
            return
        suppressed = await Suppressions(self._tombstones).apply(
            await session.connection(), [(customer.id, customer.email)]
        )
        if suppressed:
            await session.refresh(customer, ["consents"])

    async def _refuse_erased(
        self, session: AsyncSession, draft: CustomerDraft, customer: Customer | None
    ) -> None:
        """``Erased`` when the draft would give a customer an erased person's identifier:
        any of them for a new customer; for an existing one, a phone or source id it does
        not hold yet (its own e-mail was never erased: it still holds it)."""
        if self._tombstones is None:
            return
        identities = [(i.source, i.external_id) for i in draft.identities]
        phones = [draft.phone]
        emails: list[str | None] = [draft.email]
        if customer is not None:
            own = {(i.source, i.external_id) for i in customer.identities}
            identities = [i for i in identities if i not in own]
            phones = [draft.phone] if draft.phone != customer.phone else []
            emails = []
        fields = {
            **dict.fromkeys(self._tombstones.digests([], identities), "identities"),
            **dict.fromkeys(self._tombstones.digests([], [], phones), "phone"),
            **dict.fromkeys(
                self._tombstones.digests(emails, [], (), [_mailbox(e) for e in emails]), "email"
            ),
        }
        blocked = await self._tombstones.blocked(session, set(fields))
        if blocked:
            found = {fields[digest] for digest in blocked}
            field = next(f for f in ("email", "phone", "identities") if f in found)
            raise Erased(
                "This customer was erased (forgetCustomer); the gateway will not re-create "
                f"them from the same email, phone or source id (here: {field})",
                field=field,
            )

    @staticmethod
    async def _link(
        session: AsyncSession, customer: Customer, identities: Iterable[IdentityDraft]
    ) -> None:
        for identity in identities:
            owner = await session.scalar(
                select(Identity.customer_id).where(
                    Identity.source == identity.source, Identity.external_id == identity.external_id
                )
            )
            if owner is None:
                customer.identities.append(
                    Identity(source=identity.source, external_id=identity.external_id)
                )
            elif owner != customer.id:
                raise Conflict(
                    f"Identity {identity.source}:{identity.external_id} already belongs to "
                    "another customer",
                    field="identities",
                )

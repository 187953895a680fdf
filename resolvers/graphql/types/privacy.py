"""Consent, erasure, subject access and the audit trail, as GraphQL.

Setting consent needs ``profiles:write``; forgetting or exporting a customer and
reading the audit log need ``admin``. Each records an audit entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.access.api_keys import Scope
from gateway.errors import InvalidInput
from gateway.ingest.notifications import CustomerChange
from gateway.privacy.audit import Action, AuditRecord
from gateway.privacy.consent import ConsentRecord, Purpose
from gateway.profiles.customers import parse_customer_id
from resolvers.graphql.access import audit, require
from resolvers.graphql.context import Context
from resolvers.graphql.loaders import per_request

if TYPE_CHECKING:
    from resolvers.graphql.types.customer import Customer

GatewayInfo = Info[Context, None]
LazyCustomer = Annotated["Customer", strawberry.lazy("resolvers.graphql.types.customer")]
MAX_AUDIT_ENTRIES = 1000
MAX_CONSENT_HISTORY = 200


@strawberry.enum(description="What a customer may consent to.")
class ConsentPurpose(Enum):
    EMAIL_MARKETING = Purpose.EMAIL_MARKETING.value
    PERSONALISATION = Purpose.PERSONALISATION.value
    ANALYTICS = Purpose.ANALYTICS.value


@strawberry.type(description="Consent per purpose; null where nothing is recorded.")
class Consent:
    email_marketing: bool | None
    personalisation: bool | None
    analytics: bool | None


@strawberry.type(description="A consent statement: who recorded it, when, for what.")
class ConsentStatement:
    purpose: ConsentPurpose
    granted: bool
    source: str = strawberry.field(description="Who said so: a CRM, a webhook, `api`…")
    recorded_at: datetime

    @classmethod
    def of(cls, record: ConsentRecord) -> ConsentStatement:
        return cls(
            purpose=ConsentPurpose(record.purpose),
            granted=record.granted,
            source=record.source,
            recorded_at=record.recorded_at,
        )


async def customer_consent_history(
    root: LazyCustomer,
    info: GatewayInfo,
    purpose: ConsentPurpose | None = None,
    first: Annotated[int, strawberry.argument(description="At most 200.")] = 50,
) -> list[ConsentStatement]:
    """Every consent statement the gateway stored for this customer, newest first (one
    purpose, or all): the history behind `consents`. A CRM's live answer is not in it."""
    if not 1 <= first <= MAX_CONSENT_HISTORY:
        raise InvalidInput(f"first must be 1 to {MAX_CONSENT_HISTORY}", field="first")
    profile: Any = root.profile
    chosen = Purpose(purpose.value) if purpose is not None else None
    store = info.context.services.consents

    async def load(ids: Sequence[uuid.UUID]) -> list[list[ConsentRecord]]:
        found = await store.histories(list(ids), chosen, first)
        return [found[i] for i in ids]

    # One loader per argument pair: a list of customers reads every history at once.
    key = (customer_consent_history, chosen, first)
    loader = per_request(info.context.loaders, key, lambda: DataLoader(load))
    return [ConsentStatement.of(record) for record in await loader.load(profile.id)]


@strawberry.type(description="What an erasure removed; the identifiers are not kept.")
class Erasure:
    customer_id: strawberry.ID
    identities: int
    attributes: int
    events: int
    consents: int
    tombstones: int = strawberry.field(
        description="Hashed identifiers kept so no sync, webhook or import re-creates them."
    )


@strawberry.type(description="One access to a customer: who, what, when; never the data.")
class AuditEntry:
    occurred_at: datetime
    actor: str = strawberry.field(description="The API key's name, or the writing process.")
    key_id: str | None
    action: str = strawberry.field(description="read, change, export or erase.")
    operation: str = strawberry.field(description="e.g. query:customer, mutation:setConsent.")
    customer_id: strawberry.ID | None

    @classmethod
    def of(cls, record: AuditRecord) -> AuditEntry:
        return cls(
            occurred_at=record.occurred_at,
            actor=record.actor,
            key_id=record.key_id,
            action=record.action,
            operation=record.operation,
            customer_id=strawberry.ID(str(record.customer_id)) if record.customer_id else None,
        )


@strawberry.type
class PrivacyQuery:
    @strawberry.field(
        description="Everything stored about one customer (a subject access request), as "
        "JSON. Null when unknown.",
    )
    async def export_customer(self, info: GatewayInfo, id: strawberry.ID) -> JSON | None:
        require(info, Scope.ADMIN)
        customer_id = parse_customer_id(id)
        exported = await info.context.services.erasure.export(customer_id)
        if exported is not None:
            audit(info, Action.EXPORT, [customer_id])
        return cast(JSON, exported)

    @strawberry.field(
        description="Who read or changed customers, newest first; filter by customer, "
        "key name (`actor`) or time.",
    )
    async def audit_log(
        self,
        info: GatewayInfo,
        customer_id: strawberry.ID | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        first: Annotated[
            int, strawberry.argument(description=f"At most {MAX_AUDIT_ENTRIES}.")
        ] = 100,
    ) -> list[AuditEntry]:
        require(info, Scope.ADMIN)
        if not 1 <= first <= MAX_AUDIT_ENTRIES:
            raise InvalidInput(
                f"Invalid value for argument 'first': 1 to {MAX_AUDIT_ENTRIES}", field="first"
            )
        found = await info.context.services.audit.query(
            customer_id=parse_customer_id(customer_id) if customer_id else None,
            actor=actor,
            since=_utc(since, "since"),
            limit=first,
        )
        return [AuditEntry.of(record) for record in found]


@strawberry.type
class PrivacyMutation:
    @strawberry.mutation(
        description="Record a customer's consent for one purpose, with its source and time.",
    )
    async def set_consent(
        self,
        info: GatewayInfo,
        customer_id: strawberry.ID,
        purpose: ConsentPurpose,
        granted: bool,
        source: str = "api",
    ) -> ConsentStatement:
        require(info, Scope.PROFILES_WRITE)
        services = info.context.services
        customer = parse_customer_id(customer_id)
        record = await services.consents.record(customer, Purpose(purpose.value), granted, source)
        audit(info, Action.CHANGE, [customer])
        await _drop_cached(info, customer)
        await services.notifications.publish(
            CustomerChange(
                customer_id=customer,
                source=record.source,
                event_type="consent",
                event_id=uuid.uuid4().hex,
                fields=("consent",),
                occurred_at=record.recorded_at,
            )
        )
        return ConsentStatement.of(record)

    @strawberry.mutation(
        description="Erase a customer: their profile, identities, attributes, consents and "
        "events, and every cached copy on every instance. A tombstone of hashed "
        "identifiers stops a later sync, webhook or import from re-creating them. "
        "Null when there is no such customer.",
    )
    async def forget_customer(self, info: GatewayInfo, id: strawberry.ID) -> Erasure | None:
        require(info, Scope.ADMIN)
        customer_id = parse_customer_id(id)
        erased = await info.context.services.forgetting.forget(customer_id)
        if erased is None:
            return None
        audit(info, Action.ERASE, [customer_id])
        return Erasure(
            customer_id=strawberry.ID(str(customer_id)),
            identities=erased.identities,
            attributes=erased.attributes,
            events=erased.events,
            consents=erased.consents,
            tombstones=erased.tombstones,
        )


def _utc(moment: datetime | None, argument: str) -> datetime | None:
    """A moment in UTC (without an offset: taken as UTC); one UTC cannot express (past
    the year 9999 there) is the caller's mistake, not an unexpected error."""
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise InvalidInput(
            f"Invalid value for argument '{argument}': out of range", field=argument
        ) from None


async def _drop_cached(info: GatewayInfo, customer_id: uuid.UUID) -> None:
    services = info.context.services
    # The recommender remembers consent (and lists) in the process for a few seconds:
    # a withdrawal must stop personalised recommendations on this instance at once.
    services.recommendations.forget()
    profile = await services.customers.store.get(customer_id)
    if profile is not None:
        await services.customers.forget(profile)

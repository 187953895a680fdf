"""Identity in GraphQL: merge and unmerge mutations, and the provenance fields of Customer.

``customer_attributes`` and ``customer_identity_links`` are field resolvers attached to
``Customer`` in ``resolvers/graphql/types/customer.py``; they read through per-request DataLoaders,
so a
list of customers costs one query per table, not one per customer.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Protocol

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from gateway.access.api_keys import Scope
from gateway.errors import Conflict
from gateway.identity.reviews import (
    PendingReview,
    ReviewDecision,
    ReviewRecord,
    parse_review_id,
    review_queue,
)
from gateway.privacy.audit import Action
from gateway.profiles.attributes import (
    AttributeValue,
    IdentityService,
    LinkEvidence,
    identity_service,
)
from resolvers.graphql.access import audit, require
from resolvers.graphql.context import Context
from resolvers.graphql.loaders import per_request

if TYPE_CHECKING:
    from resolvers.graphql.types.customer import Customer

GatewayInfo = Info[Context, None]
# resolvers.graphql.types.customer imports this module for the field resolvers: the Customer type is
# lazy.
LazyCustomer = Annotated["Customer", strawberry.lazy("resolvers.graphql.types.customer")]


class HasId(Protocol):
    """What the provenance fields need of their parent: the unified customer id."""

    id: strawberry.ID


@strawberry.type(description="One value one source reported for a profile field.")
class ProfileAttribute:
    name: str = strawberry.field(description="The field, e.g. email, first_name, city.")
    value: str | None
    source: str = strawberry.field(description="The source system that reported it.")
    observed_at: datetime = strawberry.field(description="When that source reported it.")
    golden: bool = strawberry.field(
        description="True for the one observation the profile shows as this field's value "
        "(email, phone and names have golden values; other fields never do)."
    )

    @classmethod
    def of(cls, value: AttributeValue) -> ProfileAttribute:
        return cls(
            name=value.name,
            value=value.value,
            source=value.source,
            observed_at=value.observed_at,
            golden=value.golden,
        )


@strawberry.type(description="Evidence of why an identity belongs to this customer.")
class IdentityLink:
    source: str
    external_id: str
    rule: str = strawberry.field(
        description="identity, email, phone, probabilistic, new, manual (a merge) or unmerge."
    )
    score: float | None = strawberry.field(
        description="The match probability, for probabilistic links (links made before "
        "trained models carry a raw weight instead)."
    )
    reason: str | None = strawberry.field(description="Given with a manual merge or unmerge.")
    matched_source: str | None = strawberry.field(description="The identity it was matched to.")
    matched_external_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, link: LinkEvidence) -> IdentityLink:
        return cls(
            source=link.source,
            external_id=link.external_id,
            rule=link.rule,
            score=link.score,
            reason=link.reason,
            matched_source=link.matched_source,
            matched_external_id=link.matched_external_id,
            created_at=link.created_at,
        )


class IdentityLoaders:
    """The provenance DataLoaders of one request."""

    def __init__(self, service: IdentityService) -> None:
        self.attributes: DataLoader[uuid.UUID, list[AttributeValue]] = DataLoader(
            service.attributes
        )
        self.links: DataLoader[uuid.UUID, list[LinkEvidence]] = DataLoader(service.links)


def _service(info: GatewayInfo) -> IdentityService:
    services = info.context.services
    return identity_service(services.engine, services.erasure.tombstones)


def identity_loaders(info: GatewayInfo) -> IdentityLoaders:
    return per_request(
        info.context.loaders, IdentityLoaders, lambda: IdentityLoaders(_service(info))
    )


async def customer_attributes(
    root: strawberry.Parent[HasId], info: GatewayInfo, name: str | None = None
) -> list[ProfileAttribute]:
    """Every value each source reported for this customer, with its provenance."""
    values = await identity_loaders(info).attributes.load(uuid.UUID(str(root.id)))
    return [ProfileAttribute.of(v) for v in values if name is None or v.name == name]


async def customer_identity_links(
    root: strawberry.Parent[HasId], info: GatewayInfo
) -> list[IdentityLink]:
    """Which rule (and score) joined each identity to this customer, oldest first."""
    links = await identity_loaders(info).links.load(uuid.UUID(str(root.id)))
    return [IdentityLink.of(link) for link in links]


async def _shaped(info: GatewayInfo, customer_id: uuid.UUID) -> Customer:
    from resolvers.graphql.types.customer import shaped_customer

    profile = await info.context.services.customers.store.get(customer_id)
    if profile is None:  # merged away or erased between the write and this read
        raise Conflict(
            "The customer changed concurrently (merged or erased); read it again", field="id"
        )
    return await shaped_customer(profile, info)


async def _forget(info: GatewayInfo, customer_ids: list[uuid.UUID]) -> None:
    """Drop the cached profiles (by id and by their old email) and upstream answers of
    customers an identity change touched; read before the change, dropped after it."""
    services = info.context.services
    audit(info, Action.CHANGE, customer_ids)
    for customer_id in customer_ids:
        await services.federation.invalidate(customer_id)
    for profile in (await services.customers.store.get_many(customer_ids)).values():
        await services.customers.forget(profile)


@strawberry.type
class IdentityMutation:
    @strawberry.mutation(
        description="Fold customer `from` into customer `into` (identities, attributes, "
        "consents, events) and recompute its golden values; answers the merged customer.",
    )
    async def merge_customers(
        self,
        info: GatewayInfo,
        into: strawberry.ID,
        from_: Annotated[strawberry.ID, strawberry.argument(name="from")],
        reason: str,
    ) -> LazyCustomer:
        require(info, Scope.PROFILES_WRITE)
        store = info.context.services.customers.store
        before = await store.get_many(uuid.UUID(str(x)) for x in (into, from_) if _is_uuid(str(x)))
        merged = await _service(info).merge(str(into), str(from_), reason)
        for profile in before.values():
            await info.context.services.customers.forget(profile)
        await _forget(info, list(dict.fromkeys([merged, *before])))
        return await _shaped(info, merged)

    @strawberry.mutation(
        description="Split the identity `source:externalId` out of its customer into a "
        "customer of its own; answers the new customer.",
    )
    async def unmerge_customer(
        self, info: GatewayInfo, source: str, external_id: str
    ) -> LazyCustomer:
        require(info, Scope.PROFILES_WRITE)
        customers = info.context.services.customers
        customers.store.check_identity(source, external_id, "externalId")
        owner = await customers.get_by_identity(source, external_id)
        new = await _service(info).unmerge(source, external_id)
        if owner is not None:
            await info.context.services.customers.forget(owner)
            await _forget(info, [owner.id])
        await _forget(info, [new])
        return await _shaped(info, new)


@strawberry.type(
    description="One side of a review: a source record and the keys it was compared on "
    "(normalised: names and towns in lower case, the birth date as YYYY-MM-DD)."
)
class IdentityReviewRecord:
    source: str
    external_id: str
    customer_id: strawberry.ID = strawberry.field(description="Its customer now.")
    first_name: str | None
    last_name: str | None
    date_of_birth: str | None
    address: str | None
    city: str | None
    postcode: str | None
    email: str | None = strawberry.field(description="The email's matching key.")
    phone: str | None

    @classmethod
    def of(cls, record: ReviewRecord) -> IdentityReviewRecord:
        f = record.fields
        return cls(
            source=record.source,
            external_id=record.external_id,
            customer_id=strawberry.ID(str(record.customer_id)),
            first_name=f.get("first_name"),
            last_name=f.get("last_name"),
            date_of_birth=f.get("date_of_birth"),
            address=f.get("address"),
            city=f.get("city"),
            postcode=f.get("postcode"),
            email=f.get("email"),
            phone=f.get("phone"),
        )


@strawberry.type(description="How one field of the two records compared.")
class ComparisonLevel:
    field: str
    level: str = strawberry.field(
        description="e.g. exact, jaro-winkler >= 0.92, one edit, day and month swapped, else."
    )


ReviewDecisionEnum = strawberry.enum(
    ReviewDecision,
    name="ReviewDecision",
    description="MERGE the two customers, or KEEP_APART: different people, never linked.",
)


@strawberry.type(description="A possible match the linker left for a person to judge.")
class IdentityReview:
    id: strawberry.ID
    reason: str = strawberry.field(
        description="score (in the review band), evidence (a name disagrees), conflict (the "
        "two clusters disagree as wholes) or identity_limit (the customer is full)."
    )
    status: str = strawberry.field(description="open, merged or kept_apart.")
    match_probability: float | None
    levels: list[ComparisonLevel]
    model_version: int | None = strawberry.field(description="The model that scored the pair.")
    created_at: datetime
    record: IdentityReviewRecord | None = strawberry.field(
        description="The record that was linked (null only to a key without profiles:read)."
    )
    candidate: IdentityReviewRecord | None = strawberry.field(
        description="The record it was compared with; null over the identity limit."
    )
    candidate_customer_id: strawberry.ID

    @classmethod
    def of(cls, review: PendingReview) -> IdentityReview:
        return cls(
            id=strawberry.ID(str(review.id)),
            reason=review.reason,
            status=review.status,
            match_probability=review.probability,
            levels=[ComparisonLevel(field=k, level=v) for k, v in review.levels.items()],
            model_version=review.model_version,
            created_at=review.created_at,
            record=IdentityReviewRecord.of(review.record),
            candidate=IdentityReviewRecord.of(review.candidate) if review.candidate else None,
            candidate_customer_id=strawberry.ID(str(review.candidate_customer_id)),
        )


@strawberry.type
class IdentityReviewPage:
    nodes: list[IdentityReview]
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")
    has_next_page: bool


def _reviewed_customers(reviews: list[PendingReview]) -> list[uuid.UUID]:
    ids = [r.record.customer_id for r in reviews] + [r.candidate_customer_id for r in reviews]
    return list(dict.fromkeys(ids))


@strawberry.type
class IdentityQuery:
    @strawberry.field(
        description="Open identity reviews, oldest first: each pair with both records, how "
        "each field compared and the match probability. Needs profiles:write.",
    )
    async def identity_reviews(
        self, info: GatewayInfo, first: int = 20, after: str | None = None
    ) -> IdentityReviewPage:
        require(info, Scope.PROFILES_WRITE)
        page = await review_queue(info.context.services.engine).pending(first, after)
        audit(info, Action.READ, _reviewed_customers(page.items))
        return IdentityReviewPage(
            nodes=[IdentityReview.of(r) for r in page.items],
            end_cursor=page.end_cursor,
            has_next_page=page.has_next_page,
        )


@strawberry.type
class ReviewMutation:
    @strawberry.mutation(
        description="Resolve an identity review: MERGE folds the record's customer into the "
        "candidate's (the reason kept as evidence); KEEP_APART records the two as different "
        "people, which every later import, sync and webhook respects.",
    )
    async def resolve_review(
        self,
        info: GatewayInfo,
        id: strawberry.ID,
        decision: ReviewDecisionEnum,  # type: ignore[valid-type]
        reason: str,
    ) -> IdentityReview:
        principal = require(info, Scope.PROFILES_WRITE)
        queue = review_queue(info.context.services.engine)
        store = info.context.services.customers.store
        review = parse_review_id(str(id))
        resolution = await queue.resolve(review, ReviewDecision(decision), reason, principal.name)
        before = await store.get_many(resolution.customer_ids)
        for profile in before.values():
            await info.context.services.customers.forget(profile)
        await _forget(info, resolution.customer_ids)
        return IdentityReview.of(resolution.review)


def _is_uuid(raw: str) -> bool:
    try:
        uuid.UUID(raw)
    except ValueError:
        return False
    return True

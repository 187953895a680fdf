"""The Customer type: stored profile fields, and fields resolved from the upstreams."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import strawberry
from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from adapters.records import CommerceCustomer, CrmContact
from adapters.records import Order as OrderRecord
from gateway import behaviour
from gateway.customers import CustomerProfile
from gateway.federation import AnalyticsData, Outcome, SourceStatus
from resolvers.context import Context
from resolvers.federated import Cart, Engagement, Event, Money, Order, Source
from resolvers.render import render_customer

GatewayInfo = Info[Context, None]
MAX_ORDERS = 50
MAX_EVENTS = 200

# Which loader (and so which upstream) serves each Customer field: a query only
# calls the upstreams it selects.
FIELD_LOADERS: dict[str, str] = {
    **dict.fromkeys(("lifecycleStage", "ownerId", "company", "jobTitle", "city", "country",
                     "dateOfBirth"), "crm"),
    **dict.fromkeys(("lifetimeValue", "orderCount"), "commerce"),
    **dict.fromkeys(("orders", "lastOrderAt"), "orders"),
    **dict.fromkeys(("recentEvents", "engagement", "cart"), "analytics"),
}
# Worst first: the status a source shows when several of its reads disagree.
_SEVERITY = [SourceStatus.FAILED, SourceStatus.STALE, SourceStatus.OK, SourceStatus.CACHED]


def loaders_selected(selections: Iterable[Selection]) -> frozenset[str]:
    """The loaders a Customer selection needs, looking through fragments."""
    names: set[str] = set()
    for selection in selections:
        if isinstance(selection, (FragmentSpread, InlineFragment)):
            names |= loaders_selected(selection.selections)
        elif isinstance(selection, SelectedField) and selection.name in FIELD_LOADERS:
            names.add(FIELD_LOADERS[selection.name])
    return frozenset(names)


@strawberry.type(description="The id a source system knows this customer by.")
class Identity:
    source: str = strawberry.field(description="The source system, e.g. hubspot, shopify.")
    external_id: str = strawberry.field(description="The customer's id in that system.")


def _crm_field(attribute: str, kind: Any, description: str) -> Any:
    async def resolve(root: Customer, info: GatewayInfo) -> Any:
        contact = await root.crm_contact(info)
        return getattr(contact, attribute) if contact else None

    resolve.__annotations__["return"] = kind | None
    return strawberry.field(resolver=resolve, description=f"{description} (from the CRM).")


@strawberry.type(description="One person, unified across the CRM, commerce and analytics.")
class Customer:
    id: strawberry.ID = strawberry.field(description="The gateway's unified customer id.")
    email: str | None
    phone: str | None = strawberry.field(description="E.164, e.g. +14155550123.")
    first_name: str | None
    last_name: str | None
    locale: str | None = strawberry.field(description="BCP 47 language tag, e.g. en-US.")
    created_at: datetime
    updated_at: datetime
    identities: list[Identity]
    render = strawberry.field(
        resolver=render_customer,
        description="Render Liquid for this customer: an inline `template` or a stored `name`.",
    )

    profile: strawberry.Private[CustomerProfile]
    needed: strawberry.Private[frozenset[str]]

    lifecycle_stage = _crm_field("lifecycle_stage", str, "Lifecycle stage, e.g. lead, customer")
    owner_id = _crm_field("owner_id", str, "The owning sales rep's id")
    company = _crm_field("company", str, "Company")
    job_title = _crm_field("job_title", str, "Job title")
    city = _crm_field("city", str, "City")
    country = _crm_field("country", str, "Country")
    date_of_birth = _crm_field("date_of_birth", date, "Date of birth")

    @classmethod
    def from_profile(cls, profile: CustomerProfile, needed: frozenset[str] = frozenset()) -> Customer:
        return cls(
            id=strawberry.ID(str(profile.id)),
            email=profile.email,
            phone=profile.phone,
            first_name=profile.first_name,
            last_name=profile.last_name,
            locale=profile.locale,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
            identities=[Identity(source=i.source, external_id=i.external_id)
                        for i in profile.identities],
            profile=profile,
            needed=needed,
        )

    def prefetch(self, info: GatewayInfo) -> None:
        """Start every upstream this customer's selection needs, at once and batched."""
        for name in self.needed:
            info.context.loaders.named(name).load(self.profile)

    async def crm_contact(self, info: GatewayInfo) -> CrmContact | None:
        return (await info.context.loaders.crm.load(self.profile)).unwrap()

    async def _commerce(self, info: GatewayInfo) -> CommerceCustomer | None:
        return (await info.context.loaders.commerce.load(self.profile)).unwrap()

    async def _orders(self, info: GatewayInfo) -> tuple[OrderRecord, ...]:
        return (await info.context.loaders.orders.load(self.profile)).unwrap() or ()

    async def _analytics(self, info: GatewayInfo) -> AnalyticsData | None:
        return (await info.context.loaders.analytics.load(self.profile)).unwrap()

    @strawberry.field(description="Most recent orders first (from commerce).")
    async def orders(self, info: GatewayInfo, first: int = 10) -> list[Order] | None:
        return [Order.of(o) for o in (await self._orders(info))[: _clamp(first, MAX_ORDERS)]]

    @strawberry.field(description="Total spent over all orders (from commerce).")
    async def lifetime_value(self, info: GatewayInfo) -> Money | None:
        record = await self._commerce(info)
        return Money.of(record.total_spent) if record else None

    @strawberry.field(description="Number of orders (from commerce).")
    async def order_count(self, info: GatewayInfo) -> int | None:
        record = await self._commerce(info)
        return record.orders_count if record else 0

    @strawberry.field(description="When the latest order was placed (from commerce).")
    async def last_order_at(self, info: GatewayInfo) -> datetime | None:
        orders = await self._orders(info)
        return orders[0].created_at if orders else None

    @strawberry.field(description="Most recent events first, optionally of one type, e.g. "
                      "'Product Viewed' (from analytics).")
    async def recent_events(self, info: GatewayInfo, first: int = 10,
                            type: str | None = None) -> list[Event] | None:
        data = await self._analytics(info)
        if data is None:
            return []
        events = [e for e in data.events if type is None or type in (e.name, e.type)]
        return [Event.of(e) for e in events[: _clamp(first, MAX_EVENTS)]]

    @strawberry.field(description="Sessions and page views in the last 30 days (from analytics).")
    async def engagement(self, info: GatewayInfo) -> Engagement | None:
        data = await self._analytics(info)
        found = behaviour.engagement(data.events if data else (), datetime.now(UTC))
        return Engagement(sessions_30d=found.sessions, page_views_30d=found.page_views,
                          last_seen_at=found.last_seen_at)

    @strawberry.field(description="The open cart, or null when empty (from analytics events).")
    async def cart(self, info: GatewayInfo) -> Cart | None:
        data = await self._analytics(info)
        return Cart.of(behaviour.open_cart(data.events)) if data else None

    @strawberry.field(description="Per upstream: whether it answered for this request, and how fast.")
    async def sources(self, info: GatewayInfo) -> list[Source]:
        federation = info.context.services.federation
        loaders = info.context.loaders
        needed = sorted(self.needed)
        outcomes = await asyncio.gather(*(loaders.named(n).load(self.profile) for n in needed))
        worst: dict[str, Outcome[object]] = {}
        for outcome in outcomes:
            current = worst.get(outcome.upstream)
            if current is None or _SEVERITY.index(outcome.status) < _SEVERITY.index(current.status):
                worst[outcome.upstream] = outcome
        now = datetime.now(UTC)
        return [
            Source.of(worst[name], now) if name in worst else Source.skipped(name, adapter.kind)
            for name, adapter in federation.adapters.items()
        ]


def _clamp(first: int, most: int) -> int:
    return max(0, min(first, most))


def selection_of(info: GatewayInfo) -> frozenset[str]:
    return loaders_selected(info.selected_fields[0].selections) if info.selected_fields else frozenset()


@strawberry.input(description="An id this customer has in a source system.")
class IdentityInput:
    source: str
    external_id: str


@strawberry.input(description="Create a customer by email, or update the fields given.")
class CustomerInput:
    email: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = strawberry.field(default=None, description="Any format; stored E.164.")
    locale: str | None = None
    identities: list[IdentityInput] | None = None

"""The Customer type: stored profile fields, and fields resolved from the upstreams."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import strawberry
from strawberry.types import Info
from strawberry.types.nodes import SelectedField

from adapters.records import CommerceCustomer, CrmContact
from adapters.records import Order as OrderRecord
from gateway.privacy import consent
from gateway.profiles.customers import CustomerProfile
from gateway.upstreams import behaviour
from gateway.upstreams.federation import AnalyticsData, Outcome, SourceStatus
from gateway.upstreams.order_reads import EVERYTHING, OrdersNeed
from gateway.upstreams.stored_behaviour import STORE
from resolvers.graphql.access import sees_profiles
from resolvers.graphql.context import Context
from resolvers.graphql.loaders import BEHAVIOUR, answered
from resolvers.graphql.types.experiments import customer_experiments
from resolvers.graphql.types.federated import Cart, Engagement, Event, Money, Order, Source
from resolvers.graphql.types.identity import customer_attributes, customer_identity_links
from resolvers.graphql.types.privacy import Consent, ConsentStatement, customer_consent_history
from resolvers.graphql.types.recommendations import customer_recommendations
from resolvers.graphql.types.render import render_customer
from resolvers.graphql.types.scores import customer_scores
from resolvers.graphql.types.segments import customer_segments
from resolvers.graphql.types.selections import (
    FIRST_EVENTS,
    FIRST_ORDERS,
    MAX_EVENTS,
    clamp,
    engagement_fields,
    events_depth,
    events_detailed,
    loaders_selected,
    orders_need,
)

GatewayInfo = Info[Context, None]
MAX_ORDERS = 50

# The ESPs' opens and clicks, loaded up front when read; not an upstream (no source).
EMAILS = "email_engagement"
# Worst first: the status a source shows when several of its reads disagree.
_SEVERITY = [SourceStatus.FAILED, SourceStatus.STALE, SourceStatus.OK, SourceStatus.CACHED]


@strawberry.type(description="The id a source system knows this customer by.")
class Identity:
    source: str = strawberry.field(description="The source system, e.g. hubspot, shopify.")
    external_id: str = strawberry.field(description="The customer's id in that system.")


def _crm_field(attribute: str, kind: Any, description: str) -> Any:
    def resolve(root: Customer) -> Any:
        contact: CrmContact | None = root.loaded("crm")
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
    attributes = strawberry.field(
        resolver=customer_attributes,
        description="Every value each source reported (optionally for one field `name`), "
        "with its source, when it was observed, and whether it is the golden value.",
    )
    identity_links = strawberry.field(
        resolver=customer_identity_links,
        description="Evidence: which rule (and score) joined each identity to this customer.",
    )
    recommendations = strawberry.field(
        resolver=customer_recommendations,
        description="In-stock products from this customer's views and purchases, with reasons.",
    )
    scores = strawberry.field(resolver=customer_scores, description=customer_scores.__doc__)
    experiments = strawberry.field(
        resolver=customer_experiments, description=customer_experiments.__doc__
    )
    segments = strawberry.field(resolver=customer_segments, description=customer_segments.__doc__)
    consent_history = strawberry.field(
        resolver=customer_consent_history,
        description=" ".join((customer_consent_history.__doc__ or "").split()),
    )

    profile: strawberry.Private[CustomerProfile]
    needed: strawberry.Private[frozenset[str]]
    # The newest events `recentEvents` reads, when the store serves it, and whether
    # their properties are read too.
    depth: strawberry.Private[int]
    detailed: strawberry.Private[bool]
    # How many orders (and whether their line items) the selection reads.
    orders_need: strawberry.Private[OrdersNeed]
    # What each needed loader answered, filled by `load_selected` before fields resolve:
    # upstream fields then resolve synchronously, which keeps big batches cheap.
    outcomes: strawberry.Private[dict[str, Outcome[Any]]]

    lifecycle_stage = _crm_field("lifecycle_stage", str, "Lifecycle stage, e.g. lead, customer")
    owner_id = _crm_field("owner_id", str, "The owning sales rep's id")
    company = _crm_field("company", str, "Company")
    job_title = _crm_field("job_title", str, "Job title")
    city = _crm_field("city", str, "City")
    country = _crm_field("country", str, "Country")
    date_of_birth = _crm_field("date_of_birth", date, "Date of birth")

    @classmethod
    def from_profile(
        cls,
        profile: CustomerProfile,
        needed: frozenset[str],
        depth: int = 0,
        detailed: bool = True,
        orders_need: OrdersNeed = EVERYTHING,
    ) -> Customer:
        """Not loaded yet: `shaped_customers` builds and loads, and is the way to use this."""
        if needed & BEHAVIOUR and not consent.has_stored(
            consent.Purpose.PERSONALISATION, profile.consents
        ):
            needed = needed | {"crm"}  # behaviour is served only on a yes: ask the CRM
        return cls(
            id=strawberry.ID(str(profile.id)),
            email=profile.email,
            phone=profile.phone,
            first_name=profile.first_name,
            last_name=profile.last_name,
            locale=profile.locale,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
            identities=[
                Identity(source=i.source, external_id=i.external_id) for i in profile.identities
            ],
            profile=profile,
            needed=needed,
            depth=depth,
            detailed=detailed,
            orders_need=orders_need,
            outcomes={},
        )

    def loaded(self, name: str) -> Any:
        """What loader ``name`` answered; raises the upstream's error for this field."""
        outcome = self.outcomes.get(name)
        if outcome is None:
            # Only a Customer built outside `shaped_customers` can get here: a bug.
            raise RuntimeError(f"the {name!r} loader did not run for this Customer's selection")
        return outcome.unwrap()

    def behaviour(self, field: str) -> AnalyticsData | behaviour.Engagement | None:
        """The events behavioural ``field`` reads (from the analytics upstream or the
        store), only with personalisation consent: without it, behavioural fields answer
        as for a customer with no history."""
        if not self.permits(consent.Purpose.PERSONALISATION):
            return None
        data: AnalyticsData | behaviour.Engagement | None = self.loaded(field)
        return data

    def crm_for_consent(self) -> CrmContact | None:
        """The CRM's word on consent when it answered; stored statements stand alone if not.

        Raises the CRM's error only when nothing is stored to fall back on.
        """
        outcome = self.outcomes.get("crm")
        if outcome is None:
            return None
        if outcome.error is not None and self.profile.consents:
            return None
        contact: CrmContact | None = outcome.unwrap()
        return contact

    def permits(self, purpose: consent.Purpose) -> bool:
        return consent.granted(purpose, self.profile.consents, self.crm_for_consent())

    @strawberry.field(
        description="Consent per purpose: the most recent statement of the gateway's store "
        "and the CRM (null: neither says)."
    )
    def consent(self) -> Consent | None:
        crm = self.crm_for_consent()
        return Consent(
            **{
                p.value: (
                    found.granted
                    if (found := consent.effective(p, self.profile.consents, crm))
                    else None
                )
                for p in consent.Purpose
            }
        )

    @strawberry.field(description="Each purpose's statement that counts, with its source and time.")
    def consents(self) -> list[ConsentStatement]:
        crm = self.crm_for_consent()
        return [
            ConsentStatement.of(found)
            for p in consent.Purpose
            if (found := consent.effective(p, self.profile.consents, crm)) is not None
        ]

    @strawberry.field(
        description="True when the customer has not consented to email marketing: do not mail."
    )
    def suppressed(self) -> bool:
        return not self.permits(consent.Purpose.EMAIL_MARKETING)

    @strawberry.field(description="Most recent orders first (from commerce).")
    def orders(self, first: int = FIRST_ORDERS) -> list[Order] | None:
        orders: tuple[OrderRecord, ...] = self.loaded("orders") or ()
        return [Order.of(o) for o in orders[: clamp(first, MAX_ORDERS)]]

    @strawberry.field(description="Total spent over all orders (from commerce).")
    def lifetime_value(self) -> Money | None:
        record: CommerceCustomer | None = self.loaded("commerce")
        return Money.of(record.total_spent) if record else None

    @strawberry.field(description="Number of orders (from commerce).")
    def order_count(self) -> int | None:
        record: CommerceCustomer | None = self.loaded("commerce")
        return record.orders_count if record else 0

    @strawberry.field(description="When the latest order was placed (from commerce).")
    def last_order_at(self) -> datetime | None:
        orders: tuple[OrderRecord, ...] = self.loaded("orders") or ()
        return orders[0].created_at if orders else None

    @strawberry.field(
        description="Most recent events first, optionally of one type, e.g. "
        "'Product Viewed' (from analytics)."
    )
    def recent_events(
        self, first: int = FIRST_EVENTS, type: str | None = None
    ) -> list[Event] | None:
        data = self.behaviour("recent_events")
        if not isinstance(data, AnalyticsData):
            return []
        events = [e for e in data.events if type is None or type in (e.name, e.type)]
        return [Event.of(e) for e in events[: clamp(first, MAX_EVENTS)]]

    @strawberry.field(
        description="Sessions and page views (from analytics), email opens and clicks (from "
        "the ESPs) in the last 30 days."
    )
    def engagement(self) -> Engagement | None:
        # Synchronous, no ``info``: a direct call (execution/plans.py), not a task each.
        if not self.permits(consent.Purpose.PERSONALISATION):  # no history, email's included
            return Engagement.of(None, None)
        data = self.loaded("engagement")  # ``behaviour`` would ask for consent again
        emails = self.outcomes.get(EMAILS)
        return Engagement.of(data, emails.unwrap() if emails is not None else None)

    @strawberry.field(description="The open cart, or null when empty (from analytics events).")
    def cart(self) -> Cart | None:
        data = self.behaviour("cart")
        return (
            Cart.of(behaviour.open_cart(data.events)) if isinstance(data, AnalyticsData) else None
        )

    @strawberry.field(
        description="Per upstream: whether it answered for this request, and how fast."
    )
    def sources(self, info: GatewayInfo) -> list[Source]:
        federation = info.context.services.federation
        worst: dict[str, Outcome[Any]] = {}
        for outcome in (o for name, o in self.outcomes.items() if name != EMAILS):
            current = worst.get(outcome.upstream)
            if current is None or _SEVERITY.index(outcome.status) < _SEVERITY.index(current.status):
                worst[outcome.upstream] = outcome
        now = datetime.now(UTC)
        kinds = {name: adapter.kind for name, adapter in federation.adapters.items()}
        if info.context.services.stored_behaviour.fields:
            kinds[STORE] = "analytics"  # the stored events, for the fields configured so
        return [
            Source.of(worst[name], now) if name in worst else Source.skipped(name, kind)
            for name, kind in kinds.items()
        ]


# Selections per (parsed operation, field): the parser cache hands back the same
# operation object for a repeated document, so a send's thousandth request skips the
# walk. The operation is kept in the value, so its id cannot be reused while cached.
_SELECTIONS: dict[tuple[int, tuple[str, ...]], tuple[object, frozenset[str]]] = {}
_SELECTIONS_MAX = 4096


def selection_of(
    info: GatewayInfo, fields: Sequence[SelectedField] | None = None
) -> frozenset[str]:
    """The loaders the Customer selection under this field (or under ``fields``, the
    Customer fields of a connection: its ``nodes`` and ``edges { node }``) needs."""
    # The field's place in the operation (list indices dropped: same selection).
    path = tuple(k for k in info.path.as_list() if isinstance(k, str))
    key = (id(info.operation), path if fields is None else (*path, "<customers>"))
    cached = _SELECTIONS.get(key)
    if cached is not None and cached[0] is info.operation:
        return cached[1]
    # Every node of this response key: `{ c: customer { id } c: customer { city } }` is
    # one field whose selections merge, and each part may need its own loaders.
    selected = info.selected_fields if fields is None else fields
    found = frozenset().union(*(loaders_selected(f.selections) for f in selected))
    if any(Engagement.selects_email(engagement_fields(f.selections)) for f in selected):
        found |= {EMAILS}
    if len(_SELECTIONS) >= _SELECTIONS_MAX:
        _SELECTIONS.clear()
    _SELECTIONS[key] = (info.operation, found)
    return found


async def shaped_customers(
    profiles: Sequence[CustomerProfile | None],
    info: GatewayInfo,
    fields: Sequence[SelectedField] | None = None,
) -> list[Customer | None]:
    """The one way a Customer reaches the schema, whichever root field or mutation
    returns it: the profiles shaped, after every upstream their selection needs has
    answered (each upstream once for the whole list). A key that may not read profiles
    sees only the id (resolvers/graphql/access.py): nothing is fetched upstream for it.
    ``fields``: the Customer fields selected, when they are not this field's own."""
    selected = info.selected_fields if fields is None else fields
    needed = selection_of(info, fields) if sees_profiles(info.context.principal) else frozenset()
    # Only the store reads by depth (and leaves unasked properties unread); the upstream
    # path answers its whole window.
    depth, detailed = 0, True
    if "recent_events" in needed and info.context.services.stored_behaviour.serves("recent_events"):
        depth = max((events_depth(f.selections) for f in selected), default=0)
        detailed = any(events_detailed(f.selections) for f in selected)
    need = EVERYTHING
    if "orders" in needed:
        needs = [orders_need(f.selections) for f in selected]
        need = OrdersNeed(max(n.first for n in needs), any(n.line_items for n in needs))
    shaped = [
        Customer.from_profile(p, needed, depth, detailed, need) if p is not None else None
        for p in profiles
    ]
    await load_selected(shaped, info)
    return shaped


async def shaped_customer(profile: CustomerProfile, info: GatewayInfo) -> Customer:
    """``shaped_customers`` for a field that returns one customer."""
    [customer] = await shaped_customers([profile], info)
    assert customer is not None
    return customer


async def load_selected(customers: Iterable[Customer | None], info: GatewayInfo) -> None:
    """Run every loader the selection needs for every customer, all at once, so each
    upstream sees one batch; fields then read the answers without awaiting."""
    jobs = [
        (customer, name)
        for customer in customers
        if customer is not None
        for name in customer.needed
    ]
    pending = [
        info.context.loaders.load(
            name, customer.profile, customer.depth, customer.detailed, customer.orders_need
        )
        for customer, name in jobs
    ]
    for (customer, name), outcome in zip(jobs, await answered(pending), strict=True):
        customer.outcomes[name] = outcome


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

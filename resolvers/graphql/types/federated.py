"""Types for what the upstreams know about a customer: orders, events, engagement, sources."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types.nodes import SelectedField, Selection

from adapters.records import AnalyticsEvent
from adapters.records import Money as MoneyRecord
from adapters.records import Order as OrderRecord
from gateway.upstreams import behaviour
from gateway.upstreams.federation import AnalyticsData, Outcome, SourceStatus


@strawberry.type(description="An amount of money in one currency.")
class Money:
    amount: Decimal
    currency: str = strawberry.field(description="ISO 4217 code, e.g. USD.")

    @classmethod
    def of(cls, money: MoneyRecord | None) -> Money | None:
        return cls(amount=money.amount, currency=money.currency) if money else None


@strawberry.type
class LineItem:
    product_id: str | None
    title: str
    quantity: int
    price: Money | None


@strawberry.type(description="An order from the commerce platform.")
class Order:
    id: strawberry.ID
    name: str | None
    created_at: datetime
    financial_status: str | None
    fulfillment_status: str | None
    total_price: Money | None
    line_items: list[LineItem]

    @classmethod
    def of(cls, order: OrderRecord) -> Order:
        return cls(
            id=strawberry.ID(order.external_id),
            name=order.name,
            created_at=order.created_at,
            financial_status=order.financial_status,
            fulfillment_status=order.fulfillment_status,
            total_price=Money.of(order.total_price),
            line_items=[
                LineItem(
                    product_id=i.product_id,
                    title=i.title,
                    quantity=i.quantity,
                    price=Money.of(i.price),
                )
                for i in order.line_items
            ],
        )


@strawberry.type(description="A behavioural event from the analytics tool.")
class Event:
    id: strawberry.ID
    type: str
    name: str | None = strawberry.field(description="The tracked event, e.g. 'Product Viewed'.")
    occurred_at: datetime
    session_id: str | None
    properties: JSON

    @classmethod
    def of(cls, event: AnalyticsEvent) -> Event:
        return cls(
            id=strawberry.ID(event.id),
            type=event.type,
            name=event.name,
            occurred_at=event.timestamp,
            session_id=event.session_id,
            properties=cast(JSON, event.properties),
        )


_EMAIL_FIELDS = frozenset({"emailOpens30d", "emailClicks30d", "lastEmailOpenAt"})


@strawberry.type(
    description="Engagement over the last 30 days: sessions and page views from analytics "
    "events, email opens and clicks from the ESPs' engagement webhooks."
)
class Engagement:
    sessions_30d: int = strawberry.field(name="sessions30d")
    page_views_30d: int = strawberry.field(name="pageViews30d")
    last_seen_at: datetime | None
    email_opens_30d: int = strawberry.field(name="emailOpens30d")
    email_clicks_30d: int = strawberry.field(name="emailClicks30d")
    last_email_open_at: datetime | None = strawberry.field(
        description="The newest email open ever reported."
    )

    @staticmethod
    def selects_email(selected: Iterable[Selection]) -> bool:
        """Whether a selection of ``engagement`` reads the ESPs' counts (a fragment: as
        if it did), so the store is not asked for what nobody reads."""
        for field in selected:
            parts = field.selections if isinstance(field, SelectedField) else [field]
            if any(not isinstance(p, SelectedField) or p.name in _EMAIL_FIELDS for p in parts):
                return True
        return False

    @classmethod
    def of(
        cls,
        data: AnalyticsData | behaviour.Engagement | None,
        emails: behaviour.EmailEngagement | None,
    ) -> Engagement:
        # The store counts it (one row per customer); the upstream's events are counted here.
        found = (
            data
            if isinstance(data, behaviour.Engagement)
            else behaviour.engagement(
                data.events if isinstance(data, AnalyticsData) else (), datetime.now(UTC)
            )
        )
        emails = emails or behaviour.NO_EMAIL_ENGAGEMENT
        return cls(
            sessions_30d=found.sessions,
            page_views_30d=found.page_views,
            last_seen_at=found.last_seen_at,
            email_opens_30d=emails.opens,
            email_clicks_30d=emails.clicks,
            last_email_open_at=emails.last_open_at,
        )


@strawberry.type
class CartItem:
    product_id: str
    title: str | None
    quantity: int
    price: Decimal | None


@strawberry.type(description="Products added and not yet ordered or removed.")
class Cart:
    items: list[CartItem]
    subtotal: Decimal
    updated_at: datetime | None

    @classmethod
    def of(cls, cart: behaviour.Cart | None) -> Cart | None:
        if cart is None:
            return None
        return cls(
            items=[
                CartItem(product_id=i.product_id, title=i.title, quantity=i.quantity, price=i.price)
                for i in cart.items
            ],
            subtotal=cart.subtotal,
            updated_at=cart.updated_at,
        )


strawberry.enum(
    SourceStatus,
    description="OK: fetched for this request; CACHED: served fresh from the cache; "
    "STALE: the upstream failed and its last good answer was served (see ageSeconds); "
    "FAILED: errored, its fields are null (see errors); SKIPPED: not needed by this query.",
)


@strawberry.type(description="How one upstream contributed to this customer in this request.")
class Source:
    upstream: str
    kind: str
    status: SourceStatus
    latency_ms: float | None
    fetched_at: datetime | None
    age_seconds: float | None = strawberry.field(description="How old the data served is.")
    error_code: str | None

    @classmethod
    def of(cls, outcome: Outcome[object], now: datetime) -> Source:
        error = outcome.error or outcome.cause
        return cls(
            upstream=outcome.upstream,
            kind=outcome.kind,
            status=outcome.status,
            latency_ms=round(outcome.latency_ms, 2),
            fetched_at=outcome.fetched_at,
            age_seconds=round(outcome.age_s(now), 3),
            error_code=error.code if error else None,
        )

    @classmethod
    def skipped(cls, upstream: str, kind: str) -> Source:
        return cls(
            upstream=upstream,
            kind=kind,
            status=SourceStatus.SKIPPED,
            latency_ms=None,
            fetched_at=None,
            age_seconds=None,
            error_code=None,
        )

"""A customer as a template sees it: the schema's fields in snake_case, built from the
stored profile and the upstream answers a template's variables need, nothing more."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.records import AnalyticsEvent, CommerceCustomer, CrmContact, Money, Order
from gateway.privacy import consent
from gateway.profiles.customers import CustomerProfile
from gateway.recommendations.serving import Picks
from gateway.scores.store import CustomerScores
from gateway.upstreams import behaviour
from gateway.upstreams.federation import AnalyticsData
from gateway.upstreams.fields import FIELD_LOADERS

# What a template can read: the customer's fields, and the products recommended to them
# (read only by templates that use them, for a whole batch at once).
TEMPLATE_LOADERS: dict[str, str | None] = {
    **FIELD_LOADERS,
    "recommendations": "recommendations",
    "scores": "scores",  # `gateway scores build`'s, from the store
}


@dataclass(frozen=True, slots=True)
class _Sources:
    profile: CustomerProfile
    crm: CrmContact | None
    shop: CommerceCustomer | None
    orders: tuple[Order, ...]
    analytics: AnalyticsData | None
    loaded: frozenset[str]
    now: datetime
    personal: bool
    picks: Picks | None
    scores: CustomerScores | None

    @property
    def events(self) -> tuple[AnalyticsEvent, ...]:
        return self.analytics.events if self.analytics else ()


def _crm(name: str) -> Callable[[_Sources], Any]:
    return lambda s: getattr(s.crm, name, None)


# How to build each field, so a context holds only what its template reads: turning a
# hundred events into dicts for a template that shows the first name is wasted work.
_FIELDS: dict[str, Callable[[_Sources], Any]] = {
    # The stored profile's fields as they are; id and identities reshaped below.
    **{
        name: (lambda n: lambda s: getattr(s.profile, n))(name)
        for name, loader in FIELD_LOADERS.items()
        if loader is None
    },
    "id": lambda s: str(s.profile.id),
    "identities": lambda s: [
        {"source": i.source, "external_id": i.external_id} for i in s.profile.identities
    ],
    **{name: _crm(name) for name, loader in FIELD_LOADERS.items() if loader == "crm"},
    "consent": lambda s: {
        p.value: found.granted
        if (found := consent.effective(p, s.profile.consents, s.crm))
        else None
        for p in consent.Purpose
    },
    "consents": lambda s: [
        {
            "purpose": c.purpose,
            "granted": c.granted,
            "source": c.source,
            "recorded_at": c.recorded_at,
        }
        for p in consent.Purpose
        if (c := consent.effective(p, s.profile.consents, s.crm)) is not None
    ],
    "suppressed": lambda s: (
        not consent.granted(consent.Purpose.EMAIL_MARKETING, s.profile.consents, s.crm)
    ),
    "lifetime_value": lambda s: _money(s.shop.total_spent) if s.shop else None,
    "order_count": lambda s: (
        s.shop.orders_count if s.shop else (0 if "commerce" in s.loaded else None)
    ),
    "orders": lambda s: [_order(o) for o in s.orders],
    "last_order_at": lambda s: s.orders[0].created_at if s.orders else None,
    "recent_events": lambda s: [_event(e) for e in s.events],
    "engagement": lambda s: _engagement(s.events, s.now) if "analytics" in s.loaded else None,
    "cart": lambda s: _cart(behaviour.open_cart(s.events)) if s.analytics else None,
    "recommendations": lambda s: _recommendations(s.picks, s.personal),
    "scores": lambda s: s.scores.liquid() if s.scores else None,
}


def customer_context(
    profile: CustomerProfile,
    values: Mapping[str, Any],
    now: datetime,
    wanted: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The customer as the schema exposes it, snake_case, at the top level and under
    ``customer``: the ``wanted`` fields (default all). Fields of loaders that did not
    run are nil."""
    crm = values.get("crm")
    # Without personalisation consent the template sees no behaviour at all, so its
    # `if` branches fall back to the non-personal content.
    personal = consent.granted(consent.Purpose.PERSONALISATION, profile.consents, crm)
    sources = _Sources(
        profile,
        crm,
        values.get("commerce"),
        values.get("orders") or (),
        values.get("analytics") if personal else None,
        frozenset(values),
        now,
        personal,
        values.get("recommendations"),
        _scores(values.get("scores"), personal),
    )
    fields = {name: _FIELDS[name](sources) for name in (_FIELDS if wanted is None else wanted)}
    return {**fields, "customer": fields}


def _scores(found: CustomerScores | None, personal: bool) -> CustomerScores | None:
    """The scores as the template sees them: engagement counts only with personalisation
    consent (they are behaviour), as ``Customer.scores`` serves them."""
    return found if found is None or personal else found.without_behaviour()


def _recommendations(picks: Picks | None, personal: bool) -> list[dict[str, Any]]:
    """The products for ``{% for p in recommendations %}``: personalised ones only when
    this render's consent (the CRM's too, when read) allows them."""
    if picks is None:
        return []
    mine = personal and picks.personal is not None
    chosen = picks.personal if mine and picks.personal is not None else picks.popular
    if picks.shown is not None:
        # The list this render's template is given: recorded as served once the
        # render succeeds (gateway/templates/render.py): a failed one showed nothing.
        picks.shown(mine)
    return [
        {
            "id": r.product.external_id,
            "list_id": r.list_id,
            "title": r.product.title,
            "url": r.url,
            "image_url": r.product.image_url,
            "price": _money(r.product.price),
            "category": r.category,
            "reason": r.reason,
            "score": r.score,
        }
        for r in chosen
    ]


def _money(money: Money | None) -> dict[str, Any] | None:
    return {"amount": money.amount, "currency": money.currency} if money else None


def _order(order: Order) -> dict[str, Any]:
    return {
        "id": order.external_id,
        "name": order.name,
        "created_at": order.created_at,
        "financial_status": order.financial_status,
        "fulfillment_status": order.fulfillment_status,
        "total_price": _money(order.total_price),
        "line_items": [
            {
                "product_id": i.product_id,
                "title": i.title,
                "quantity": i.quantity,
                "price": _money(i.price),
            }
            for i in order.line_items
        ],
    }


def _event(event: AnalyticsEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "name": event.name,
        "occurred_at": event.timestamp,
        "session_id": event.session_id,
        "properties": dict(event.properties),
    }


def _engagement(events: Sequence[AnalyticsEvent], now: datetime) -> dict[str, Any]:
    found = behaviour.engagement(events, now)
    return {
        "sessions_30d": found.sessions,
        "page_views_30d": found.page_views,
        "last_seen_at": found.last_seen_at,
    }


def _cart(cart: behaviour.Cart | None) -> dict[str, Any] | None:
    if cart is None:
        return None
    return {
        "items": [
            {"product_id": i.product_id, "title": i.title, "quantity": i.quantity, "price": i.price}
            for i in cart.items
        ],
        "subtotal": cart.subtotal,
        "updated_at": cart.updated_at,
    }

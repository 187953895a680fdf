"""Typed records the adapters hand to the gateway; nothing upstream-shaped passes this line.

Records are frozen pydantic models validated strictly: an adapter builds them from
already-converted Python values (``datetime``, ``Decimal``), so strict mode turns a
mapping slip inside an adapter into an immediate error instead of a silent coercion.
Times are timezone-aware and converted to UTC; e-mail addresses are stripped and
lower-cased here, once, so every layer above compares them as plain strings; language
tags get BCP 47 casing for the same reason.
Ids are strings whatever the upstream's type (Shopify's are integers), because they
end up as GraphQL ``ID``\\ s and cache-key parts.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

__all__ = [
    "AnalyticsEvent",
    "AnalyticsTraits",
    "CommerceCustomer",
    "Consents",
    "CrmContact",
    "ExternalId",
    "InventoryLevel",
    "LineItem",
    "Money",
    "Order",
    "Product",
    "normalise_email",
    "normalise_language",
    "trusted_event",
]


def normalise_email(value: str) -> str:
    """The one normal form of an address used across the gateway."""
    return value.strip().lower()


def _email_or_none(value: Any) -> Any:
    if isinstance(value, str):
        value = normalise_email(value)
        return value or None
    return value


def normalise_language(value: str) -> str:
    """BCP 47 casing (``es-es`` and ``es_ES`` both become ``es-ES``), so tags from
    different upstreams compare equal."""
    parts = value.strip().replace("_", "-").split("-")
    shaped = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            shaped.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            shaped.append(part.title())
        else:
            shaped.append(part.lower())
    return "-".join(shaped)


def _language_or_none(value: Any) -> Any:
    if isinstance(value, str):
        return normalise_language(value) if value.strip() else None
    return value


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Email = Annotated[str | None, BeforeValidator(_email_or_none)]
Language = Annotated[str | None, BeforeValidator(_language_or_none)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
NonEmpty = Annotated[str, Field(min_length=1)]


class Record(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class Money(Record):
    amount: Decimal
    currency: CurrencyCode


class Consents(Record):
    """Consent per purpose as the upstream states it; None means the upstream says nothing."""

    email_marketing: bool | None = None
    personalisation: bool | None = None
    analytics: bool | None = None


class CrmContact(Record):
    source: NonEmpty  # the configured upstream name, e.g. "hubspot"
    external_id: NonEmpty
    email: Email = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    company: str | None = None
    job_title: str | None = None
    city: str | None = None
    country: str | None = None
    lifecycle_stage: str | None = None
    owner_id: str | None = None
    date_of_birth: date | None = None
    language: Language = None
    consents: Consents = Consents()
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None


class CommerceCustomer(Record):
    source: NonEmpty
    external_id: NonEmpty
    email: Email = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    orders_count: Annotated[int, Field(ge=0)] = 0
    total_spent: Money
    last_order_id: str | None = None
    last_order_name: str | None = None
    state: str | None = None
    verified_email: bool | None = None
    tags: tuple[str, ...] = ()
    email_marketing_consent: bool | None = None
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None


class LineItem(Record):
    external_id: NonEmpty
    product_id: str | None = None
    variant_id: str | None = None
    title: str
    quantity: Annotated[int, Field(ge=0)]
    price: Money
    sku: str | None = None


class Order(Record):
    source: NonEmpty
    external_id: NonEmpty
    name: str | None = None
    customer_id: str | None = None
    email: Email = None
    created_at: UtcDatetime
    processed_at: UtcDatetime | None = None
    financial_status: str | None = None
    fulfillment_status: str | None = None
    total_price: Money
    subtotal_price: Money | None = None
    total_tax: Money | None = None
    line_items: tuple[LineItem, ...] = ()


class Product(Record):
    source: NonEmpty
    external_id: NonEmpty
    title: str
    handle: str
    category: str | None = None
    vendor: str | None = None
    status: str | None = None
    tags: tuple[str, ...] = ()
    price: Money | None = None
    image_url: str | None = None
    url: str | None = None
    variant_id: str | None = None
    sku: str | None = None
    inventory_item_id: str | None = None


class InventoryLevel(Record):
    source: NonEmpty
    inventory_item_id: NonEmpty
    location_id: str | None = None
    available: int | None = None
    updated_at: UtcDatetime | None = None


class AnalyticsTraits(Record):
    """A Segment profile's traits: the well-known ones typed, the rest kept as JSON."""

    source: NonEmpty
    user_id: str | None = None
    email: Email = None
    first_name: str | None = None
    last_name: str | None = None
    created_at: UtcDatetime | None = None
    last_seen_at: UtcDatetime | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class AnalyticsEvent(Record):
    source: NonEmpty
    id: NonEmpty  # Segment's message_id
    type: str  # "track", "page", "identify"…
    name: str | None = None  # the track event's name, e.g. "Product Viewed"
    timestamp: UtcDatetime
    session_id: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


_new_event = AnalyticsEvent.__new__
_set = object.__setattr__
_EVENT_FIELDS = frozenset(AnalyticsEvent.model_fields)


def trusted_event(
    source: str,
    id: str,
    type: str,
    name: str | None,
    timestamp: datetime,
    session_id: str | None,
    properties: dict[str, Any],
) -> AnalyticsEvent:
    """An ``AnalyticsEvent`` built without validation, from values our own store holds:
    validated on the way in, read back by the thousand (a send's 5,000 events). What
    ``model_construct`` does for this model, minus its per-field alias walk (validation
    was ~4 us an event, ``model_construct`` ~5, this ~1). ``timestamp`` must be aware UTC."""
    event = _new_event(AnalyticsEvent)
    _set(
        event,
        "__dict__",
        {
            "source": source,
            "id": id,
            "type": type,
            "name": name,
            "timestamp": timestamp,
            "session_id": session_id,
            "properties": properties,
        },
    )
    _set(event, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


class ExternalId(Record):
    source: NonEmpty
    id: NonEmpty
    type: str  # "user_id", "email", "anonymous_id", or another identifier kind
    source_id: str | None = None
    collection: str | None = None
    created_at: UtcDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise_email_id(cls, data: Any) -> Any:
        # An e-mail external id is an address like any other: one normal form.
        if (
            isinstance(data, dict)
            and data.get("type") == "email"
            and isinstance(data.get("id"), str)
        ):
            return {**data, "id": normalise_email(data["id"])}
        return data

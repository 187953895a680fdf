"""Webhook bodies as each source sends them, validated into source-agnostic events.

Upstream shapes stop here (the same rule as the adapters' border): the ingest service
sees only ``InboundEvent``s, whatever the source. Validation problems become a
``PayloadError`` naming the field and the rule, never quoting the value (it may be PII).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from gateway.experiments.order_times import ORDER_COMPLETED, not_after
from gateway.ingest.json_text import (
    LATEST_MS,
    DecimalText,
    EventTime,
    PayloadError,
    not_boolean,
    parse_json,
    payload_error,
)

SOURCES = ("hubspot", "shopify", "segment", "sendgrid", "mandrill")
M = TypeVar("M", bound=BaseModel)
# What an ESP event does to its recipient's profile (gateway/ingest/engagement.py):
# withdraw email-marketing consent, or mark the address undeliverable.
Consequence = Literal["withdraw", "undeliverable"]

# HubSpot contact properties that are identity record fields; the others are stored as
# attributes under the gateway's own field names where it has one.
_HUBSPOT_RECORD = {
    "email": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "phone": "phone",
    "mobilephone": "phone",
    "date_of_birth": "date_of_birth",
    "address": "address",
    "city": "city",
    "zip": "postcode",
}
_HUBSPOT_ATTRIBUTES = {
    "lifecyclestage": "lifecycle_stage",
    "hubspot_owner_id": "owner_id",
    "company": "company",
    "jobtitle": "job_title",
    "country": "country",
}
# HubSpot's consent properties (as adapters/hubspot.py reads them): a change is the
# CRM's statement for that purpose at the event's time, stored as one.
_HUBSPOT_CONSENTS = {f"consent_{p}": p for p in ("email_marketing", "personalisation", "analytics")}
_ORDER_FIELDS = ("orders", "order_count", "lifetime_value", "last_order_at")


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (4 us of
# a stream message's parse, built thousands of times a second).
@dataclass(slots=True)
class InboundEvent:
    """One change a source reported, ready to store and link."""

    source: str
    event_id: str
    type: str
    occurred_at: datetime
    # The source record for the identity resolver (``external_id`` and record fields),
    # or None for an event that belongs to nobody (nothing to link).
    record: dict[str, Any] | None
    attributes: dict[str, str] = field(default_factory=dict)  # stored beside the record
    changed: tuple[str, ...] = ()  # the gateway's field names this event touches
    properties: dict[str, Any] = field(default_factory=dict)  # kept on the event row
    # Identifiers the event carries without linking by them, as (kind, value) with kind
    # "email", "phone" or "anonymous" (a device id): whom an anonymous event names, so
    # an erasure of that person removes it and a tombstone refuses it.
    subjects: tuple[tuple[str, str], ...] = ()
    # A digest of the signed body, when ``event_id`` is not itself signed (Shopify's id
    # is a header): a second dedupe key that a replay under a new id cannot change.
    receipt: str | None = None
    # An ESP event's recipient (normalised): it is linked to the stored customer with
    # this address and never creates one; an unknown address leaves nothing stored.
    recipient: str | None = None
    consequence: Consequence | None = None
    consent: tuple[str, bool] | None = None  # (purpose, granted) a source stated


class PayloadModel(BaseModel):
    """A payload part: unknown fields ignored (sources add fields), frozen."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# --- Shopify ---------------------------------------------------------------------------


class ShopifyAddress(PayloadModel):
    address1: str | None = None
    city: str | None = None
    zip: str | None = None


class ShopifyCustomer(PayloadModel):
    id: int
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    updated_at: EventTime | None = None
    created_at: EventTime | None = None
    default_address: ShopifyAddress | None = None


class ShopifyOrder(PayloadModel):
    id: int
    email: str | None = None
    created_at: EventTime | None = None
    total_price: DecimalText | None = None
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    customer: ShopifyCustomer | None = None


def _shopify_record(customer: ShopifyCustomer, email: str | None = None) -> dict[str, Any]:
    address = customer.default_address or ShopifyAddress()
    return {
        "external_id": str(customer.id),
        "email": customer.email or email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "phone": customer.phone,
        "address": address.address1,
        "city": address.city,
        "postcode": address.zip,
        "observed_at": customer.updated_at or customer.created_at,
    }


def _reported(record: Mapping[str, Any]) -> tuple[str, ...]:
    skip = {"external_id", "observed_at"}
    return tuple(k for k, v in record.items() if k not in skip and v not in (None, ""))


def parse_shopify(body: bytes, topic: str | None, webhook_id: str | None) -> list[InboundEvent]:
    """One event; ``body`` must be the raw body the signature was checked over."""
    if not webhook_id:
        raise PayloadError("X-Shopify-Webhook-Id is required", "X-Shopify-Webhook-Id", 400)
    data = parse_json(body)
    now = datetime.now(UTC)
    # Only the body is signed (not the id, the topic or the time): its digest is the
    # dedupe key a replay cannot change.
    receipt = hashlib.sha256(body).hexdigest()
    if topic in ("customers/create", "customers/update"):
        customer = _validate(ShopifyCustomer, data)
        record = _shopify_record(customer)
        changed = _reported(record)
        occurred = customer.updated_at or customer.created_at or now
        return [
            InboundEvent(
                "shopify", webhook_id, topic, occurred, record, {}, changed, receipt=receipt
            )
        ]
    if topic in ("orders/create", "orders/updated", "orders/paid"):
        order = _validate(ShopifyOrder, data)
        if order.customer is None:
            raise PayloadError("an order webhook must carry its customer", "customer")
        record = _shopify_record(order.customer, order.email)
        properties = {
            "order_id": str(order.id),
            "total_price": order.total_price,
            "currency": order.currency,
        }
        occurred = not_after(order.created_at or now, now)
        event = InboundEvent(
            "shopify",
            webhook_id,
            topic,
            occurred,
            record,
            {},
            _ORDER_FIELDS,
            properties,
            receipt=receipt,
        )
        return [event]
    raise PayloadError(
        "unsupported X-Shopify-Topic; expected customers/create, customers/update, "
        "orders/create, orders/updated or orders/paid",
        "X-Shopify-Topic",
    )


# --- HubSpot ---------------------------------------------------------------------------


class HubSpotEvent(PayloadModel):
    eventId: int | str
    subscriptionType: Literal["contact.creation", "contact.propertyChange"]
    objectId: int | str
    occurredAt: Annotated[int, BeforeValidator(not_boolean), Field(ge=0, le=LATEST_MS)]  # ms
    propertyName: str | None = Field(default=None, min_length=1, max_length=100)
    propertyValue: str | None = None


_HUBSPOT_BATCH = TypeAdapter(list[HubSpotEvent])
_FLAG = TypeAdapter(bool)  # lax, as pydantic reads the adapter's consent properties
# HubSpot sends at most 100 events a request. A batch is validated and prepared in one
# go on the event loop before its first write: 6,000 signed events (1 MiB) held the
# worker, /healthz included, for more than a second.
MAX_HUBSPOT_EVENTS = 100


def parse_hubspot(body: bytes) -> list[InboundEvent]:
    data = parse_json(body)
    if not isinstance(data, list) or not data:
        raise PayloadError("the body must be a non-empty JSON array of events")
    if len(data) > MAX_HUBSPOT_EVENTS:
        raise PayloadError(
            f"a batch holds at most {MAX_HUBSPOT_EVENTS} events, as HubSpot sends them"
        )
    try:
        events = _HUBSPOT_BATCH.validate_python(data)
    except ValidationError as exc:
        raise payload_error(exc) from None
    return [_hubspot_event(i, e) for i, e in enumerate(events)]


def _hubspot_event(position: int, event: HubSpotEvent) -> InboundEvent:
    occurred = datetime.fromtimestamp(event.occurredAt / 1000, UTC)
    record: dict[str, Any] = {"external_id": str(event.objectId), "observed_at": occurred}
    attributes: dict[str, str] = {}
    changed: tuple[str, ...] = ()
    consent = None
    if event.subscriptionType == "contact.propertyChange":
        name = event.propertyName
        if name is None:
            raise PayloadError(
                "a propertyChange event needs propertyName", f"{position}.propertyName"
            )
        # The event carries the new value: nothing is fetched from HubSpot.
        if name in _HUBSPOT_RECORD:
            record[_HUBSPOT_RECORD[name]] = event.propertyValue
            changed = (_HUBSPOT_RECORD[name],)
        elif name in _HUBSPOT_CONSENTS:
            # Read as the adapter reads the property (true/false, yes/no, on/off, 1/0);
            # cleared, it says nothing.
            value = (event.propertyValue or "").strip()
            try:
                consent = (_HUBSPOT_CONSENTS[name], _FLAG.validate_python(value)) if value else None
            except ValidationError:
                raise PayloadError("true or false", f"{position}.propertyValue") from None
            changed = ("consent",) if consent else ()
        else:
            field_name = _HUBSPOT_ATTRIBUTES.get(name, name)
            attributes[field_name] = event.propertyValue or ""
            changed = (field_name,)
    return InboundEvent(
        "hubspot",
        str(event.eventId),
        event.subscriptionType,
        occurred,
        record,
        attributes,
        changed,
        {"property": event.propertyName} if event.propertyName else {},
        consent=consent,
    )


# --- Segment ---------------------------------------------------------------------------


class SegmentAddress(PayloadModel):
    street: str | None = None
    city: str | None = None
    postalCode: str | None = None


class SegmentTraits(PayloadModel):
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    phone: str | None = None
    birthday: str | None = None
    address: SegmentAddress | None = None


class SegmentContext(PayloadModel):
    traits: SegmentTraits | None = None


class SegmentEvent(PayloadModel):
    """A Segment Track, Identify or Page call, as the webhook and the event stream carry it."""

    type: Literal["identify", "track", "page"]
    messageId: str = Field(min_length=1, max_length=255)
    userId: str | None = Field(default=None, max_length=255)
    anonymousId: str | None = None
    event: str | None = Field(default=None, max_length=94)  # stored as "track:<event>", 100
    name: str | None = Field(default=None, max_length=100)  # a page call's page name
    traits: SegmentTraits | None = None
    context: SegmentContext | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: EventTime | None = None


# Frozen, so shared: building empty models per event was a third of a stream event's
# conversion (the stream consumer converts thousands a second).
_NO_TRAITS = SegmentTraits()
_NO_ADDRESS = SegmentAddress()
_BEHAVIOUR = ("recent_events", "engagement")  # what a track or page call changes


def parse_segment(body: bytes) -> list[InboundEvent]:
    return [segment_event(_validate(SegmentEvent, parse_json(body)))]


def segment_event(event: SegmentEvent, *, with_record: bool = True) -> InboundEvent:
    """One validated Segment call as the event the ingest paths store (webhook and stream
    alike: the same row, the same dedupe key, the same subjects). ``with_record=False``:
    the caller holds the person's record prepared already (the stream's track and page
    calls of a user it has seen), so none is built for them (``record`` left None)."""
    kind: str = event.type
    if kind == "track":
        if not event.event:
            raise PayloadError("a track event needs its event name", "event")
        kind = f"track:{event.event}"
    occurred = event.timestamp or datetime.now(UTC)
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)  # Segment's timestamps are UTC
    if kind == ORDER_COMPLETED:
        occurred = not_after(occurred, datetime.now(UTC))
    if event.type == "page":
        properties: dict[str, Any] = {"name": event.name, "properties": event.properties}
    elif event.event:
        properties = {"event": event.event, "properties": event.properties}
    else:
        properties = {}
    anonymous = (("anonymous", event.anonymousId),) if event.anonymousId else ()
    if not event.userId:
        # Anonymous activity is kept but links to nobody: there is no key to link by.
        # Whom it names is kept hashed (``subjects``) for an erasure to find it.
        carried = [event.traits, event.context.traits if event.context else None]
        subjects = anonymous + _contact_points([*carried, event.properties])
        return InboundEvent(
            "segment", event.messageId, kind, occurred, None, {}, (), properties, subjects
        )
    if not with_record and event.type != "identify":
        return InboundEvent(
            "segment", event.messageId, kind, occurred, None, {}, _BEHAVIOUR, properties, anonymous
        )
    traits = event.traits or (event.context.traits if event.context else None) or _NO_TRAITS
    address = traits.address or _NO_ADDRESS
    record = {
        "external_id": event.userId,
        "email": traits.email,
        "first_name": traits.firstName,
        "last_name": traits.lastName,
        "phone": traits.phone,
        "date_of_birth": traits.birthday,
        "address": address.street,
        "city": address.city,
        "postcode": address.postalCode,
        "observed_at": occurred,
    }
    changed = _reported(record) if event.type == "identify" else _BEHAVIOUR
    return InboundEvent(
        "segment", event.messageId, kind, occurred, record, {}, changed, properties, anonymous
    )


def _contact_points(
    carriers: list[SegmentTraits | dict[str, Any] | None],
) -> tuple[tuple[str, str], ...]:
    """The e-mails and phones an unlinked event carries: in ``traits``, in
    ``context.traits``, or as ``properties.email``/``phone`` (common in track calls)."""
    found: dict[tuple[str, str], None] = {}
    for carrier in carriers:
        if carrier is None:
            continue
        values = carrier if isinstance(carrier, dict) else carrier.model_dump()
        for kind in ("email", "phone"):
            value = values.get(kind)
            if isinstance(value, str) and value.strip():
                found[(kind, value.strip())] = None
    return tuple(found)


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise payload_error(exc) from None

"""Engagement events as email service providers send them: SendGrid's Event Webhook (a
JSON array) and Mailchimp Transactional's (the ``mandrill_events`` form field), validated
into the same ``InboundEvent``s the other webhooks store.

An ESP event names its recipient by address only: it is linked to the stored customer
with that address (``InboundEvent.recipient``) and never creates one. What it does to
the profile is decided here, once, for both ESPs (``InboundEvent.consequence``):
an unsubscribe, a spam report or a rejection withdraws email-marketing consent; a hard
bounce marks the address undeliverable. Opens and clicks are stored as behaviour
(types ``email:open`` and ``email:click`` whichever ESP sent them).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway.ingest.webhook_payloads import Consequence, InboundEvent, PayloadError
from gateway.profiles.contact_points import normalize_email

ESP_SOURCES = ("sendgrid", "mandrill")
# SendGrid posts batches by size (its documented examples reach a few thousand events);
# the body limit bounds them first. Past this a batch is refused whole, read no further.
MAX_ESP_EVENTS = 10_000

# By ESP event name: what the event does to the recipient's profile.
_CONSEQUENCES: dict[str, Consequence] = {
    # SendGrid
    "unsubscribe": "withdraw",
    "group_unsubscribe": "withdraw",
    "spamreport": "withdraw",
    # Mailchimp Transactional
    "unsub": "withdraw",
    "spam": "withdraw",
    "reject": "withdraw",
    "hard_bounce": "undeliverable",
}
# SendGrid's fields that are not custom arguments (custom args arrive beside them).
_SENDGRID_STANDARD = frozenset(
    {
        "email", "timestamp", "event", "sg_event_id", "sg_message_id", "smtp-id", "url",
        "url_offset", "useragent", "ip", "reason", "status", "response", "attempt", "type",
        "bounce_classification", "asm_group_id", "tls", "cert_err", "category", "pool",
        "sg_machine_open", "sg_content_type", "sg_template_id", "sg_template_name",
        "marketing_campaign_id", "marketing_campaign_name", "marketing_campaign_version",
        "marketing_campaign_split_id", "singlesend_id", "singlesend_name", "template_id",
        "template_version_id", "template_hash", "mc_stats", "phase_id", "send_at",
    }
)  # fmt: skip
_MAX_CUSTOM_ARGS = 32
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SendGridEvent(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    email: str = Field(min_length=1, max_length=1000)
    timestamp: int = Field(ge=0, le=253_402_300_799)  # epoch seconds, before the year 10000
    event: str = Field(min_length=1, max_length=64)
    sg_event_id: str = Field(min_length=1, max_length=255)
    sg_message_id: str | None = Field(default=None, max_length=255)
    url: str | None = Field(default=None, max_length=8192)
    type: str | None = Field(default=None, max_length=32)  # a bounce's: bounce | blocked
    asm_group_id: int | None = None
    category: str | list[str] | None = None


_SENDGRID_BATCH = TypeAdapter(list[SendGridEvent])


def parse_sendgrid(body: bytes) -> list[InboundEvent]:
    data = _json(body)
    if not isinstance(data, list) or not data:
        raise PayloadError("the body must be a non-empty JSON array of events")
    if len(data) > MAX_ESP_EVENTS:
        raise PayloadError(f"a batch holds at most {MAX_ESP_EVENTS} events")
    try:
        events = _SENDGRID_BATCH.validate_python(data)
    except ValidationError as exc:
        raise _payload_error(exc) from None
    return [_sendgrid_event(position, event) for position, event in enumerate(events)]


def _sendgrid_event(position: int, event: SendGridEvent) -> InboundEvent:
    email = _email(event.email, f"{position}.email")
    consequence = _CONSEQUENCES.get(event.event)
    if event.event == "bounce" and event.type != "blocked":
        consequence = "undeliverable"  # "blocked" is a temporary refusal, not a hard bounce
    properties: dict[str, Any] = {"message_id": event.sg_message_id}
    if event.url:
        properties["url"] = event.url
    if event.type:
        properties["bounce_type"] = event.type
    if event.asm_group_id is not None:
        properties["asm_group_id"] = event.asm_group_id
    if event.category is not None:
        properties["category"] = event.category
    custom = {
        name: value
        for name, value in (event.model_extra or {}).items()
        if name not in _SENDGRID_STANDARD and isinstance(value, str | int | float | bool)
    }
    if custom:
        properties["custom_args"] = dict(list(custom.items())[:_MAX_CUSTOM_ARGS])
    return _esp_event(
        "sendgrid",
        event.sg_event_id,
        event.event,
        datetime.fromtimestamp(event.timestamp, UTC),
        email,
        consequence,
        properties,
    )


class MandrillMessage(_Model):
    email: str | None = Field(default=None, max_length=1000)
    id: str | None = Field(default=None, alias="_id", max_length=255)
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None


class MandrillEvent(_Model):
    event: str = Field(min_length=1, max_length=64)
    id: str | None = Field(default=None, alias="_id", max_length=255)
    ts: int = Field(ge=0, le=253_402_300_799)
    url: str | None = Field(default=None, max_length=8192)
    msg: MandrillMessage | None = None


_MANDRILL_BATCH = TypeAdapter(list[MandrillEvent])


def mandrill_form(body: bytes) -> list[tuple[str, str]]:
    """The POST parameters as signed (``application/x-www-form-urlencoded``)."""
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("the body is not a URL-encoded form", status=400) from None


def parse_mandrill(params: list[tuple[str, str]]) -> list[InboundEvent]:
    """Events of the ``mandrill_events`` field; those naming no recipient (Mandrill's
    sync events: allow- and deny-list changes) are acknowledged and not stored."""
    raw = [value for name, value in params if name == "mandrill_events"]
    if len(raw) != 1:
        raise PayloadError("the form must carry one mandrill_events field", "mandrill_events")
    data = _json(raw[0].encode())
    if not isinstance(data, list):
        raise PayloadError("mandrill_events must be a JSON array of events", "mandrill_events")
    if len(data) > MAX_ESP_EVENTS:
        raise PayloadError(f"a batch holds at most {MAX_ESP_EVENTS} events", "mandrill_events")
    try:
        events = _MANDRILL_BATCH.validate_python(data)
    except ValidationError as exc:
        raise _payload_error(exc, "mandrill_events") from None
    return [
        _mandrill_event(position, event)
        for position, event in enumerate(events)
        if event.msg is not None and event.msg.email
    ]


def _mandrill_event(position: int, event: MandrillEvent) -> InboundEvent:
    message = event.msg or MandrillMessage()
    email = _email(message.email or "", f"mandrill_events.{position}.msg.email")
    message_id = event.id or message.id
    # Mandrill's ``_id`` is the message's, shared by its every open and click: the event's
    # own key is its kind, message, time and link together.
    key = "\n".join((event.event, message_id or "", str(event.ts), event.url or "", email))
    event_id = hashlib.sha256(key.encode()).hexdigest()[:40]
    properties: dict[str, Any] = {"message_id": message_id}
    if event.url:
        properties["url"] = event.url
    if message.metadata:
        properties["custom_args"] = {
            name: value
            for name, value in list(message.metadata.items())[:_MAX_CUSTOM_ARGS]
            if isinstance(value, str | int | float | bool)
        }
    if message.tags:
        properties["category"] = message.tags[:_MAX_CUSTOM_ARGS]
    return _esp_event(
        "mandrill",
        event_id,
        event.event,
        datetime.fromtimestamp(event.ts, UTC),
        email,
        _CONSEQUENCES.get(event.event),
        properties,
    )


def _esp_event(
    source: str,
    event_id: str,
    kind: str,
    occurred: datetime,
    email: str,
    consequence: Consequence | None,
    properties: dict[str, Any],
) -> InboundEvent:
    changed: tuple[str, ...] = ("engagement",)
    if consequence == "withdraw":
        changed = ("consent", "consents", "suppressed")
    elif consequence == "undeliverable":
        changed = ("email_status",)
    return InboundEvent(
        source,
        event_id,
        f"email:{kind}",
        occurred,
        None,
        changed=changed,
        properties=properties,
        subjects=(("email", email),),
        recipient=email,
        consequence=consequence,
    )


def _email(raw: str, where: str) -> str:
    text = raw.strip()
    if _PLAIN_ADDRESS.fullmatch(text) and "xn--" not in text.lower():  # IDNA: the slow way
        # What ``normalize_email`` makes of a plain ASCII address, at a hundredth of its
        # cost (half a batch's time went to it): an address it would refuse can only
        # match no stored customer, so the event is ignored rather than refused.
        return text.lower()
    try:
        return normalize_email(raw)
    except ValueError:
        raise PayloadError(f"{where}: not an email address", where) from None


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PayloadError("the body is not valid JSON", status=400) from None


def _payload_error(exc: ValidationError, prefix: str | None = None) -> PayloadError:
    # The message and location only: pydantic's ``input`` would echo customer data.
    error = exc.errors()[0]
    where = ".".join(str(part) for part in (prefix, *error["loc"]) if part is not None) or None
    return PayloadError(f"{where or 'body'}: {error['msg']}", where)

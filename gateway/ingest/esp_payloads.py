"""Engagement events as email service providers send them: SendGrid's Event Webhook (a
JSON array) and Mailchimp Transactional's (the ``mandrill_events`` form field), validated
into the same ``InboundEvent``s the other webhooks store.

An ESP event names its recipient by address only: it is linked to the stored customer
with that address (``InboundEvent.recipient``) and never creates one. What it does to
the profile is decided here, once, for both ESPs (``InboundEvent.consequence``):
an unsubscribe, a spam report or a rejection withdraws email-marketing consent; a hard
bounce marks the address undeliverable. Opens and clicks are stored as behaviour
(types ``email:open`` and ``email:click`` whichever ESP sent them).

A batch is refused whole only for its envelope (not a JSON array of objects, an event
without its id): one event's bad field (an address no customer can have, an over-long
URL, text no database stores) makes that event a ``SkippedEvent``, acknowledged and
not stored, so the batch's other events, its unsubscribes among them, are not lost with
it on every retry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from gateway.ingest.esp_custom_args import MAX_CUSTOM_ARGS, custom_args, sendgrid_custom
from gateway.ingest.json_text import NOT_JSON, PayloadError, bad_text_at, batch_json, not_boolean
from gateway.ingest.webhook_payloads import Consequence, InboundEvent, PayloadModel
from gateway.profiles.contact_points import normalize_recipient

# Mandrill signs no time: a captured body is valid for ever. Its opens and clicks older
# than this are acknowledged and not stored (``ignored``), so a body replayed after
# retention deleted its rows does not count them again. Unsubscribes and bounces are
# kept at any age: they count at their own time, so a replayed one loses to any newer
# opt-in, and dropping a real late one would mail someone who asked not to be.
MANDRILL_MAX_AGE_S = 7 * 86_400.0
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
_SYNC_TYPES = ("whitelist", "blacklist")  # Mandrill's allow- and deny-list changes
_ENGAGEMENT = frozenset({"open", "click"})  # both ESPs' names: email:open, email:click
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+"
)


@dataclass(frozen=True, slots=True)
class SkippedEvent:
    """An event of a batch acknowledged and not stored, and why: ``rejected`` for a field
    no retry can fix; ``ignored`` for a Mandrill event older than the replay bound.
    ``consequence``: what it would have done (a withdrawal refused is counted apart)."""

    event_id: str
    status: Literal["rejected", "ignored"]
    reason: str
    field: str | None = None
    consequence: Consequence | None = None


EspItem = InboundEvent | SkippedEvent


# Epoch seconds before the year 10000 (1.7e9 too), not JSON's true (lax, second 1 of 1970).
EpochSeconds = Annotated[int, BeforeValidator(not_boolean), Field(ge=0, le=253_402_300_799)]


class SendGridEvent(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    email: str = Field(min_length=1, max_length=1000)
    timestamp: EpochSeconds
    event: str = Field(min_length=1, max_length=64)
    sg_event_id: str = Field(min_length=1, max_length=255)
    sg_message_id: str | None = Field(default=None, max_length=255)
    url: str | None = Field(default=None, max_length=8192)
    type: str | None = Field(default=None, max_length=32)  # a bounce's: bounce | blocked
    asm_group_id: int | None = None
    category: str | list[str] | None = None


_SENDGRID_BATCH = TypeAdapter(list[SendGridEvent])


def parse_sendgrid(body: bytes) -> list[EspItem]:
    if (parsed := batch_json(body)) is None:
        raise PayloadError(NOT_JSON, status=400)
    data, sent = parsed  # ``sent``: the batch as sent, when it held unpaired surrogates
    if not isinstance(data, list) or not data:
        raise PayloadError("the body must be a non-empty JSON array of events")
    if len(data) > MAX_ESP_EVENTS:
        raise PayloadError(f"a batch holds at most {MAX_ESP_EVENTS} events")
    try:
        events = _SENDGRID_BATCH.validate_python(data)
    except ValidationError:
        # Event by event (the slow way, only for a batch with a bad one): a bad field
        # skips its event, a missing or bad event id refuses the batch.
        items = [_sendgrid_item(position, raw) for position, raw in enumerate(data)]
    else:
        items = [_sendgrid_event(position, event) for position, event in enumerate(events)]
    # JSON holds a NUL only escaped, and orjson takes no unpaired surrogate: most batches
    # skip the walk.
    if sent is not None or b"\\u0000" in body:
        items = [
            _sendgrid_text(position, raw, item)
            for position, (raw, item) in enumerate(zip(sent or data, items, strict=True))
        ]
    return items


def _sendgrid_text(position: int, raw: Any, item: EspItem) -> EspItem:
    """``item``, or its event rejected for text no database stores in one of its strings
    (gateway/ingest/json_text.py): a NUL failed the whole batch on PostgreSQL, and an
    unpaired surrogate had the whole body refused as not JSON. In its id (the envelope:
    there is no id to answer the event by) either refuses the batch."""
    id_at = f"{position}.sg_event_id"
    if isinstance(raw, dict) and (bad_id := bad_text_at(raw.get("sg_event_id"), id_at)):
        raise PayloadError(f"{id_at}: {bad_id[1]}", id_at)
    found = bad_text_at(raw, str(position))
    if found is None:
        return item
    where, what = found  # over any other reason: one found in cleaned fields may be the cleaning
    consequence = _consequence(raw.get("event"), raw.get("type"))
    return SkippedEvent(item.event_id, "rejected", f"{where}: {what}", where, consequence)


def _sendgrid_item(position: int, raw: Any) -> EspItem:
    try:
        event = SendGridEvent.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        envelope = [e for e in errors if not e["loc"] or e["loc"][0] == "sg_event_id"]
        if envelope:  # not an object, or no id to answer it by
            reason, where = _problem(envelope[0], str(position))
            raise PayloadError(reason, where) from None
        reason, where = _problem(errors[0], str(position))
        consequence = _consequence(raw.get("event"), raw.get("type"))
        return SkippedEvent(str(raw["sg_event_id"]), "rejected", reason, where, consequence)
    return _sendgrid_event(position, event)


def _consequence(event: object, bounce_type: object = None) -> Consequence | None:
    """What an event of this name (and SendGrid bounce type) does to its recipient."""
    if event == "bounce":  # "blocked" is a temporary refusal, not a hard bounce
        return None if bounce_type == "blocked" else "undeliverable"
    return _CONSEQUENCES.get(event) if isinstance(event, str) else None


def _mandrill_consequence(event: object) -> Consequence | None:
    return _CONSEQUENCES.get(event) if isinstance(event, str) else None


def _sendgrid_event(position: int, event: SendGridEvent) -> EspItem:
    consequence = _consequence(event.event, event.type)
    email = _email(event.email)
    if email is None:
        return _unaddressed(event.sg_event_id, f"{position}.email", consequence)
    properties: dict[str, Any] = {"message_id": event.sg_message_id}
    if event.url:
        properties["url"] = event.url
    if event.type:
        properties["bounce_type"] = event.type
    if event.asm_group_id is not None:
        properties["asm_group_id"] = event.asm_group_id
    if event.category is not None:
        properties["category"] = event.category
    if custom := sendgrid_custom(event.model_extra):
        properties["custom_args"] = custom
    return _esp_event(
        "sendgrid",
        event.sg_event_id,
        event.event,
        datetime.fromtimestamp(event.timestamp, UTC),
        email,
        consequence,
        properties,
    )


class MandrillMessage(PayloadModel):
    email: str | None = Field(default=None, max_length=1000)
    id: str | None = Field(default=None, alias="_id", max_length=255)
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None


class MandrillEvent(PayloadModel):
    event: str = Field(min_length=1, max_length=64)
    id: str | None = Field(default=None, alias="_id", max_length=255)
    ts: EpochSeconds
    url: str | None = Field(default=None, max_length=8192)
    msg: MandrillMessage | None = None


_MANDRILL_BATCH = TypeAdapter(list[MandrillEvent])


def parse_mandrill(
    params: list[tuple[str, str]],
    max_age_s: float | None = MANDRILL_MAX_AGE_S,
    now: float | None = None,
) -> list[EspItem]:
    """Events of the ``mandrill_events`` field. Those naming no message (Mandrill's sync
    events: allow- and deny-list changes, with a ``type`` and no ``event``; an event
    without a ``msg``) are acknowledged and not stored: left out of the list, neither
    rejected nor counted. Opens and clicks older than ``max_age_s`` are answered
    ``ignored``, with the reason, and not stored."""
    raw = [value for name, value in params if name == "mandrill_events"]
    if len(raw) != 1:
        raise PayloadError("the form must carry one mandrill_events field", "mandrill_events")
    if (parsed := batch_json(raw[0].encode())) is None:
        raise PayloadError(NOT_JSON, status=400)
    data, sent = parsed  # as ``parse_sendgrid``'s
    if not isinstance(data, list):
        raise PayloadError("mandrill_events must be a JSON array of events", "mandrill_events")
    if len(data) > MAX_ESP_EVENTS:
        raise PayloadError(f"a batch holds at most {MAX_ESP_EVENTS} events", "mandrill_events")
    # Sync events (``type`` whitelist or blacklist, no ``event``, no ``msg``) are left
    # out before validation, which would reject them for want of an ``event``.
    positions = [p for p, item in enumerate(data) if not _is_sync(item)]
    data = [data[p] for p in positions]
    if sent is not None:
        sent = [sent[p] for p in positions]
    try:
        events: list[MandrillEvent | SkippedEvent] = list(_MANDRILL_BATCH.validate_python(data))
    except ValidationError:
        # Event by event, only for a batch with a bad one: a bad field skips its event.
        events = [_mandrill_item(p, item) for p, item in zip(positions, data, strict=True)]
    if sent is not None or "\\u0000" in raw[0]:  # a NUL is only escaped: most skip the walk
        events = [
            _mandrill_text(p, item, event)
            for p, item, event in zip(positions, sent or data, events, strict=True)
        ]
    oldest = None if max_age_s is None else (now or time.time()) - max_age_s
    return [
        event if isinstance(event, SkippedEvent) else _mandrill_event(p, event, oldest)
        for p, event in zip(positions, events, strict=True)
        if isinstance(event, SkippedEvent) or (event.msg is not None and event.msg.email)
    ]


def _is_sync(item: Any) -> bool:
    return isinstance(item, dict) and "event" not in item and item.get("type") in _SYNC_TYPES


def _mandrill_item(position: int, raw: Any) -> MandrillEvent | SkippedEvent:
    where = f"mandrill_events.{position}"
    if not isinstance(raw, dict):
        raise PayloadError(f"{where}: an event must be a JSON object", where)
    try:
        return MandrillEvent.model_validate(raw)
    except ValidationError as exc:
        reason, field = _problem(exc.errors()[0], where)
        # Its id as far as its fields allow (they are not stored: any stable name does).
        parts = (raw.get(name) for name in ("event", "_id", "ts", "url"))
        key = "\n".join(str(p) if isinstance(p, str | int | float) else "" for p in parts)
        return SkippedEvent(
            _digest(key), "rejected", reason, field, _mandrill_consequence(raw.get("event"))
        )


def _mandrill_text(
    position: int, raw: Any, event: MandrillEvent | SkippedEvent
) -> MandrillEvent | SkippedEvent:
    """``event``, or it rejected for a NUL or an unpaired surrogate in one of its strings
    (as ``_sendgrid_text``; its id, a digest of its fields, is taken as they validated)."""
    found = bad_text_at(raw, f"mandrill_events.{position}")
    if found is None or (isinstance(event, MandrillEvent) and not (event.msg and event.msg.email)):
        return event
    where, what = found
    reason = f"{where}: {what}"
    if isinstance(event, SkippedEvent):
        return dataclasses.replace(event, reason=reason, field=where)
    key = "\n".join((event.event, event.id or "", str(event.ts), event.url or ""))
    return SkippedEvent(_digest(key), "rejected", reason, where, _mandrill_consequence(event.event))


def _mandrill_event(position: int, event: MandrillEvent, oldest: float | None) -> EspItem:
    message = event.msg or MandrillMessage()
    email = _email(message.email or "")
    message_id = event.id or message.id
    # Mandrill's ``_id`` is the message's, shared by its every open and click: the event's
    # own key is its kind, message, time and link together.
    key = "\n".join((event.event, message_id or "", str(event.ts), event.url or "", email or ""))
    event_id = _digest(key)
    consequence = _mandrill_consequence(event.event)
    if email is None:
        return _unaddressed(event_id, f"mandrill_events.{position}.msg.email", consequence)
    if oldest is not None and event.ts < oldest and consequence is None:
        where = f"mandrill_events.{position}.ts"
        reason = f"{where}: older than the replay bound (Mandrill signs no time); not stored"
        return SkippedEvent(event_id, "ignored", reason, where)
    properties: dict[str, Any] = {"message_id": message_id}
    if event.url:
        properties["url"] = event.url
    if message.metadata:
        properties["custom_args"] = custom_args(message.metadata.items())
    if message.tags:
        properties["category"] = message.tags[:MAX_CUSTOM_ARGS]
    return _esp_event(
        "mandrill",
        event_id,
        event.event,
        datetime.fromtimestamp(event.ts, UTC),
        email,
        consequence,
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
    # Only opens and clicks change what ``engagement`` shows (event_store counts those):
    # a processed, delivered or deferred event, or a blocked bounce, changes no field,
    # so it drops no cached profile or stored answer in the middle of a send.
    changed: tuple[str, ...] = ("engagement",) if kind in _ENGAGEMENT else ()
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


def _email(raw: str) -> str | None:
    """The address as customers are stored under it, or None when it is none. Forms
    that name one address unambiguously (``Ada <x@example.com>``, ``"x"@example.com``,
    ``x@example.com.``) are that address (``normalize_recipient``)."""
    text = raw.strip()
    if _PLAIN_ADDRESS.fullmatch(text) and "xn--" not in text.lower():  # IDNA: the slow way
        # What ``normalize_email`` makes of a plain ASCII address, at a hundredth of its
        # cost (half a batch's time went to it): an address it would refuse can only
        # match no stored customer, so the event is ignored rather than refused.
        return text.lower()
    try:
        return normalize_recipient(raw)
    except ValueError:
        return None


def _unaddressed(event_id: str, where: str, consequence: Consequence | None) -> SkippedEvent:
    # Not one customer's address (``bob@localhost``, two addresses in one field): no
    # customer can have it, and no retry changes that.
    reason = f"{where}: not an email address"
    return SkippedEvent(event_id, "rejected", reason, where, consequence)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _problem(error: ErrorDetails, prefix: str) -> tuple[str, str]:
    """The reason and the field of a validation error. The message and location only:
    pydantic's ``input`` would echo customer data."""
    where = ".".join(str(part) for part in (prefix, *error["loc"]))
    return f"{where}: {error['msg']}", where

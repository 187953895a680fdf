"""Properties of the ESP webhooks over generated payloads: any signed body gets an answer
(200 or a 4xx naming its reason, never a 5xx); a batch with one bad event either stores
the rest and answers that event ``rejected`` (a bad field of its own), or is refused
whole and stores none of it (no event id: the envelope); either way the batch without
that event stores each event exactly once.
"""

from __future__ import annotations

import json
import time
import tracemalloc
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.db.engine import create_engine
from gateway.db.models import Event
from gateway.ingest.esp_payloads import SkippedEvent, parse_sendgrid
from gateway.ingest.json_text import PayloadError
from gateway.ingest.signatures import (
    MANDRILL_MAX_FIELDS,
    SignatureError,
    mandrill_form,
    sendgrid_public_key,
    verify_hubspot,
    verify_sendgrid,
)
from gateway.ingest.webhook_payloads import InboundEvent
from gateway.profiles.contact_points import normalize_email
from tests.gql_client import gql
from tests.ingest.test_esp_webhooks import UPSERT, profile, subscribed
from tests.ingest.webhook_requests import (
    SENDGRID_PUBLIC,
    mandrill_event,
    mandrill_request,
    mandrill_signed,
    sendgrid_event,
    sendgrid_request,
    sendgrid_signed,
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
KINDS = ["processed", "delivered", "open", "click", "bounce", "dropped", "spamreport",
         "unsubscribe", "group_unsubscribe", "deferred"]  # fmt: skip
# Ways to break one event: (what to do, the field it names). Breaking its id refuses
# the batch (422: there is nothing to answer the event by); any other field rejects that
# event alone, so an unsubscribe beside it is not lost on every retry of the batch.
ENVELOPE = {"sg_event_id"}
BREAKAGES = [
    ("drop", "sg_event_id"),
    ("drop", "email"),
    ("drop", "timestamp"),
    ("drop", "event"),
    ("set", ("email", "no-at-sign")),
    ("set", ("timestamp", "yesterday")),
    ("set", ("timestamp", -5)),
    ("set", ("timestamp", True)),  # JSON's true is no time (lax, it was second 1 of 1970)
    ("set", ("timestamp", 1.5)),
    ("set", ("sg_event_id", "")),
    ("set", ("sg_event_id", {"not": "a string"})),
    ("set", ("url", ["a", "list"])),
]
SLOW = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_parsed_or_refused_with_a_reason(data: Any) -> None:
    refusal: PayloadError | None = None
    try:
        parse_sendgrid(orjson.dumps(data))
    except PayloadError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.status in (400, 422)
        assert refusal.reason


@settings(max_examples=300, deadline=None)
@given(st.emails() | st.from_regex(r"[A-Za-z0-9.+_-]{1,20}@[A-Za-z0-9.-]{1,20}", fullmatch=True))
def test_an_events_address_is_the_one_customers_are_stored_under(address: str) -> None:
    """The recipient is the address as ``normalize_email`` stores it, whenever it is one."""
    try:
        stored = normalize_email(address)
    except ValueError:
        return  # no customer can have it
    body = orjson.dumps([{"email": address, "timestamp": 1, "event": "open", "sg_event_id": "e"}])
    (event,) = parse_sendgrid(body)
    assert isinstance(event, InboundEvent)
    assert event.recipient == stored


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_any_timestamp_header_is_passed_or_refused_with_a_reason(stamp: str) -> None:
    """Never another exception (``int("²")`` was a 500): a SignatureError or nothing."""
    key = sendgrid_public_key(SENDGRID_PUBLIC)
    url = "http://gw/webhooks/hubspot"
    for source in ("sendgrid", "hubspot"):
        reason = "passed"
        try:
            if source == "sendgrid":
                verify_sendgrid(key, b"[]", "x", stamp)
            else:
                verify_hubspot("s" * 16, "POST", url, b"[]", "x", stamp)
        except SignatureError as exc:
            reason = exc.reason
        assert reason


@pytest.mark.parametrize("digits", [309, 400, 4301])
def test_a_timestamp_of_hundreds_of_digits_is_stale_not_a_500(digits: int) -> None:
    """Anyone can send the header, signed or not: past ~308 digits SendGrid's check took
    the float of it (OverflowError), past 4,300 digits both parsed it (ValueError)."""
    key = sendgrid_public_key(SENDGRID_PUBLIC)
    stamp = "9" * digits
    with pytest.raises(SignatureError) as sendgrid:
        verify_sendgrid(key, b"[]", "x", stamp)
    url = "http://gw/webhooks/hubspot"
    with pytest.raises(SignatureError) as hubspot:
        verify_hubspot("s" * 16, "POST", url, b"[]", "x", stamp)
    assert sendgrid.value.code == hubspot.value.code == "stale_timestamp"


@SLOW
@given(body=st.binary(max_size=200) | JSON.map(orjson.dumps))
async def test_any_signed_body_gets_a_4xx_or_a_200_never_a_5xx(
    gateway: httpx.AsyncClient, body: bytes
) -> None:
    signed = sendgrid_signed(body)
    response = await gateway.post(**signed)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert response.json()["error"] == "invalid_payload"
        assert response.json()["reason"]


@SLOW
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=8),
    breakage=st.sampled_from(BREAKAGES),
    where=st.integers(min_value=0, max_value=8),
    data=st.data(),
)
async def test_a_batch_with_one_bad_event_stores_the_rest_or_nothing_and_without_it_once(
    gateway: httpx.AsyncClient,
    database_url: str,
    kinds: list[str],
    breakage: tuple[str, Any],
    where: int,
    data: st.DataObject,
) -> None:
    email = f"prop.{uuid.uuid4().hex[:12]}@example.com"
    assert "errors" not in await gql(gateway, UPSERT, email=email)
    events = [
        {
            "email": email,
            "timestamp": int(time.time()) - data.draw(st.integers(0, 86400)),
            "event": kind,
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": uuid.uuid4().hex,
        }
        for kind in kinds
    ]
    position = where % (len(events) + 1)
    bad = dict(events[position % len(events)], sg_event_id=uuid.uuid4().hex)
    action, detail = breakage
    if action == "drop":
        del bad[detail]
        field = detail
    else:
        bad[detail[0]] = detail[1]
        field = detail[0]
    batch = [*events[:position], bad, *events[position:]]
    answer = await gateway.post(**sendgrid_request(batch))
    assert email not in answer.text  # the reason never echoes the address
    if field in ENVELOPE:
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == f"{position}.{field}"
        assert await _stored(database_url, events) == 0
    else:
        assert answer.status_code == 200, answer.text
        skipped = answer.json()["events"][position]
        assert (skipped["status"], skipped["field"]) == ("rejected", f"{position}.{field}")
        assert skipped["reason"]
        assert await _stored(database_url, events) == len(events)
        assert await _stored(database_url, [bad]) == 0
    accepted = await gateway.post(**sendgrid_request(events))
    assert accepted.status_code == 200, accepted.text
    again = await gateway.post(**sendgrid_request(events))
    assert again.json()["status"] == "duplicate"
    assert await _stored(database_url, events) == len(events)


@SLOW
@given(value=st.text(max_size=200) | JSON.map(lambda data: orjson.dumps(data).decode()))
async def test_any_signed_mandrill_form_gets_a_4xx_or_a_200_never_a_5xx(
    gateway: httpx.AsyncClient, value: str
) -> None:
    response = await gateway.post(**mandrill_signed(value))
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert response.json()["error"] == "invalid_payload"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=30), st.text(max_size=60)), max_size=8))
def test_a_mandrill_form_is_read_as_parse_qsl_reads_it(fields: list[tuple[str, str]]) -> None:
    # Decoded in C (bench: 8 MiB of escapes 1.2 s -> 0.05 s of the loop): what it reads
    # is what the standard library reads, so the signature is over the same values.
    body = urlencode(fields).encode()
    expected = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    assert mandrill_form(body) == expected == fields


async def test_a_form_of_more_fields_than_mandrill_posts_is_refused_unread(
    gateway: httpx.AsyncClient,
) -> None:
    # An outside check: 2.8 million empty fields, unsigned, held the event loop 2.8 s
    # while they were parsed and sorted to check a signature they did not have.
    response = await gateway.post(
        "/webhooks/mandrill",
        content=b"a=&" * MANDRILL_MAX_FIELDS + b"mandrill_events=%5B%5D",
        headers={"content-type": "application/x-www-form-urlencoded", "X-Mandrill-Signature": "A"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_payload"
    assert f"at most {MANDRILL_MAX_FIELDS} form fields" in response.json()["reason"]


async def test_a_bad_mandrill_event_is_rejected_alone_and_a_non_event_refuses_the_batch(
    gateway: httpx.AsyncClient,
) -> None:
    for ts in ("soon", False):
        response = await gateway.post(**mandrill_request([{"event": "open", "ts": ts}]))
        assert response.status_code == 200, response.text
        (event,) = response.json()["events"]
        assert (event["status"], event["field"]) == ("rejected", "mandrill_events.0.ts")
    refused = await gateway.post(**mandrill_request(["not an event"]))  # type: ignore[list-item]
    assert refused.status_code == 422
    assert refused.json()["field"] == "mandrill_events.0"


async def _stored(database_url: str, events: list[dict[str, Any]]) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.event_id.in_([e["sg_event_id"] for e in events]))
            )
            return int(count or 0)
    finally:
        await engine.dispose()


async def test_a_nul_character_rejects_its_event_and_the_rest_is_stored(
    gateway: httpx.AsyncClient,
) -> None:
    """A NUL escaped into an event's string (a custom argument, a link, an id) cannot be
    stored in PostgreSQL's text: it failed the whole batch with a 500, so the ESP retried
    it for days and the batch's unsubscribes were never applied. It is that event's bad
    field, as any other; a NUL in the event id refuses the batch (no id to answer by)."""
    email, _ = await subscribed(gateway)
    other, _ = await subscribed(gateway)
    batch = [
        sendgrid_event(email, "open", send_id="spring\x00"),
        sendgrid_event(email, "click", url="https://shop.example/p\x00"),
        sendgrid_event(email, "unsubscribe"),
    ]
    response = await gateway.post(**sendgrid_request(batch))
    assert response.status_code == 200, response.text
    answers = response.json()["events"]
    assert [(a["status"], a.get("field")) for a in answers] == [
        ("rejected", "0.send_id"),
        ("rejected", "1.url"),
        ("processed", None),
    ]
    assert (await profile(gateway, email))["suppressed"] is True
    refused = await gateway.post(
        **sendgrid_request([sendgrid_event(email, "open", sg_event_id="a\x00")])
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "0.sg_event_id"
    message = mandrill_event(other, "open")
    message["msg"]["metadata"] = {"send_id": "s\x00"}
    response = await gateway.post(**mandrill_request([message, mandrill_event(other, "unsub")]))
    assert response.status_code == 200, response.text
    answers = response.json()["events"]
    assert [(a["status"], a.get("field")) for a in answers] == [
        ("rejected", "mandrill_events.0.msg.metadata.send_id"),
        ("processed", None),
    ]
    assert (await profile(gateway, other))["suppressed"] is True


# What orjson refuses whole and JSON's grammar allows: a lone surrogate, escaped (as the
# stdlib's ``json.dumps`` writes it; orjson writes none). Unicode has no such character.
LONE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
NOT_UNICODE = "text that is not valid Unicode (an unpaired surrogate escape)"


# Python's reader (for a lone surrogate) stops at its recursion limit, orjson at 1,024.
@pytest.mark.parametrize(("escape", "depth"), [(b"\\u0000", 1000), (b"\\ud800", 800)])
def test_text_no_database_stores_is_found_deep(escape: bytes, depth: int) -> None:
    """Walked with a stack: a NUL 1,000 levels deep overflowed Python's recursion (a 500)."""
    deep = b"[" * depth + b'"' + escape + b'"' + b"]" * depth
    event = b'{"email": "a@example.com", "timestamp": 1, "event": "open", "sg_event_id": "e"'
    (item,) = parse_sendgrid(b"[" + event + b', "deep": ' + deep + b"}]")
    assert isinstance(item, SkippedEvent)
    assert item.field == "0.deep" + ".0" * depth


def test_a_wide_list_deep_down_is_walked_in_little_memory() -> None:
    """The walk for text no database stores made every child's path up front: for a
    0.6 MB event with 300,000 numbers 900 levels down, 610 MB and 1.6 s of the loop."""
    wide = b"[" * 900 + b",".join([b"0"] * 300_000) + b"]" * 900
    event = b'{"email": "a@example.com", "timestamp": 1, "event": "open", "sg_event_id": "e"'
    tracemalloc.start()
    try:
        (item,) = parse_sendgrid(b"[" + event + b', "x": ' + wide + b', "y": "\\u0000"}]')
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(item, SkippedEvent)
    assert item.field == "0.y"
    assert peak < 100 * 2**20  # the parsed body itself is ~10 MB of Python objects


@SLOW
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=6),
    text=st.text(st.characters(exclude_characters="\x00"), max_size=8),  # a NUL: its reason
    surrogate=LONE,
    data=st.data(),
)
async def test_a_lone_surrogate_anywhere_rejects_its_event_alone(
    gateway: httpx.AsyncClient,
    database_url: str,
    kinds: list[str],
    text: str,
    surrogate: str,
    data: st.DataObject,
) -> None:
    """In any field of any event (or one of its keys), whatever its type: that event is
    rejected naming the field, the rest stored; in its id, the batch is refused (422:
    there is no id to answer it by), as for an event without one."""
    email = f"lone.{uuid.uuid4().hex[:12]}@example.com"
    assert "errors" not in await gql(gateway, UPSERT, email=email)
    events = [sendgrid_event(email, k, url="https://x/p", send_id="s-1") for k in kinds]
    position = data.draw(st.integers(0, len(events) - 1))
    others = events[:position] + events[position + 1 :]
    bad = events[position]
    name = data.draw(st.sampled_from([*sorted(bad), None]))  # None: a key of its own
    cut = data.draw(st.integers(0, len(text)))
    spoiled = text[:cut] + surrogate + text[cut:]
    if name is None:
        bad[spoiled], field = "x", str(position)
    else:
        bad[name], field = spoiled, f"{position}.{name}"
    response = await gateway.post(**sendgrid_signed(json.dumps(events).encode()))
    if name == "sg_event_id":
        assert response.status_code == 422, response.text
        assert response.json()["reason"] == f"{field}: {NOT_UNICODE}"
        assert await _stored(database_url, others) == 0
        return
    assert response.status_code == 200, response.text
    answer = response.json()["events"][position]
    assert answer["status"] == "rejected"
    assert (answer["field"], answer["reason"]) == (field, f"{field}: {NOT_UNICODE}")
    assert await _stored(database_url, others) == len(others)
    assert [a["status"] for a in response.json()["events"]].count("processed") == len(others)

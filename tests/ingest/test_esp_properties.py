"""Properties of the ESP webhooks over generated payloads: any signed body gets an answer
(200 or a 4xx naming its reason, never a 5xx); a batch refused for one bad event stores
none of it, and the same batch without that event stores each event exactly once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.db.engine import create_engine
from gateway.db.models import Event
from gateway.ingest.esp_payloads import parse_sendgrid
from gateway.ingest.webhook_payloads import PayloadError
from gateway.profiles.contact_points import normalize_email
from tests.gql_client import gql
from tests.ingest.test_esp_webhooks import UPSERT
from tests.ingest.webhook_requests import (
    mandrill_request,
    mandrill_signed,
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
# Ways to break one event, each a clear 4xx: (what to do, the field it names).
BREAKAGES = [
    ("drop", "sg_event_id"),
    ("drop", "email"),
    ("drop", "timestamp"),
    ("drop", "event"),
    ("set", ("email", "no-at-sign")),
    ("set", ("timestamp", "yesterday")),
    ("set", ("timestamp", -5)),
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
    assert [event.recipient for event in parse_sendgrid(body)] == [stored]


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
async def test_a_batch_with_one_bad_event_stores_nothing_and_without_it_everything_once(
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
    refused = await gateway.post(**sendgrid_request(batch))
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == f"{position}.{field}"
    assert email not in refused.text  # the reason never echoes the address
    assert await _stored(database_url, events) == 0
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


async def test_a_mandrill_form_without_its_field_is_a_4xx(gateway: httpx.AsyncClient) -> None:
    request = mandrill_request([{"event": "open", "ts": "soon"}])
    response = await gateway.post(**request)
    assert response.status_code == 422
    assert response.json()["field"] == "mandrill_events.0.ts"


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

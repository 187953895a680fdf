"""ESP engagement webhooks (SendGrid, Mailchimp Transactional) as a customer's profile
shows them: opens and clicks in ``engagement``, an unsubscribe suppressing at once with
its source, a hard bounce marking the address; and what is refused or left unstored.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import unique_email
from tests.gql_client import gql
from tests.ingest.webhook_requests import (
    mandrill_event,
    mandrill_request,
    row_counts,
    sendgrid_event,
    sendgrid_request,
)

UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id } }"
GRANT = (
    "mutation($id: ID!, $purpose: ConsentPurpose!) "
    '{ setConsent(customerId: $id, purpose: $purpose, granted: true, source: "signup") '
    "{ recordedAt } }"
)
PROFILE = (
    "query($email: String!) { customer(email: $email) { id suppressed "
    "consent { emailMarketing } consents { purpose granted source recordedAt } "
    "engagement { emailOpens30d emailClicks30d lastEmailOpenAt } "
    'attributes(name: "email_status") { value source } } }'
)


async def subscribed(gateway: httpx.AsyncClient) -> tuple[str, str]:
    """A stored customer who agreed to email marketing and personalisation."""
    email = unique_email("esp")
    body = await gql(gateway, UPSERT, email=email)
    customer_id = body["data"]["upsertCustomer"]["id"]
    for purpose in ("EMAIL_MARKETING", "PERSONALISATION"):
        assert "errors" not in await gql(gateway, GRANT, id=customer_id, purpose=purpose)
    return email, customer_id


async def profile(gateway: httpx.AsyncClient, email: str) -> dict[str, Any]:
    body = await gql(gateway, PROFILE, email=email)
    assert "errors" not in body, body
    customer: dict[str, Any] = body["data"]["customer"]
    return customer


async def test_sendgrid_events_reach_the_profile(gateway: httpx.AsyncClient) -> None:
    email, _ = await subscribed(gateway)
    opened_at = int(time.time()) - 60
    events = [
        sendgrid_event(email, "delivered"),
        sendgrid_event(email.upper(), "open", timestamp=opened_at),
        sendgrid_event(email, "open", timestamp=opened_at - 3600),
        sendgrid_event(email, "click", url="https://shop.example/p/1?utm=x", campaign="c-7"),
        sendgrid_event(email, "open", timestamp=int(time.time()) - 40 * 86400),  # too old
    ]
    response = await gateway.post(**sendgrid_request(events))
    assert response.status_code == 200, response.text
    assert [e["status"] for e in response.json()["events"]] == ["processed"] * 5
    found = await profile(gateway, email)
    assert found["engagement"]["emailOpens30d"] == 2
    assert found["engagement"]["emailClicks30d"] == 1
    assert _moment(found["engagement"]["lastEmailOpenAt"]) == opened_at
    assert found["suppressed"] is False  # engagement is not a withdrawal


async def test_a_sendgrid_unsubscribe_suppresses_at_once_with_its_source(
    gateway: httpx.AsyncClient,
) -> None:
    email, _ = await subscribed(gateway)
    assert (await profile(gateway, email))["suppressed"] is False  # cached now
    event = sendgrid_event(email, "group_unsubscribe", asm_group_id=42)
    response = await gateway.post(**sendgrid_request([event]))
    assert response.status_code == 200, response.text
    found = await profile(gateway, email)
    assert found["suppressed"] is True
    assert found["consent"]["emailMarketing"] is False
    statement = next(c for c in found["consents"] if c["purpose"] == "EMAIL_MARKETING")
    assert statement["source"] == "sendgrid:group_unsubscribe"
    assert _moment(statement["recordedAt"]) >= event["timestamp"]


async def test_an_unsubscribe_delivered_late_counts_at_its_own_time(
    gateway: httpx.AsyncClient,
) -> None:
    """A retried delivery carries the event's old time, and the withdrawal is recorded at
    that time: it outranks a statement made before the person unsubscribed, and not
    an opt-in made after (tests/privacy/consent/test_esp_statement_times.py)."""
    email, _ = await subscribed(gateway)
    granted_at = time.time()
    late = sendgrid_event(email, "unsubscribe", timestamp=int(granted_at) - 3600)
    assert (await gateway.post(**sendgrid_request([late]))).status_code == 200
    found = await profile(gateway, email)
    assert found["suppressed"] is False  # the opt-in came after the unsubscribe
    later = sendgrid_event(email, "unsubscribe", timestamp=int(granted_at) + 2)
    assert (await gateway.post(**sendgrid_request([later]))).status_code == 200
    found = await profile(gateway, email)
    assert found["suppressed"] is True
    statement = next(c for c in found["consents"] if c["purpose"] == "EMAIL_MARKETING")
    assert _moment(statement["recordedAt"]) <= time.time()  # never in the future


async def test_a_spam_report_and_a_hard_bounce(gateway: httpx.AsyncClient) -> None:
    reported, _ = await subscribed(gateway)
    bounced, _ = await subscribed(gateway)
    blocked, _ = await subscribed(gateway)
    events = [
        sendgrid_event(reported, "spamreport"),
        sendgrid_event(bounced, "bounce", type="bounce", reason="550 5.1.1 unknown user"),
        sendgrid_event(blocked, "bounce", type="blocked", reason="421 try later"),
    ]
    assert (await gateway.post(**sendgrid_request(events))).status_code == 200
    assert (await profile(gateway, reported))["suppressed"] is True
    hard = await profile(gateway, bounced)
    assert hard["attributes"] == [{"value": "undeliverable", "source": "sendgrid"}]
    assert hard["suppressed"] is False  # undeliverable is not a withdrawal of consent
    assert (await profile(gateway, blocked))["attributes"] == []


async def test_events_for_unknown_addresses_are_accepted_and_store_nothing(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    before = await row_counts(database_url)
    stranger = unique_email("stranger")
    events = [sendgrid_event(stranger, "open"), sendgrid_event(stranger, "unsubscribe")]
    response = await gateway.post(**sendgrid_request(events))
    assert response.status_code == 200, response.text
    assert [e["status"] for e in response.json()["events"]] == ["ignored", "ignored"]
    assert await row_counts(database_url) == before
    assert (await gql(gateway, PROFILE, email=stranger))["data"]["customer"] is None


async def test_a_replayed_batch_is_stored_once(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    email, _ = await subscribed(gateway)
    events = [
        sendgrid_event(email, "open"),
        sendgrid_event(email, "click", url="https://x.example"),
    ]
    first = await gateway.post(**sendgrid_request(events))
    after_first = await row_counts(database_url)
    again = await gateway.post(**sendgrid_request(events))  # re-signed now, same events
    assert first.status_code == again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert {e["customerId"] for e in again.json()["events"]} == {None}
    assert await row_counts(database_url) == after_first
    engagement = (await profile(gateway, email))["engagement"]
    assert (engagement["emailOpens30d"], engagement["emailClicks30d"]) == (1, 1)


async def test_a_copy_inside_one_batch_is_a_duplicate(gateway: httpx.AsyncClient) -> None:
    email, _ = await subscribed(gateway)
    opened = sendgrid_event(email, "open")
    response = await gateway.post(
        **sendgrid_request([opened, sendgrid_event(email, "click"), opened])
    )
    assert [e["status"] for e in response.json()["events"]] == [
        "processed",
        "processed",
        "duplicate",
    ]
    assert (await profile(gateway, email))["engagement"]["emailOpens30d"] == 1


async def test_sendgrid_refusals_name_their_reason_and_write_nothing(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    email, _ = await subscribed(gateway)
    before = await row_counts(database_url)
    good = sendgrid_request([sendgrid_event(email, "unsubscribe")])
    tampered = dict(good, content=good["content"].replace(b"unsubscribe", b"open\x20\x20\x20\x20"))
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "invalid_signature": [
            tampered,
            sendgrid_request([sendgrid_event(email, "unsubscribe")], key=stranger_key),
            dict(good, headers={**good["headers"], "X-Twilio-Email-Event-Webhook-Signature": "x"}),
        ],
        "stale_timestamp": [
            sendgrid_request(
                [sendgrid_event(email, "unsubscribe")], timestamp=int(time.time()) - 3600
            )
        ],
        "missing_timestamp": [
            dict(good, headers={"X-Twilio-Email-Event-Webhook-Signature": "x"}),
            # "²" (latin-1 0xB2) passes str.isdigit, and int() refused it: a 500.
            dict(
                good, headers={**good["headers"], "X-Twilio-Email-Event-Webhook-Timestamp": b"\xb2"}
            ),
        ],
    }
    for code, requests in cases.items():
        for request in requests:
            response = await gateway.post(**request)
            assert response.status_code == 401, (code, response.text)
            assert response.json()["error"] == code
            assert response.json()["reason"]
    assert await row_counts(database_url) == before
    assert (await profile(gateway, email))["suppressed"] is False


async def test_bad_sendgrid_bodies_get_a_4xx_naming_the_field(gateway: httpx.AsyncClient) -> None:
    email, _ = await subscribed(gateway)
    no_id = sendgrid_event(email, "open")
    del no_id["sg_event_id"]
    cases = [
        ([sendgrid_event(email, "open"), no_id], 422, "1.sg_event_id"),
        ([sendgrid_event(email, "open"), "not an event"], 422, "1"),
        ({"event": "open"}, 422, None),
        ([], 422, None),
    ]
    for payload, status, field in cases:
        response = await gateway.post(**sendgrid_request(payload))  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        assert response.json()["error"] == "invalid_payload"
        assert response.json().get("field") == field
        assert email not in response.text
    # The valid first event of the refused batch was not stored either.
    assert (await profile(gateway, email))["engagement"]["emailOpens30d"] == 0


async def test_an_event_with_a_bad_field_is_rejected_alone_and_the_unsubscribe_kept(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    """An address no customer can have, or an over-long optional field, would fail every
    retry of the batch: it is answered ``rejected`` and the rest of the batch is stored."""
    email, _ = await subscribed(gateway)
    other, _ = await subscribed(gateway)
    # Not one address a customer can have (a display name or a domain's trailing dot
    # names one, tests/ingest/test_esp_addresses.py).
    addresses = ["bob@localhost", "x@[10.0.0.1]", "x@example.com..", "A <a@b.co>, B <b@b.co>"]
    batch = [
        *(sendgrid_event(address, "unsubscribe") for address in addresses),
        sendgrid_event(email, "click", url="https://shop.example/" + "p" * 8200),
        sendgrid_event(email, "bounce", type="x" * 33),
        sendgrid_event(email, "unsubscribe"),
    ]
    before = await row_counts(database_url)
    response = await gateway.post(**sendgrid_request(batch))
    assert response.status_code == 200, response.text
    answers = response.json()["events"]
    assert [a["status"] for a in answers] == ["rejected"] * 6 + ["processed"]
    assert [a["field"] for a in answers[:6]] == [
        *(f"{n}.email" for n in range(4)),
        "4.url",
        "5.type",
    ]
    assert all(a["reason"] for a in answers[:6])
    assert [a["eventId"] for a in answers] == [e["sg_event_id"] for e in batch]
    assert not any(address in response.text for address in addresses)
    assert (await row_counts(database_url))["events"] == before["events"] + 1
    assert (await profile(gateway, email))["suppressed"] is True
    mandrill = [
        mandrill_event("bob@localhost", "unsub"),
        mandrill_event(other, "click", url="https://shop.example/" + "p" * 8200),
        mandrill_event(other, "unsub"),
    ]
    response = await gateway.post(**mandrill_request(mandrill))
    assert response.status_code == 200, response.text
    answers = response.json()["events"]
    assert [(a["status"], a.get("field")) for a in answers] == [
        ("rejected", "mandrill_events.0.msg.email"),
        ("rejected", "mandrill_events.1.url"),
        ("processed", None),
    ]
    assert (await profile(gateway, other))["suppressed"] is True


async def test_an_oversized_batch_is_refused(gateway: httpx.AsyncClient) -> None:
    email, _ = await subscribed(gateway)
    # Past the ESPs' own limit (GATEWAY_ESP_WEBHOOK_MAX_BODY_BYTES, 8 MiB by default).
    events = [sendgrid_event(email, "open", padding="x" * 8000) for _ in range(1100)]
    response = await gateway.post(**sendgrid_request(events))
    assert response.status_code == 413
    assert "BODY_TOO_LARGE" in response.text


async def test_mandrill_checks_the_url_with_head_and_get(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.head("/webhooks/mandrill")).status_code == 200
    assert (await gateway.get("/webhooks/mandrill")).status_code == 200
    assert (await gateway.get("/webhooks/sendgrid")).status_code == 405


async def test_mandrill_events_reach_the_profile(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    email, _ = await subscribed(gateway)
    bounced, _ = await subscribed(gateway)
    events = [
        mandrill_event(email, "send"),
        mandrill_event(email, "open"),
        mandrill_event(email, "click", url="https://shop.example/p/2"),
        mandrill_event(bounced, "hard_bounce"),
        {"type": "blacklist", "action": "add", "event": "blacklist", "ts": int(time.time())},
    ]
    response = await gateway.post(**mandrill_request(events))
    assert response.status_code == 200, response.text
    assert [e["status"] for e in response.json()["events"]] == ["processed"] * 4
    found = await profile(gateway, email)
    assert (found["engagement"]["emailOpens30d"], found["engagement"]["emailClicks30d"]) == (1, 1)
    assert (await profile(gateway, bounced))["attributes"] == [
        {"value": "undeliverable", "source": "mandrill"}
    ]
    counted = await row_counts(database_url)
    replay = await gateway.post(**mandrill_request(events))
    assert replay.json()["status"] == "duplicate"
    assert await row_counts(database_url) == counted
    unsub = await gateway.post(**mandrill_request([mandrill_event(email, "unsub")]))
    assert unsub.status_code == 200
    found = await profile(gateway, email)
    assert found["suppressed"] is True
    assert {c["source"] for c in found["consents"] if c["purpose"] == "EMAIL_MARKETING"} == {
        "mandrill:unsub"
    }


async def test_an_old_mandrill_open_is_ignored_and_an_old_unsubscribe_counts_at_its_time(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    """Mandrill signs no time: a captured body replayed after retention deleted its rows
    would count its opens again, so past 7 days they are ignored. An unsubscribe of any
    age is kept (dropping a real late one mails someone who asked not to be), at its own
    time: it loses to an opt-in made since, and suppresses a customer who made none."""
    email, _ = await subscribed(gateway)
    before = await row_counts(database_url)
    eight_days_ago = int(time.time()) - 8 * 86400
    replayed = mandrill_event(email, "open", ts=eight_days_ago)
    response = await gateway.post(**mandrill_request([replayed]))
    assert response.status_code == 200, response.text
    (answer,) = response.json()["events"]
    assert (answer["status"], answer["field"]) == ("ignored", "mandrill_events.0.ts")
    assert answer["reason"]
    assert await row_counts(database_url) == before
    for days in (8, 6):  # a replay past the bound, and a late delivery within it
        late = mandrill_event(email, "unsub", ts=int(time.time()) - days * 86400)
        response = await gateway.post(**mandrill_request([late]))
        assert response.json()["events"][0]["status"] == "processed"
        # Recorded at its own time, days ago: the opt-in made since outranks it.
        assert (await profile(gateway, email))["suppressed"] is False
    assert (await row_counts(database_url))["events"] == before["events"] + 2
    # A customer with no opt-in since: the old unsubscribe is their statement.
    quiet = unique_email("esp")
    assert "errors" not in await gql(gateway, UPSERT, email=quiet)
    old = mandrill_event(quiet, "unsub", ts=eight_days_ago)
    response = await gateway.post(**mandrill_request([old]))
    assert response.json()["events"][0]["status"] == "processed"
    found = await profile(gateway, quiet)
    assert found["suppressed"] is True
    assert [
        (c["granted"], c["source"]) for c in found["consents"] if c["purpose"] == "EMAIL_MARKETING"
    ] == [(False, "mandrill:unsub")]


async def test_mandrill_refusals(gateway: httpx.AsyncClient, database_url: str) -> None:
    email, _ = await subscribed(gateway)
    before = await row_counts(database_url)
    good = mandrill_request([mandrill_event(email, "spam")])
    tampered = dict(good, content=good["content"].replace(b"spam", b"open"))
    signed_elsewhere = mandrill_request([mandrill_event(email, "spam")], base="https://other")
    for request in (tampered, signed_elsewhere):
        response = await gateway.post(**request)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_signature"
    no_field = mandrill_request([])
    no_field["content"] = b"other=1"
    response = await gateway.post(**no_field)
    assert response.status_code == 401  # the signature covers the parameters: checked first
    assert await row_counts(database_url) == before
    assert (await profile(gateway, email))["suppressed"] is False


async def test_an_erased_persons_events_are_not_stored(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    email, customer_id = await subscribed(gateway)
    forget = "mutation($id: ID!) { forgetCustomer(id: $id) { customerId } }"
    assert "errors" not in await gql(gateway, forget, id=customer_id)
    before = await row_counts(database_url)
    response = await gateway.post(**sendgrid_request([sendgrid_event(email, "open")]))
    assert response.status_code == 200
    assert response.json()["events"][0]["status"] == "erased"
    assert await row_counts(database_url) == before
    assert (await gql(gateway, PROFILE, email=email))["data"]["customer"] is None


def _moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

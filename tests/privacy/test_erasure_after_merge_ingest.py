"""Erasure after a merge, as the ingest paths meet it: webhooks answer erased, an import
skips every identifier (even one the linker calls a placeholder), and anonymous events
naming the person go with them and stay out. (The finding: test_erasure_after_merge.)
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from gateway.db.models import Customer, Event
from tests.conftest import (
    unique_email,
    unique_number,
)
from tests.gql_client import gql
from tests.ingest.webhook_requests import (
    hubspot_change,
    hubspot_request,
    segment_request,
    shopify_request,
)
from tests.privacy.merged_people import (
    BASE,
    FORGET,
    count_rows,
    import_as_shop,
    merged_person,
    stored_events,
    upsert,
)


async def test_after_merge_and_forget_webhooks_answer_erased(
    gw: httpx.AsyncClient, database_url: str
) -> None:
    person = await merged_person(gw)
    assert "errors" not in await gql(gw, FORGET, id=person.merged)
    customers, events = (
        await count_rows(database_url, Customer),
        await count_rows(database_url, Event),
    )
    new_id = int(unique_number())
    replies = {
        "shopify, new id, merged-in e-mail": shopify_request(
            {"id": new_id, "email": person.email_b, "first_name": "Back"}, "customers/create"
        ),
        "hubspot, new id, phone": hubspot_request(
            [hubspot_change(new_id, "phone", person.phone_a)], BASE
        ),
        "segment, new user, merged-in phone": segment_request(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": f"usr_{uuid.uuid4().hex}",
                "traits": {"phone": person.phone_b},
            }
        ),
    }
    for what, request in replies.items():
        response = await gw.post(**request)
        assert response.status_code == 200, (what, response.text)
        assert [e["status"] for e in response.json()["events"]] == ["erased"], (what, response.text)
    assert await count_rows(database_url, Customer) == customers
    assert await count_rows(database_url, Event) == events


async def test_after_merge_and_forget_an_import_skips_every_identifier(
    gw: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    person = await merged_person(gw)
    assert "errors" not in await gql(gw, FORGET, id=person.merged)
    path = tmp_path / "shop.csv"
    path.write_text(
        "external_id,email,phone\n"
        f"{unique_number()},{person.email_a},\n"
        f"{unique_number()},{unique_email()},{person.phone_b}\n"
        f"{person.shopify_id},{unique_email()},\n"
    )
    summary = await import_as_shop(gw, database_url, path)
    assert (summary.read, summary.erased, summary.created, summary.rejected) == (3, 3, 0, [])


async def test_an_erased_address_the_linker_calls_a_placeholder_still_refuses_records(
    gw: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    # Found by an attacker: "email@…" and "…@mailinator.com" never link records, so the
    # webhook and import paths did not check them against the tombstones, and a Segment
    # identify carrying an erased such address created the person again, names and all.
    address = f"email@{uuid.uuid4().hex[:12]}-shop.com"
    upserted = await upsert(gw, email=address, firstName="Ada", lastName="Lovelace")
    assert "errors" not in await gql(gw, FORGET, id=upserted["data"]["upsertCustomer"]["id"])
    customers = await count_rows(database_url, Customer)
    response = await gw.post(
        **segment_request(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": f"usr_{uuid.uuid4().hex}",
                "traits": {"email": address.upper(), "first_name": "Ada", "last_name": "L"},
            }
        )
    )
    assert response.status_code == 200, response.text
    assert [e["status"] for e in response.json()["events"]] == ["erased"], response.text
    path = tmp_path / "shop.csv"
    path.write_text(f"external_id,email,first_name\n{unique_number()}, {address} ,Ada\n")
    summary = await import_as_shop(gw, database_url, path)
    assert (summary.erased, summary.created) == (1, 0)
    assert await count_rows(database_url, Customer) == customers


async def test_unlinked_events_naming_the_person_go_with_them_and_stay_out(
    gw: httpx.AsyncClient, database_url: str
) -> None:
    person = await merged_person(gw)
    device = f"anon-{uuid.uuid4().hex}"
    stored: dict[str, dict[str, Any]] = {
        # Anonymous, naming the merged-in e-mail in context.traits.
        "traits": {
            "type": "track",
            "event": "Product Viewed",
            "messageId": str(uuid.uuid4()),
            "anonymousId": f"anon-{uuid.uuid4().hex}",
            "context": {"traits": {"email": person.email_b}},
        },
        # Identified: ties the device to the person.
        "identified": {
            "type": "track",
            "event": "Signed In",
            "messageId": str(uuid.uuid4()),
            "userId": person.segment_id,
            "anonymousId": device,
        },
        # Anonymous, from that device only.
        "device": {
            "type": "track",
            "event": "Cart Viewed",
            "messageId": str(uuid.uuid4()),
            "anonymousId": device,
        },
        # Anonymous, phone in traits.
        "phone": {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "anonymousId": f"anon-{uuid.uuid4().hex}",
            "traits": {"phone": person.phone_a},
        },
    }
    for what, event in stored.items():
        response = await gw.post(**segment_request(event))
        assert response.json()["events"][0]["status"] == "processed", (what, response.text)
    ids = [event["messageId"] for event in stored.values()]
    assert await stored_events(database_url, ids) == len(ids)
    # A subject access request shows them too.
    exported = await gql(gw, "query($id: ID!) { exportCustomer(id: $id) }", id=person.merged)
    unlinked = exported["data"]["exportCustomer"]["unlinked_events"]
    named = [stored[k]["messageId"] for k in ("traits", "device", "phone")]
    assert sorted(e["event_id"] for e in unlinked) == sorted(named), exported

    forgotten = await gql(gw, FORGET, id=person.merged)
    assert forgotten["data"]["forgetCustomer"]["events"] == len(ids)
    assert await stored_events(database_url, ids) == 0

    later: dict[str, dict[str, Any]] = {
        "traits e-mail": {"traits": {"email": person.email_a.upper()}},
        "properties e-mail": {"properties": {"email": person.email_b}},
        "device": {"anonymousId": device},
        "phone": {"context": {"traits": {"phone": person.phone_b}}},
    }
    for what, extra in later.items():
        event = {
            "type": "track",
            "event": "Page Viewed",
            "messageId": str(uuid.uuid4()),
            "anonymousId": f"anon-{uuid.uuid4().hex}",
            **extra,
        }
        response = await gw.post(**segment_request(event))
        assert response.json()["events"][0]["status"] == "erased", (what, response.text)
        assert await stored_events(database_url, [event["messageId"]]) == 0, what
    # Someone else's anonymous activity is still kept.
    other: dict[str, Any] = {
        "type": "track",
        "event": "Page Viewed",
        "messageId": str(uuid.uuid4()),
    }
    other |= {"anonymousId": "anon-other", "traits": {"email": unique_email()}}
    assert (await gw.post(**segment_request(other))).json()["events"][0]["status"] == "processed"

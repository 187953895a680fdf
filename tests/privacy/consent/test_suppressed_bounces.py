"""A hard bounce for an address no customer has yet is kept as the withdrawals are
(gateway/privacy/suppressions.py): whoever takes the address on later (created with it,
an email change, an import, an unmerge splitting them off with it) comes up
undeliverable, with the bounce's source and time; a blocked bounce (temporary) is not
kept."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.ingest.importer import import_file
from gateway.privacy.tombstones import Tombstones
from gateway.settings import load_settings
from tests.conftest import unique_email
from tests.gql_client import gql
from tests.identity.test_merge_api import MERGE, UNMERGE
from tests.ingest.webhook_requests import (
    external_id,
    mandrill_event,
    mandrill_request,
    sendgrid_event,
    sendgrid_request,
)
from tests.privacy.consent.esp_people import customer_answer, shopify_customer

UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id } }"
STATUS = (
    "query($email: String!) { customer(email: $email) { id "
    'attributes(name: "email_status") { value source observedAt } } }'
)
SUPPRESSED = (
    "query($email: String!) { customer(email: $email) { id suppressed "
    "consents { purpose granted source } } }"
)


async def status(gw: httpx.AsyncClient, email: str) -> dict[str, Any]:
    found = await customer_answer(gw, STATUS, email)
    assert found is not None, f"no customer has {email}"
    return found


def undeliverable(found: dict[str, Any], source: str) -> bool:
    latest = found["attributes"][0] if found["attributes"] else None
    return latest is not None and (latest["value"], latest["source"]) == ("undeliverable", source)


async def bounced_stranger(gw: httpx.AsyncClient, **fields: Any) -> tuple[str, int]:
    """An address nobody has, hard-bounced through SendGrid: acknowledged, no event kept."""
    email = unique_email("bounced")
    stamp = int(time.time()) - 120
    event = sendgrid_event(email, "bounce", type="bounce", timestamp=stamp, **fields)
    response = await gw.post(**sendgrid_request([event]))
    assert response.status_code == 200, response.text
    assert [e["status"] for e in response.json()["events"]] == ["ignored"]
    assert (await gql(gw, STATUS, email=email))["data"]["customer"] is None  # no one made
    return email, stamp


async def test_a_customer_created_after_their_hard_bounce_is_undeliverable(
    gw: httpx.AsyncClient,
) -> None:
    email, stamp = await bounced_stranger(gw)
    created = await gql(gw, UPSERT, email=email.upper())  # the address as another writes it
    assert "errors" not in created, created
    found = await status(gw, email)
    assert undeliverable(found, "sendgrid"), found
    # At the bounce's own time (whole seconds; the end of its second at the latest).
    observed = found["attributes"][0]["observedAt"]
    assert stamp <= datetime.fromisoformat(observed).timestamp() < stamp + 1


async def test_a_stored_customer_taking_on_a_bounced_address_is_undeliverable(
    gw: httpx.AsyncClient,
) -> None:
    old, shop_id = unique_email("before-bounce"), external_id()
    await shopify_customer(gw, {"id": shop_id, "email": old}, "customers/create")
    assert (await status(gw, old))["attributes"] == []

    new = unique_email("bounced")
    response = await gw.post(**mandrill_request([mandrill_event(new, "hard_bounce")]))
    assert response.status_code == 200, response.text
    assert [e["status"] for e in response.json()["events"]] == ["ignored"]
    await shopify_customer(gw, {"id": shop_id, "email": new}, "customers/update")
    found = await status(gw, new)
    assert undeliverable(found, "mandrill"), found

    # The address seen again adds nothing: the bounce is observed once.
    await shopify_customer(
        gw, {"id": shop_id, "email": new, "first_name": "Cy"}, "customers/update"
    )
    assert len((await status(gw, new))["attributes"]) == 1


async def test_an_imported_customer_with_a_bounced_address_is_undeliverable(
    gw: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    bounced, _ = await bounced_stranger(gw)
    other = unique_email("deliverable")
    path = tmp_path / "people.csv"
    path.write_text(f"external_id,email\n{external_id()},{bounced}\n{external_id()},{other}\n")
    engine = create_engine(database_url)
    try:
        tombstones = Tombstones.from_settings(load_settings(database_url=database_url))
        summary = await import_file(
            create_sessionmaker(engine), path, "crm-import", tombstones=tombstones
        )
    finally:
        await engine.dispose()
    assert summary.created == 2
    assert undeliverable(await status(gw, bounced), "sendgrid")
    assert (await status(gw, other))["attributes"] == []  # only the address that bounced


async def test_a_blocked_bounce_is_not_kept(gw: httpx.AsyncClient) -> None:
    """SendGrid's "blocked" is a temporary refusal, not a hard bounce."""
    email = unique_email("blocked")
    event = sendgrid_event(email, "bounce", type="blocked")
    assert (await gw.post(**sendgrid_request([event]))).status_code == 200
    assert "errors" not in await gql(gw, UPSERT, email=email)
    assert (await status(gw, email))["attributes"] == []


async def test_an_unmerge_splitting_off_a_bounced_address_makes_it_undeliverable(
    gw: httpx.AsyncClient,
) -> None:
    """The bounce was observed for the customer who took the address on (source
    sendgrid), and a merge moved it to the survivor; an unmerge hands the split-off
    customer its own source's values only, so without the suppressions it came up
    deliverable at the address that bounced."""
    bounced, _ = await bounced_stranger(gw)
    kept, kept_id, split_id = unique_email("survivor"), external_id(), external_id()
    await shopify_customer(gw, {"id": kept_id, "email": kept}, "customers/create")
    await shopify_customer(gw, {"id": split_id, "email": bounced}, "customers/create")
    survivor, other = (await status(gw, kept))["id"], (await status(gw, bounced))["id"]
    merged = await gql(gw, MERGE, into=survivor, reason="same person?", **{"from": other})
    assert "errors" not in merged, merged

    split = await gql(gw, UNMERGE, source="shopify", externalId=str(split_id))
    assert "errors" not in split, split
    assert split["data"]["unmergeCustomer"]["email"] == bounced
    found = await status(gw, bounced)
    assert found["id"] == split["data"]["unmergeCustomer"]["id"]
    assert undeliverable(found, "sendgrid"), found


async def test_an_unmerge_splitting_off_an_unsubscribed_address_suppresses_it(
    gw: httpx.AsyncClient,
) -> None:
    """The withdrawal kept for the address reached a customer the API created with it (a
    statement naming no identity, made before the shop's identity joined): an unmerge
    leaves such a statement with the survivor, so the split-off customer, at the address
    that unsubscribed, was mailable."""
    email = unique_email("unsubscribed")
    response = await gw.post(**sendgrid_request([sendgrid_event(email, "unsubscribe")]))
    assert [e["status"] for e in response.json()["events"]] == ["ignored"]
    created = await gql(gw, UPSERT, email=email)
    assert "errors" not in created, created
    split_id = external_id()
    await shopify_customer(gw, {"id": split_id, "email": email}, "customers/create")
    other = (await status(gw, email))["id"]
    assert other == created["data"]["upsertCustomer"]["id"]  # linked by the address
    kept, kept_id = unique_email("survivor"), external_id()
    await shopify_customer(gw, {"id": kept_id, "email": kept}, "customers/create")
    survivor = (await status(gw, kept))["id"]
    merged = await gql(gw, MERGE, into=survivor, reason="same person?", **{"from": other})
    assert "errors" not in merged, merged

    split = await gql(gw, UNMERGE, source="shopify", externalId=str(split_id))
    assert "errors" not in split, split
    answer = await gql(gw, SUPPRESSED, email=email)
    found = answer["data"]["customer"]
    assert found["id"] == split["data"]["unmergeCustomer"]["id"]
    assert found["suppressed"] is True, found
    assert found["consents"] == [
        {"purpose": "EMAIL_MARKETING", "granted": False, "source": "sendgrid:unsubscribe"}
    ]

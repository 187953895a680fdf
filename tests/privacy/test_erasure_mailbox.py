"""An erased person's mailbox refuses them however it is spelt: the linker reads
``jane.doe@gmail.com``, ``janedoe+news@gmail.com`` and ``Jane.Doe@googlemail.com`` as
one mailbox and joins their records, so a tombstone of the exact address alone let the
person be created again under another spelling (an outside check: upsertCustomer, a
Shopify and a Segment webhook each brought them back).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from gateway.db.models import Customer
from tests.conftest import unique_number
from tests.gql_client import error_codes, gql
from tests.ingest.webhook_requests import segment_request, shopify_request
from tests.privacy.merged_people import FORGET, count_rows, import_as_shop, upsert


def _mailbox() -> tuple[str, str]:
    """A fresh Gmail mailbox's parts: ``jane.<tag>`` and ``doe``."""
    return f"jane.{uuid.uuid4().hex[:10]}", "doe"


async def test_an_erased_mailbox_refuses_every_spelling_of_it(
    gw: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    first, last = _mailbox()
    dotted = f"{first}.{last}@gmail.com"
    folded = f"{first.replace('.', '')}{last}@gmail.com"
    created = await upsert(gw, email=dotted, firstName="Jane", lastName="Doe")
    assert "errors" not in created, created
    assert "errors" not in await gql(gw, FORGET, id=created["data"]["upsertCustomer"]["id"])
    customers = await count_rows(database_url, Customer)

    for spelling in (
        folded,
        f"{first}.{last}+promo@gmail.com",
        f"{first.title()}.{last.title()}@GoogleMail.com",
    ):
        again = await upsert(gw, email=spelling, firstName="Jane")
        assert [code for code, _ in error_codes(again)] == ["ERASED"], (spelling, again)

    webhooks = {
        "shopify": shopify_request(
            {"id": int(unique_number()), "email": f"{folded[:-10]}+x@gmail.com"},
            "customers/create",
        ),
        "segment": segment_request(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": f"usr_{uuid.uuid4().hex}",
                "traits": {"email": f"{first}.{last}+y@googlemail.com", "first_name": "Jane"},
            }
        ),
    }
    for what, request in webhooks.items():
        response = await gw.post(**request)
        assert response.status_code == 200, (what, response.text)
        assert [e["status"] for e in response.json()["events"]] == ["erased"], (what, response.text)

    path = tmp_path / "shop.csv"
    path.write_text(f"external_id,email,first_name\n{unique_number()},{folded},Jane\n")
    summary = await import_as_shop(gw, database_url, path)
    assert (summary.erased, summary.created) == (1, 0)
    assert await count_rows(database_url, Customer) == customers


async def test_a_mailbox_another_customer_still_holds_stays_theirs(
    gw: httpx.AsyncClient, database_url: str
) -> None:
    # Two customers under one mailbox (a steward kept them apart, or they came apart in
    # an unmerge): erasing one must not lock the other out of their own address.
    first, last = _mailbox()
    erased_id = int(unique_number())
    kept_id = int(unique_number())
    erased = f"{first}.{last}@gmail.com"
    kept = f"{first.replace('.', '')}{last}+kept@gmail.com"
    ids = {}
    for shop_id, email in ((erased_id, erased), (kept_id, kept)):
        response = await gw.post(
            **shopify_request({"id": shop_id, "email": email}, "customers/create")
        )
        assert response.status_code == 200, response.text
        ids[email] = response.json()["events"][0]["customerId"]
    if ids[erased] == ids[kept]:  # the linker joined them (as it should): split them
        split = await gql(
            gw,
            'mutation($id: String!) { unmergeCustomer(source: "shopify", externalId: $id) { id } }',
            id=str(kept_id),
        )
        assert "errors" not in split, split
        ids[kept] = split["data"]["unmergeCustomer"]["id"]
    assert ids[erased] != ids[kept]

    assert "errors" not in await gql(gw, FORGET, id=ids[erased])
    update = await gw.post(
        **shopify_request({"id": kept_id, "email": kept, "first_name": "Still"}, "customers/update")
    )
    assert update.status_code == 200, update.text
    assert [e["status"] for e in update.json()["events"]] == ["processed"], update.text


async def test_erasing_a_mailbox_spelt_as_its_key_leaves_another_customers_spelling_theirs(
    gw: httpx.AsyncClient,
) -> None:
    # A fresh review: the mailbox tombstone was the exact address's digest of the key's
    # spelling, so erasing bob@gmail.com (already its key) refused the records of another
    # customer holding b.o.b+work@gmail.com, although that mailbox was left theirs.
    tag = uuid.uuid4().hex[:10]
    canonical = f"bob{tag}@gmail.com"
    shop_id = int(unique_number())
    erased = await upsert(gw, email=canonical)
    kept = await upsert(
        gw,
        email=f"bob.{tag}+work@gmail.com",
        identities=[{"source": "shopify", "externalId": str(shop_id)}],
    )
    ids = [erased["data"]["upsertCustomer"]["id"], kept["data"]["upsertCustomer"]["id"]]
    assert ids[0] != ids[1], (erased, kept)
    assert "errors" not in await gql(gw, FORGET, id=ids[0])
    update = await gw.post(
        **shopify_request(
            {"id": shop_id, "email": f"bob.{tag}+work@gmail.com", "first_name": "Bo"},
            "customers/update",
        )
    )
    assert [e["status"] for e in update.json()["events"]] == ["processed"], update.text


async def test_an_anonymous_event_naming_an_erased_mailbox_otherwise_spelt_is_not_kept(
    gw: httpx.AsyncClient,
) -> None:
    first, last = _mailbox()
    created = await upsert(gw, email=f"{first}.{last}@gmail.com")
    assert "errors" not in await gql(gw, FORGET, id=created["data"]["upsertCustomer"]["id"])
    anonymous = await gw.post(
        **segment_request(
            {
                "type": "track",
                "event": "Viewed",
                "messageId": str(uuid.uuid4()),
                "anonymousId": f"anon-{uuid.uuid4().hex}",
                "properties": {"email": f"{first.replace('.', '')}{last}+y@gmail.com"},
            }
        )
    )
    assert [e["status"] for e in anonymous.json()["events"]] == ["erased"], anonymous.text

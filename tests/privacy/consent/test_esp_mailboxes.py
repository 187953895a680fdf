"""An ESP's statement for an address written the way its provider ignores (a Gmail
address's dots and plus tag, googlemail.com) is the mailbox's, and so the person's
the identity linker keys by it (``IdentityConfig.dotless_email_domains``,
``plus_tag_email_domains``): an unsubscribe from ``jane.doe+news@gmail.com`` withdraws
the consent of the customer whose source records say ``janedoe@gmail.com``, and a hard
bounce marks them undeliverable. The address matched exactly first: a key shared by
several customers names none of them, but a withdrawal or a bounce from it still reaches
every customer whose address now is that mailbox, however written: any of them mailed,
the mail lands where the person said no."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.gql_client import gql
from tests.ingest.webhook_requests import (
    external_id,
    mandrill_event,
    mandrill_request,
    sendgrid_event,
    sendgrid_request,
    shopify_request,
)

PROFILE = (
    "query($email: String!) { customer(email: $email) { id suppressed "
    "consents { purpose granted source } "
    'attributes(name: "email_status") { value source } } }'
)
UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id } }"
OPT_IN = (
    "mutation($id: ID!) { setConsent(customerId: $id, purpose: EMAIL_MARKETING, "
    'granted: true, source: "signup-form") { recordedAt } }'
)


async def opted_in_shopper(gw: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """A customer from a source record (Shopify), opted in to email marketing."""
    response = await gw.post(
        **shopify_request({"id": external_id(), "email": email}, topic="customers/create")
    )
    assert response.status_code == 200, response.text
    created = (await gql(gw, PROFILE, email=email))["data"]["customer"]
    assert "errors" not in await gql(gw, OPT_IN, id=created["id"])
    found: dict[str, Any] = (await gql(gw, PROFILE, email=email))["data"]["customer"]
    assert found["suppressed"] is False, found
    return found


async def _withdrawn_by_sendgrid(gw: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """The profile at ``email``, after asserting SendGrid's unsubscribe suppressed it."""
    found: dict[str, Any] = (await gql(gw, PROFILE, email=email))["data"]["customer"]
    assert found["suppressed"] is True, found
    statements = [c for c in found["consents"] if c["purpose"] == "EMAIL_MARKETING"]
    assert statements[0]["source"] == "sendgrid:unsubscribe", found
    return found


async def test_an_unsubscribe_from_a_gmail_variant_withdraws_the_mailbox_owner(
    gw: httpx.AsyncClient,
) -> None:
    name = uuid.uuid4().hex[:10]
    plain = f"{name}@gmail.com"
    customer = await opted_in_shopper(gw, plain)
    # A second after the opt-in: the ESP's times are whole seconds (a tie would do too).
    mailed = f"{name[:4]}.{name[4:]}+news@googlemail.com"
    event = sendgrid_event(mailed, "unsubscribe", timestamp=int(time.time()) + 1)
    response = await gw.post(**sendgrid_request([event]))
    assert response.status_code == 200, response.text
    assert response.json()["events"][0]["customerId"] == customer["id"], response.text
    await _withdrawn_by_sendgrid(gw, plain)


async def test_an_unsubscribe_from_a_gmail_variant_reaches_a_customer_made_by_address(
    gw: httpx.AsyncClient,
) -> None:
    """A customer the API created by address alone has no source records to key: their
    own address, the mailbox written plainly, names them."""
    name = uuid.uuid4().hex[:10]
    plain = f"{name}@gmail.com"
    created = (await gql(gw, UPSERT, email=plain))["data"]["upsertCustomer"]
    assert "errors" not in await gql(gw, OPT_IN, id=created["id"])
    assert (await gql(gw, PROFILE, email=plain))["data"]["customer"]["suppressed"] is False
    mailed = f"{name[:4]}.{name[4:]}+news@gmail.com"
    event = sendgrid_event(mailed, "unsubscribe", timestamp=int(time.time()) + 1)
    response = await gw.post(**sendgrid_request([event]))
    assert response.json()["events"][0]["customerId"] == created["id"], response.text
    assert (await gql(gw, PROFILE, email=plain))["data"]["customer"]["suppressed"] is True


async def test_a_hard_bounce_for_a_gmail_variant_marks_the_mailbox_owner(
    gw: httpx.AsyncClient,
) -> None:
    name = uuid.uuid4().hex[:10]
    plain = f"{name}@gmail.com"
    await opted_in_shopper(gw, plain)
    response = await gw.post(
        **mandrill_request([mandrill_event(f"{name.upper()}+x@gmail.com", "hard_bounce")])
    )
    assert response.status_code == 200, response.text
    found = (await gql(gw, PROFILE, email=plain))["data"]["customer"]
    assert found["attributes"][0] == {"value": "undeliverable", "source": "mandrill"}, found


async def test_a_variant_keyed_by_two_customers_names_neither_and_suppresses_both(
    gw: httpx.AsyncClient,
) -> None:
    """Two customers whose records fold to one key (the second's Shopify record changed
    its address to a dotted form of the first's: its identity stays theirs): the
    variant is neither's for sure, and the unsubscribe withdraws both."""
    name = uuid.uuid4().hex[:10]
    first = await opted_in_shopper(gw, f"{name}@gmail.com")
    other, shop_id = f"other.{name}@example.org", external_id()
    await gw.post(**shopify_request({"id": shop_id, "email": other}, topic="customers/create"))
    second = (await gql(gw, PROFILE, email=other))["data"]["customer"]
    dotted = f"{name[:5]}.{name[5:]}@gmail.com"
    await gw.post(**shopify_request({"id": shop_id, "email": dotted}, topic="customers/update"))
    assert (await gql(gw, PROFILE, email=dotted))["data"]["customer"]["id"] == second["id"]
    assert second["id"] != first["id"]
    assert "errors" not in await gql(gw, OPT_IN, id=second["id"])
    event = sendgrid_event(f"{name}+promo@gmail.com", "unsubscribe", timestamp=_later())
    response = await gw.post(**sendgrid_request([event]))
    assert response.json()["events"][0]["status"] == "ignored", response.text
    for held in (f"{name}@gmail.com", dotted):
        await _withdrawn_by_sendgrid(gw, held)


def _later() -> int:
    """A second after now: the ESP's times are whole seconds, an opt-in's are not."""
    return int(time.time()) + 1


async def test_a_mailbox_two_customers_hold_is_withdrawn_for_both(
    gw: httpx.AsyncClient,
) -> None:
    """One created through the API with a dotted Gmail address (no source record keys
    it), one from the shop with the plain one: an unsubscribe from a third spelling
    withdraws both, and a hard bounce of the mailbox takes both out of the audience.
    Before, only the plain spelling's holder was found and withdrawn."""
    name = uuid.uuid4().hex[:10]
    plain, dotted = f"{name}@gmail.com", f"{name[:3]}.{name[3:]}@gmail.com"
    shopper = await opted_in_shopper(gw, plain)
    created = (await gql(gw, UPSERT, email=dotted))["data"]["upsertCustomer"]
    assert "errors" not in await gql(gw, OPT_IN, id=created["id"])
    assert created["id"] != shopper["id"]
    mailed = f"{name[:6]}.{name[6:]}+news@googlemail.com"
    event = sendgrid_event(mailed, "unsubscribe", timestamp=_later())
    response = await gw.post(**sendgrid_request([event]))
    assert response.json()["events"][0]["status"] == "ignored", response.text
    for held in (plain, dotted):
        await _withdrawn_by_sendgrid(gw, held)
    response = await gw.post(**mandrill_request([mandrill_event(mailed, "hard_bounce")]))
    assert response.status_code == 200, response.text
    for held in (plain, dotted):
        found = (await gql(gw, PROFILE, email=held))["data"]["customer"]
        assert found["attributes"][0]["value"] == "undeliverable", found


async def test_an_unsubscribe_from_a_replaced_address_reaches_the_cached_profile(
    gw: httpx.AsyncClient,
) -> None:
    """The ESP still mails the address the person had: their unsubscribe from it is
    theirs, and the profile cached under their address now must not say otherwise."""
    old, shop_id = f"old.{uuid.uuid4().hex[:10]}@example.org", external_id()
    new = f"new.{uuid.uuid4().hex[:10]}@example.org"
    response = await gw.post(
        **shopify_request({"id": shop_id, "email": old}, topic="customers/create")
    )
    assert response.status_code == 200, response.text
    response = await gw.post(
        **shopify_request({"id": shop_id, "email": new}, topic="customers/update")
    )
    assert response.status_code == 200, response.text
    customer = (await gql(gw, PROFILE, email=new))["data"]["customer"]
    assert "errors" not in await gql(gw, OPT_IN, id=customer["id"])
    assert (await gql(gw, PROFILE, email=new))["data"]["customer"]["suppressed"] is False
    event = sendgrid_event(old, "unsubscribe", timestamp=int(time.time()) + 1)
    response = await gw.post(**sendgrid_request([event]))
    assert response.json()["events"][0]["customerId"] == customer["id"], response.text
    found = (await gql(gw, PROFILE, email=new))["data"]["customer"]
    assert found["suppressed"] is True, found


async def test_a_kept_unsubscribe_from_a_variant_reaches_whoever_takes_the_mailbox(
    gw: httpx.AsyncClient,
) -> None:
    """Kept for an address nobody had (gateway/privacy/suppressions.py), it reaches the
    stored customer whose record later carries the mailbox written plainly."""
    name = uuid.uuid4().hex[:10]
    old, shop_id = f"before.{name}@example.org", external_id()
    response = await gw.post(
        **shopify_request({"id": shop_id, "email": old}, topic="customers/create")
    )
    assert response.status_code == 200, response.text
    customer = (await gql(gw, PROFILE, email=old))["data"]["customer"]
    assert "errors" not in await gql(gw, OPT_IN, id=customer["id"])
    mailed = f"{name[:3]}.{name[3:]}+offers@gmail.com"
    event = sendgrid_event(mailed, "unsubscribe", timestamp=int(time.time()) + 1)
    response = await gw.post(**sendgrid_request([event]))
    assert response.json()["events"][0]["status"] == "ignored", response.text  # nobody's yet
    plain = f"{name}@gmail.com"
    response = await gw.post(
        **shopify_request({"id": shop_id, "email": plain}, topic="customers/update")
    )
    assert response.status_code == 200, response.text
    found = await _withdrawn_by_sendgrid(gw, plain)
    assert found["id"] == customer["id"]


async def test_an_address_observed_for_two_customers_is_not_keyed_to_a_third(
    gw: httpx.AsyncClient,
) -> None:
    """Observed for two customers (each had it, then another), the address names none
    of them, nor the one whose record has only its matching key."""
    name = uuid.uuid4().hex[:10]
    shared = f"{name}@gmail.com"
    owners = []
    for _ in range(2):
        shop_id = external_id()
        await gw.post(**shopify_request({"id": shop_id, "email": shared}, topic="customers/create"))
        moved = f"moved.{uuid.uuid4().hex[:10]}@example.org"
        await gw.post(**shopify_request({"id": shop_id, "email": moved}, topic="customers/update"))
        owners.append((await gql(gw, PROFILE, email=moved))["data"]["customer"]["id"])
    variant = f"{name[:4]}.{name[4:]}@gmail.com"
    await gw.post(
        **shopify_request({"id": external_id(), "email": variant}, topic="customers/create")
    )
    third = (await gql(gw, PROFILE, email=variant))["data"]["customer"]["id"]
    assert len({*owners, third}) == 3, (owners, third)
    response = await gw.post(**sendgrid_request([sendgrid_event(shared, "unsubscribe")]))
    assert response.json()["events"][0]["status"] == "ignored", response.text


async def test_an_unsubscribe_naming_one_holder_reaches_the_other(
    gw: httpx.AsyncClient,
) -> None:
    """The address one customer holds exactly names them; the customer holding the same
    mailbox dotted (created through the API) is withdrawn too."""
    name = uuid.uuid4().hex[:10]
    plain, dotted = f"{name}@gmail.com", f"{name[:2]}.{name[2:]}@gmail.com"
    shopper = await opted_in_shopper(gw, plain)
    created = (await gql(gw, UPSERT, email=dotted))["data"]["upsertCustomer"]
    assert "errors" not in await gql(gw, OPT_IN, id=created["id"])
    event = sendgrid_event(plain, "unsubscribe", timestamp=_later())
    response = await gw.post(**sendgrid_request([event]))
    assert response.json()["events"][0]["customerId"] == shopper["id"], response.text
    for held in (plain, dotted):
        await _withdrawn_by_sendgrid(gw, held)

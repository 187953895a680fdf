"""A hard bounce is a fact about the address that bounced, not about the person: a
customer who moves to another address (a Shopify webhook here: every writer giving a
customer an address goes through the same suppressions) is in the send audience again
there, and out of it again back at the bounced address; a bounce of the address they
left, delivered late, leaves the new one mailable; a merge that keeps the survivor's
address leaves them mailable; whoever takes on a customer's bounced address is not.
Over any order of moves and bounces: out of the audience exactly when the address
they have now has hard-bounced."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import unique_email
from tests.gql_client import gql
from tests.identity.test_merge_api import MERGE
from tests.ingest.webhook_requests import (
    external_id,
    mandrill_event,
    mandrill_request,
    sendgrid_event,
    sendgrid_request,
)
from tests.privacy.consent.esp_people import customer_answer, shopify_customer

SAVE = """mutation($name: String!, $filter: SegmentFilter!) {
  saveSegment(name: $name, filter: $filter) { name }
}"""
AUDIENCE = """query($name: String!) {
  segment(name: $name) { customers(first: 50) { nodes { email } } }
}"""
OPT_IN = (
    "mutation($id: ID!) { setConsent(customerId: $id, purpose: EMAIL_MARKETING, "
    'granted: true, source: "preference-centre") { recordedAt } }'
)
UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id } }"
ID = "query($email: String!) { customer(email: $email) { id email } }"


async def shop_customer(gw: httpx.AsyncClient, email: str) -> tuple[str, int]:
    """A customer the shop created with ``email`` two hours ago (every move after it is
    newer), opted in to email marketing: their id and their shop id."""
    shop_id = external_id()
    created = datetime.fromtimestamp(time.time() - 7200, UTC).isoformat()
    payload = {"id": shop_id, "email": email, "updated_at": created}
    await shopify_customer(gw, payload, "customers/create")
    customer = (await customer_answer(gw, ID, email))["id"]
    await opt_in(gw, customer)
    return customer, shop_id


async def opt_in(gw: httpx.AsyncClient, customer: str) -> None:
    answer = await gql(gw, OPT_IN, id=customer)
    assert "errors" not in answer, answer


async def move(gw: httpx.AsyncClient, shop_id: int, email: str, at: float) -> None:
    """The shop says the customer's address is now ``email`` (as of ``at``)."""
    updated = datetime.fromtimestamp(at, UTC).isoformat()
    payload = {"id": shop_id, "email": email, "updated_at": updated}
    await shopify_customer(gw, payload, "customers/update")


async def bounce(gw: httpx.AsyncClient, email: str, at: float) -> str:
    """SendGrid reports a hard bounce of ``email`` that happened at ``at``: its status."""
    event = sendgrid_event(email, "bounce", type="bounce", timestamp=int(at))
    response = await gw.post(**sendgrid_request([event]))
    assert response.status_code == 200, response.text
    (answer,) = response.json()["events"]
    status: str = answer["status"]
    return status


async def audience_of(gw: httpx.AsyncClient, emails: list[str]) -> str:
    """A saved segment of the customers at these addresses, left to leave out whoever may
    not be mailed (the default of a send's audience); its name."""
    name = f"bounces {uuid.uuid4().hex[:10]}"
    saved = await gql(gw, SAVE, name=name, filter={"all": [{"field": "email", "in": emails}]})
    assert "errors" not in saved, saved
    return name


async def members(gw: httpx.AsyncClient, name: str) -> set[str]:
    body = await gql(gw, AUDIENCE, name=name)
    assert "errors" not in body, body
    return {node["email"] for node in body["data"]["segment"]["customers"]["nodes"]}


async def test_a_customer_who_leaves_a_bounced_address_is_mailed_at_the_new_one(
    gw: httpx.AsyncClient,
) -> None:
    bounced, new = unique_email("bounced"), unique_email("new")
    now = time.time()
    _, shop_id = await shop_customer(gw, bounced)
    audience = await audience_of(gw, [bounced, new])
    assert await members(gw, audience) == {bounced}
    assert await bounce(gw, bounced, now - 300) == "processed"
    assert await members(gw, audience) == set()

    await move(gw, shop_id, new, now - 200)
    assert await members(gw, audience) == {new}

    await move(gw, shop_id, bounced, now - 100)  # back at the address that bounced
    assert await members(gw, audience) == set()


async def test_a_late_bounce_of_the_address_left_does_not_suppress_the_new_one(
    gw: httpx.AsyncClient,
) -> None:
    old, new = unique_email("old"), unique_email("new")
    now = time.time()
    _, shop_id = await shop_customer(gw, old)
    audience = await audience_of(gw, [old, new])
    await move(gw, shop_id, new, now - 200)
    # Delivered after the move: one sent before it, one the ESP still sent to the old
    # address after it. Both are theirs (the address was observed for them) and stored.
    assert await bounce(gw, old, now - 300) == "processed"
    assert await bounce(gw, old, now - 100) == "processed"
    assert await members(gw, audience) == {new}

    await move(gw, shop_id, old, now - 50)
    assert await members(gw, audience) == set()


async def test_a_bounce_of_the_mailbox_written_another_way_suppresses_the_address(
    gw: httpx.AsyncClient,
) -> None:
    """``ada.lovelace+news@gmail.com`` is ``adalovelace@gmail.com``'s mailbox: its hard
    bounce says that address cannot receive either."""
    local = f"ada{uuid.uuid4().hex[:10]}"
    held, other = f"{local}@gmail.com", unique_email("other")
    now = time.time()
    _, shop_id = await shop_customer(gw, held)
    audience = await audience_of(gw, [held, other])
    response = await gw.post(
        **mandrill_request(
            [mandrill_event(f"{local[:3]}.{local[3:]}+news@gmail.com", "hard_bounce")]
        )
    )
    assert [e["status"] for e in response.json()["events"]] == ["processed"]
    assert await members(gw, audience) == set()
    await move(gw, shop_id, other, now - 10)
    assert await members(gw, audience) == {other}


async def test_a_merge_keeping_the_survivors_address_leaves_them_mailable(
    gw: httpx.AsyncClient,
) -> None:
    kept, merged_away = unique_email("kept"), unique_email("merged")
    survivor, _ = await shop_customer(gw, kept)
    other, _ = await shop_customer(gw, merged_away)
    assert await bounce(gw, merged_away, time.time() - 60) == "processed"
    audience = await audience_of(gw, [kept, merged_away])
    assert await members(gw, audience) == {kept}

    merged = await gql(gw, MERGE, into=survivor, reason="same person", **{"from": other})
    assert "errors" not in merged, merged
    assert merged["data"]["mergeCustomers"]["email"] == kept
    assert await members(gw, audience) == {kept}


async def test_whoever_takes_on_a_customers_bounced_address_is_undeliverable(
    gw: httpx.AsyncClient,
) -> None:
    """The bounce was stored for the customer who had the address; they moved on, and
    the address went to a customer created with it (the API, by address alone)."""
    bounced, new = unique_email("bounced"), unique_email("new")
    _, shop_id = await shop_customer(gw, bounced)
    assert await bounce(gw, bounced, time.time() - 300) == "processed"
    await move(gw, shop_id, new, time.time() - 200)
    created = await gql(gw, UPSERT, email=bounced)
    assert "errors" not in created, created
    await opt_in(gw, created["data"]["upsertCustomer"]["id"])
    audience = await audience_of(gw, [bounced, new])
    assert await members(gw, audience) == {new}


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("move"), st.integers(0, 2)),
        st.tuples(st.just("bounce"), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=_STEPS, ages=st.lists(st.integers(0, 3000), min_size=6, max_size=6))
async def test_out_of_the_audience_exactly_while_the_address_has_bounced(
    gw: httpx.AsyncClient, steps: list[tuple[str, int]], ages: list[int]
) -> None:
    """Moves among three addresses and hard bounces of any of them (held now, left, or
    never held yet), each bounce dated anywhere in the last hour whatever the order it
    arrives in: after each step the customer is in the audience exactly when the
    address they have now has never bounced."""
    addresses = [unique_email(f"a{n}") for n in range(3)]
    start = time.time() - 3600
    _, shop_id = await shop_customer(gw, addresses[0])
    audience = await audience_of(gw, addresses)
    current, bounced = addresses[0], set[str]()
    for n, (kind, index) in enumerate(steps):
        address = addresses[index]
        if kind == "move":
            await move(gw, shop_id, address, start + 10 * (n + 1))
            current = address
        else:
            await bounce(gw, address, start + ages[n])
            bounced.add(address)
        expected = set() if current in bounced else {current}
        assert await members(gw, audience) == expected, (steps[: n + 1], ages)

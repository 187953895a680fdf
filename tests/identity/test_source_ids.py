"""Upstream ids at every entry point, and the attack that read other customers' orders.

A write key created a customer with the Shopify identity ``..``; its ``orders`` became
``GET /admin/api/…/customers/../orders.json``, i.e. ``/orders.json``: 50 orders of other
customers. Now every way in (upsert, lookups by identity, the profile URL, unmerge,
webhooks, import, sync) refuses an id its upstream cannot have, naming the source and
what its ids look like; and a customer stored with such an id before (a database from
before the check) gets an error on its own fields, never someone else's data.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert

from adapters.registry import aclose_adapters, build_adapters
from demo.people.orders import orders_for
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Customer, Identity
from gateway.identity.source_ids import SourceIds
from gateway.ingest.importer import import_file
from gateway.ingest.sync import sync
from tests.conftest import FAST, SAMPLE_SIZE, GatewayFactory, unique_email, unique_number
from tests.gql_client import error_codes, gql
from tests.ingest.webhook_requests import SECRETS, hubspot_change, hubspot_request, segment_request

# Ids that change a route when put into a path unencoded, or that encodings and
# look-alikes turn into one; none is a Shopify or HubSpot id.
ATTACKS = (
    *("..", ".", "%2e%2e", "%2E%2E", "%252e%252e", "a/../..", "../..", "..%2f..", "..\\.."),
    *("7300000000013/../..", "7300000000013?status=any", "7300000000013#x", "\uff0e\uff0e"),
    *(" 7300000000013x", "7300000000013\x00", "\u200b7", "\uff11\uff12\uff13", "-1", "1e3", "0"),
    # Another spelling of a real id: the upstream reads it as that customer's.
    *("07300000000013", "051000007", "00"),
)
UPSERT = (
    "mutation($input: CustomerInput!) { upsertCustomer(input: $input) "
    "{ id identities { source externalId } } }"
)
BY_EMAIL = "query($e: String!) { customer(email: $e) { id } }"
ORDERS = "query($ids: [ID!]) { customers(ids: $ids) { id orders(first: 50) { name } } }"
EVENTS = "query($e: String!) { customer(email: $e) { recentEvents(first: 50) { type } } }"


def _message(body: dict[str, Any]) -> str:
    return " ".join(error["message"] for error in body.get("errors", []))


@pytest.mark.parametrize("source", ["shopify", "hubspot"])
async def test_upsert_refuses_an_id_its_upstream_cannot_have(
    federated: httpx.AsyncClient, source: str
) -> None:
    for value in ATTACKS:
        email = unique_email("attacker")
        identities = [{"source": source, "externalId": value}]
        if "\x00" in value:  # no text may hold NUL: refused with the request, before the id
            variables = {"input": {"email": email, "identities": identities}}
            refused = await federated.post(
                "/graphql", json={"query": UPSERT, "variables": variables}
            )
            assert "data" not in refused.json(), (value, refused.text)
            assert "NUL" in refused.text, (value, refused.text)
            continue
        body = await gql(federated, UPSERT, input={"email": email, "identities": identities})
        assert error_codes(body) == [("BAD_USER_INPUT", ["upsertCustomer"])], (value, body)
        error = body["errors"][0]
        assert error["extensions"]["field"] == "identities.0.external_id"
        # Names the source and what its ids look like; never echoes the id.
        looks_like = {"shopify": "Shopify customer ids: a number", "hubspot": "HubSpot contact"}
        assert f"{source} ids are" in error["message"]
        assert looks_like[source] in error["message"]
        assert (await gql(federated, BY_EMAIL, e=email))["data"]["customer"] is None


async def test_lookups_by_identity_refuse_them_too(federated: httpx.AsyncClient) -> None:
    by_identity = await gql(
        federated, "query($i: String!) { customer(identity: $i) { id } }", i="shopify:.."
    )
    assert error_codes(by_identity) == [("BAD_USER_INPUT", ["customer"])]
    assert "shopify ids are Shopify customer ids" in _message(by_identity)

    unmerge = await gql(
        federated,
        'mutation { unmergeCustomer(source: "hubspot", externalId: "../..") { id } }',
    )
    assert error_codes(unmerge) == [("BAD_USER_INPUT", ["unmergeCustomer"])]
    assert unmerge["errors"][0]["extensions"]["field"] == "externalId"

    # (An encoded slash never matches the profile route at all: a plain 404.)
    for path in ("shopify:%2E%2E", "shopify:%252e%252e", "hubspot:a%5C..%5C..", "hubspot:%20"):
        profile = await federated.get(f"/api/v1/users/{path}/profile")
        assert profile.status_code == 400, (path, profile.text)
        assert "ids are" in profile.text


async def test_free_text_ids_are_accepted_and_sent_as_one_segment(
    federated: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    """Segment user ids are any text: kept, and the path carries them encoded, so one
    aimed at another profile's events reaches nobody's."""
    victim = samples.people[7]
    value = f"x/../../user_id:{victim.segment_user_id}"
    email = unique_email("segment")
    identities = [{"source": "segment", "externalId": value}]
    created = await gql(federated, UPSERT, input={"email": email, "identities": identities})
    assert "errors" not in created, created
    assert created["data"]["upsertCustomer"]["identities"] == identities
    samples.segment.calls.reset()
    events = await gql(federated, EVENTS, e=email)
    assert events["data"]["customer"]["recentEvents"] == [], events
    paths = samples.segment.calls.paths()
    assert paths, paths
    assert all("user_id:x%2F..%2F..%2Fuser_id%3Ausr_" in p for p in paths), paths


@contextmanager
def stored_as_before(seeded_url: str, ids: list[str]) -> Iterator[list[str]]:
    """Customers whose Shopify identity is ``ids[i]``, written straight to the database,
    as a database from before the check may hold them; removed afterwards."""
    customers = [uuid.uuid4() for _ in ids]

    async def write(rows: bool) -> None:
        engine = create_engine(seeded_url)
        try:
            async with create_sessionmaker(engine).begin() as session:
                if rows:
                    await session.execute(
                        insert(Customer),
                        [{"id": c, "email": unique_email("stored")} for c in customers],
                    )
                    await session.execute(
                        insert(Identity),
                        [
                            {"customer_id": c, "source": "shopify", "external_id": i}
                            for c, i in zip(customers, ids, strict=True)
                        ],
                    )
                else:
                    await session.execute(delete(Customer).where(Customer.id.in_(customers)))
        finally:
            await engine.dispose()

    asyncio.run(write(True))
    try:
        yield [str(c) for c in customers]
    finally:
        asyncio.run(write(False))


def test_a_customer_stored_with_a_dot_id_never_gets_other_customers_orders(
    gateway: GatewayFactory, samples: SampleUpstreams, seeded_url: str
) -> None:
    person = next(p for p in samples.people if len(orders_for(p)) >= 2)
    with stored_as_before(seeded_url, ["..", "%2e%2e", "a/../..", ".", "\uff17"]) as bad:

        async def read() -> dict[str, Any]:
            async with gateway() as client:
                found = await gql(client, BY_EMAIL, e=person.email)
                good = found["data"]["customer"]["id"]
                samples.shopify.calls.reset()
                return {"good": good, "body": await gql(client, ORDERS, ids=[*bad, good])}

        answer = asyncio.run(read())
    body, good = answer["body"], answer["good"]
    by_id = {c["id"]: c for c in body["data"]["customers"]}
    for customer_id in bad:
        assert by_id[customer_id]["orders"] is None, body  # an error, never orders
    assert sorted(error_codes(body)) == sorted(
        ("INVALID_EXTERNAL_ID", ["customers", position, "orders"]) for position in range(len(bad))
    )
    # The good customer in the same batch still has exactly their own orders.
    expected = [o.name for o in orders_for(person)[:50]]
    assert [o["name"] for o in by_id[good]["orders"]] == expected
    paths = samples.shopify.calls.paths()
    assert paths == [f"GET /admin/api/2024-10/customers/{person.shopify_id}/orders.json"], paths


async def test_webhooks_refuse_an_id_their_source_cannot_have(
    gateway: GatewayFactory,
) -> None:
    async with gateway(webhook_secrets=dict(SECRETS)) as client:
        change = hubspot_change(0, "firstname", "Eve")
        change["objectId"] = "../.."
        refused = await client.post(**hubspot_request([change], base="http://gw"))
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "external_id"
        assert "hubspot ids are HubSpot contact ids" in refused.json()["reason"]

        # Segment's user ids are free text: this one is stored, as one profile's id.
        email = unique_email("segment-hook")
        identify = {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "userId": "../../orders.json",
            "traits": {"email": email},
        }
        accepted = await client.post(**segment_request(identify))
        assert accepted.status_code == 200, accepted.text
        assert [e["status"] for e in accepted.json()["events"]] == ["processed"]
        unsendable = dict(identify, messageId=str(uuid.uuid4()), userId="a\x00b")
        assert (await client.post(**segment_request(unsendable))).status_code == 422


async def test_import_rejects_the_row_naming_the_source(tmp_path: Path, database_url: str) -> None:
    good, email = unique_number(), unique_email("imported")
    path = tmp_path / "shop.csv"
    path.write_text(
        "external_id,email\n"
        f"..,{unique_email('dots')}\n"
        f"a/../..,{unique_email('slashes')}\n"
        f"{good},{email}\n"
    )
    engine = create_engine(database_url)
    try:
        summary = await import_file(
            create_sessionmaker(engine),
            path,
            "shop_eu",  # a configured upstream of kind shopify
            source_ids=SourceIds({"shop_eu": "shopify"}),
        )
    finally:
        await engine.dispose()
    assert [(r.line, r.reason) for r in summary.rejected] == [
        (
            line,
            "external_id: shop_eu ids are Shopify customer ids: a number such as "
            "7300000000013 (for gid://shopify/Customer/7300000000013 give 7300000000013)",
        )
        for line in (2, 3)
    ]
    assert summary.created == 1


async def test_sync_rejects_records_whose_ids_their_upstream_cannot_have(
    samples: SampleUpstreams, tmp_path: Path
) -> None:
    """Records a CRM hands back are checked like any other input: here the SOAP CRM's
    ``C-…`` ids against a configuration saying its ids are HubSpot's (numbers)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    await asyncio.to_thread(upgrade, url)  # runs a loop of its own
    tables = dict.fromkeys(samples.base_urls, FAST) | {"soap_crm": {**FAST, "enabled": True}}
    adapters = build_adapters(sample_upstreams_config(samples.base_urls, tables))
    engine = create_engine(url)
    try:
        (report,) = await sync(
            create_sessionmaker(engine),
            adapters,
            ["soap_crm"],
            source_ids=SourceIds({"soap_crm": "hubspot"}),
        )
    finally:
        await aclose_adapters(adapters)
        await engine.dispose()
    assert report.status == "ok"
    assert report.read == SAMPLE_SIZE
    assert (report.rejected, report.created) == (SAMPLE_SIZE, 0)

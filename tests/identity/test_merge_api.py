"""mergeCustomers / unmergeCustomer and the provenance fields, through GraphQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import Request

from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import Principal, Scope
from gateway.db.engine import create_sessionmaker
from gateway.identity import Resolver, prepare
from gateway.services import Services
from gateway.settings import Settings
from resolvers.graphql.context import Context
from resolvers.graphql.loaders import Loaders
from resolvers.graphql.schema import build_schema
from tests.conftest import FAST, unique_email

SCHEMA = build_schema()

MERGE = """
mutation($into: ID!, $from: ID!, $reason: String!) {
  mergeCustomers(into: $into, from: $from, reason: $reason) {
    id email firstName identities { source externalId }
  }
}"""
UNMERGE = """
mutation($source: String!, $externalId: String!) {
  unmergeCustomer(source: $source, externalId: $externalId) {
    id email identities { source externalId }
  }
}"""
CUSTOMER = "query($id: ID!) { customer(id: $id) { id email identities { source externalId } } }"
PROVENANCE = """
query($id: ID!) {
  provenance: customer(id: $id) {
    attributes { name value source observedAt golden }
    identityLinks { source externalId rule score reason matchedSource createdAt }
  }
}"""


@pytest.fixture
async def services(settings: Settings, samples: SampleUpstreams) -> AsyncIterator[Services]:
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    opened = Services.open(settings, config)
    yield opened
    await opened.aclose()


async def run(services: Services, query: str, **variables: Any) -> dict[str, Any]:
    context = Context(
        request=Request({"type": "http", "method": "POST", "headers": []}),
        response=None,
        services=services,
        loaders=Loaders(services.federation),
        principal=Principal("test", "test", frozenset({Scope.ADMIN}), None),
    )
    result = await SCHEMA.execute(query, variable_values=variables, context_value=context)
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [e.formatted for e in result.errors]
    return body


def codes(body: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    return [
        (e.get("extensions", {}).get("code"), e.get("extensions", {}).get("field"))
        for e in body.get("errors", [])
    ]


async def _customer(services: Services, source: str, **fields: str) -> tuple[str, str]:
    """A new customer with one identity; returns (customer id, external id)."""
    external_id = f"{source[:2].upper()}-{uuid.uuid4().hex[:10]}"
    resolver = Resolver(create_sessionmaker(services.engine))
    decision = await resolver.link_one({"external_id": external_id, **fields}, source)
    assert decision.new_customer
    return str(decision.customer_id), external_id


async def test_merge_then_unmerge_restores_the_separate_profiles(services: Services) -> None:
    email_a, email_b = unique_email("ada"), unique_email("lovelace")
    a, ext_a = await _customer(services, "crm", email=email_a, first_name="Ada")
    b, ext_b = await _customer(services, "shop", email=email_b, first_name="Augusta")

    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person, ticket 42")
    assert "errors" not in merged, merged
    customer = merged["data"]["mergeCustomers"]
    assert customer["id"] == a
    assert {(i["source"], i["externalId"]) for i in customer["identities"]} == {
        ("crm", ext_a),
        ("shop", ext_b),
    }
    gone = await run(services, CUSTOMER, id=b)
    assert gone["data"]["customer"] is None

    evidence = (await run(services, PROVENANCE, id=a))["data"]["provenance"]["identityLinks"]
    manual = [link for link in evidence if link["rule"] == "manual"]
    assert [(m["source"], m["externalId"], m["reason"]) for m in manual] == [
        ("shop", ext_b, "same person, ticket 42")
    ]
    assert manual[0]["matchedSource"] == "crm"
    assert {link["rule"] for link in evidence} == {"new", "manual"}

    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    new = split["data"]["unmergeCustomer"]
    assert new["id"] not in (a, b)
    assert new["email"] == email_b
    assert new["identities"] == [{"source": "shop", "externalId": ext_b}]
    kept = (await run(services, CUSTOMER, id=a))["data"]["customer"]
    assert kept["email"] == email_a
    assert kept["identities"] == [{"source": "crm", "externalId": ext_a}]
    links = (await run(services, PROVENANCE, id=new["id"]))["data"]["provenance"]
    assert links["identityLinks"][-1]["rule"] == "unmerge"


async def test_attributes_show_provenance_and_the_golden_value(services: Services) -> None:
    email_a, email_b = unique_email("grace"), unique_email("hopper")
    a, _ = await _customer(services, "crm", email=email_a, first_name="Grace", city="Arlington")
    b, _ = await _customer(services, "shop", email=email_b, first_name="Grace")
    await run(services, MERGE, into=a, **{"from": b}, reason="duplicate")

    body = await run(services, PROVENANCE, id=a)
    assert "errors" not in body, body
    attributes = body["data"]["provenance"]["attributes"]
    assert {(x["name"], x["value"], x["source"]) for x in attributes} >= {
        ("email", email_a, "crm"),
        ("email", email_b, "shop"),
        ("first_name", "Grace", "crm"),
        ("first_name", "Grace", "shop"),
        ("city", "Arlington", "crm"),
    }
    assert all(x["observedAt"] for x in attributes)
    profile = (await run(services, CUSTOMER, id=a))["data"]["customer"]
    golden_emails = [x for x in attributes if x["name"] == "email" and x["golden"]]
    assert [x["value"] for x in golden_emails] == [profile["email"]]
    assert sum(x["golden"] for x in attributes if x["name"] == "first_name") == 1
    assert not any(x["golden"] for x in attributes if x["name"] == "city")


async def test_errors_carry_codes(services: Services) -> None:
    a, _ = await _customer(services, "crm", email=unique_email("err"))
    unknown = str(uuid.uuid4())
    body = await run(services, MERGE, into=a, **{"from": unknown}, reason="x")
    assert body["data"] is None
    assert codes(body) == [("BAD_USER_INPUT", "from")]
    body = await run(services, MERGE, into="not-an-id", **{"from": a}, reason="x")
    assert codes(body) == [("BAD_USER_INPUT", "into")]
    body = await run(services, MERGE, into=a, **{"from": unknown}, reason="  ")
    assert codes(body) == [("BAD_USER_INPUT", "reason")]
    body = await run(services, UNMERGE, source="crm", externalId="no-such-id")
    assert codes(body) == [("BAD_USER_INPUT", "externalId")]


async def test_merging_past_the_identity_limit_is_a_conflict(services: Services) -> None:
    resolver = Resolver(create_sessionmaker(services.engine))
    owners = []
    for tag, count in (("many", 26), ("more", 25)):
        email = unique_email(tag)
        decisions = await resolver.link(
            [
                prepare(
                    {"external_id": f"{tag}-{i}-{uuid.uuid4().hex[:8]}", "email": email},
                    "bulk",
                    resolver.config,
                )
                for i in range(count)
            ]
        )
        owners.append(str(decisions[0].customer_id))
        assert {str(d.customer_id) for d in decisions} == {owners[-1]}
    body = await run(services, MERGE, into=owners[0], **{"from": owners[1]}, reason="too big")
    assert codes(body) == [("CONFLICT", "from")]


UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id } }"
BY_EMAIL = "query($email: String!) { customer(email: $email) { id email } }"


async def test_a_customer_without_identities_keeps_its_address_and_can_be_unmerged(
    services: Services,
) -> None:
    """A customer the API created by address alone, with a shop customer merged in, is
    still found by its own address, and the shop identity can be split off again."""
    email_a, email_b = unique_email("bare"), unique_email("shopper")
    created = await run(services, UPSERT, email=email_a)
    assert "errors" not in created, created
    a = created["data"]["upsertCustomer"]["id"]
    b, ext_b = await _customer(services, "shop", email=email_b)
    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person")
    assert "errors" not in merged, merged
    assert merged["data"]["mergeCustomers"]["email"] == email_a
    assert (await run(services, BY_EMAIL, email=email_a))["data"]["customer"]["id"] == a

    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    assert "errors" not in split, split
    new = split["data"]["unmergeCustomer"]
    assert new["email"] == email_b
    assert new["identities"] == [{"source": "shop", "externalId": ext_b}]
    kept = (await run(services, CUSTOMER, id=a))["data"]["customer"]
    assert kept == {"id": a, "email": email_a, "identities": []}
    assert (await run(services, BY_EMAIL, email=email_b))["data"]["customer"]["id"] == new["id"]


PHONE_UPSERT = """mutation($email: String!, $phone: String!) {
  upsertCustomer(input: {email: $email, phone: $phone}) { id phone }
}"""
PHONES = "query($id: ID!) { customer(id: $id) { email phone } }"


async def test_values_given_while_merged_stay_with_the_survivor_on_an_unmerge(
    services: Services,
) -> None:
    """Ann, created by address alone, holds Bob's merged-in identity as her only one;
    her own phone and address given through the API then are not Bob's: splitting Bob
    off leaves them with her, and Bob takes only what his identity reported."""
    email_a, email_b = unique_email("own-phone"), unique_email("merged-in")
    a = (await run(services, UPSERT, email=email_a))["data"]["upsertCustomer"]["id"]
    b, ext_b = await _customer(services, "shop", email=email_b, phone="+14155550987")
    merged = await run(services, MERGE, into=a, **{"from": b}, reason="same person")
    assert "errors" not in merged, merged
    given = await run(services, PHONE_UPSERT, email=email_a, phone="+14155550123")
    assert given["data"]["upsertCustomer"]["phone"] == "+14155550123", given
    split = await run(services, UNMERGE, source="shop", externalId=ext_b)
    new = split["data"]["unmergeCustomer"]["id"]
    assert (await run(services, PHONES, id=a))["data"]["customer"] == {
        "email": email_a,
        "phone": "+14155550123",
    }
    assert (await run(services, PHONES, id=new))["data"]["customer"] == {
        "email": email_b,
        "phone": "+14155550987",
    }


async def test_a_lone_identity_never_merged_in_cannot_be_split_off(services: Services) -> None:
    _, ext = await _customer(services, "shop", email=unique_email("alone"))
    split = await run(services, UNMERGE, source="shop", externalId=ext)
    assert codes(split) == [("BAD_USER_INPUT", "externalId")], split

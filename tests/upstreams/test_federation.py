"""One Customer from three upstreams: concurrent, partial on failure, coded errors.

The upstreams are the sample services on loopback; faults are set on them as a
real outage would look to the gateway.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from demo.people.orders import orders_for
from demo.upstreams.runner import SampleUpstreams
from demo.upstreams.shopify.cost import PLANS
from tests.conftest import FAST_DEADLINE_S, GatewayFactory
from tests.gql_client import gql

EVERYTHING = """
query($email: String!) {
  customer(email: $email) {
    email firstName
    lifecycleStage company
    orderCount lastOrderAt lifetimeValue { amount currency } orders(first: 3) { name }
    engagement { sessions30d pageViews30d lastSeenAt } recentEvents(first: 3) { name }
    sources { upstream kind status latencyMs errorCode }
  }
}
"""
COMMERCE_FIELDS = ("orderCount", "lastOrderAt", "lifetimeValue", "orders")


@pytest.fixture
def client(federated: httpx.AsyncClient) -> httpx.AsyncClient:
    return federated


def _sources(customer: dict[str, Any]) -> dict[str, str]:
    return {s["upstream"]: s["status"] for s in customer["sources"]}


async def test_one_query_returns_crm_commerce_and_analytics(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    # Behaviour is served only with personalisation consent (tested in test_privacy).
    person = next(p for p in samples.people[3:] if p.personalisation_consent)
    body = await gql(client, EVERYTHING, email=person.email)
    assert "errors" not in body
    customer = body["data"]["customer"]
    assert customer["lifecycleStage"] == person.lifecycle_stage
    assert customer["company"] == person.company
    assert customer["lifetimeValue"]["currency"] in {"USD", "EUR", "GBP"}
    assert customer["orderCount"] == len(customer["orders"]) or customer["orderCount"] > 3
    assert customer["engagement"]["lastSeenAt"] is not None
    assert _sources(customer) == {"hubspot": "OK", "shopify": "OK", "segment": "OK"}


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"error_rate": 1.0, "error_status": 503}, "UPSTREAM_UNAVAILABLE"),
        ({"hang": True}, "UPSTREAM_TIMEOUT"),
        ({"malformed": True}, "UPSTREAM_BAD_RESPONSE"),
        ({"schema_change": True}, "UPSTREAM_BAD_RESPONSE"),
        ({"rate_limit_next": 100, "retry_after_s": 30}, "UPSTREAM_RATE_LIMITED"),
    ],
)
async def test_a_failing_upstream_nulls_only_its_fields(
    client: httpx.AsyncClient, samples: SampleUpstreams, fault: dict[str, Any], code: str
) -> None:
    person = samples.people[5]
    samples.shopify.faults.update(**fault)
    started = time.monotonic()
    body = await gql(client, EVERYTHING, email=person.email)
    elapsed = time.monotonic() - started

    customer = body["data"]["customer"]
    assert customer["firstName"] == person.first_name  # stored profile
    assert customer["lifecycleStage"] == person.lifecycle_stage  # CRM intact
    assert customer["engagement"] is not None  # analytics intact
    for field in COMMERCE_FIELDS:
        assert customer[field] is None
    errors = {tuple(e["path"]): e["extensions"] for e in body["errors"]}
    assert set(errors) == {("customer", f) for f in COMMERCE_FIELDS}
    assert {e["code"] for e in errors.values()} == {code}
    assert {e["upstream"] for e in errors.values()} == {"shopify"}
    statuses = _sources(customer)
    assert statuses == {"hubspot": "OK", "shopify": "FAILED", "segment": "OK"}
    # The answer comes back within the commerce upstream's own deadline, hang or not.
    assert elapsed < FAST_DEADLINE_S + 1.0


async def test_a_query_calls_only_the_upstreams_it_needs(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    person = samples.people[7]
    body = await gql(
        client,
        "query($email: String!) { customer(email: $email) "
        "{ lifecycleStage sources { upstream status } } }",
        email=person.email,
    )
    assert body["data"]["customer"]["lifecycleStage"] == person.lifecycle_stage
    assert _sources(body["data"]["customer"]) == {
        "hubspot": "OK",
        "shopify": "SKIPPED",
        "segment": "SKIPPED",
    }
    assert samples.shopify.calls.total == 0
    assert samples.segment.calls.total == 0
    assert samples.hubspot.calls.total == 1


async def test_stored_fields_alone_call_no_upstream(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    body = await gql(
        client,
        "query($email: String!) { customer(email: $email) { id email } }",
        email=samples.people[8].email,
    )
    assert body["data"]["customer"]["email"] == samples.people[8].email
    assert (
        samples.hubspot.calls.total + samples.shopify.calls.total + samples.segment.calls.total == 0
    )


async def test_many_fields_of_one_upstream_share_one_fetch(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    person = samples.people[9]
    await gql(
        client,
        "query($email: String!) { customer(email: $email) { lifecycleStage company "
        "city country jobTitle ownerId dateOfBirth } }",
        email=person.email,
    )
    assert samples.hubspot.calls.total == 1


async def test_upstream_calls_run_concurrently(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    # Each upstream answers after 300 ms: one after another the query would need at
    # least 900 ms (more, as commerce and analytics make two calls each).
    for service in (samples.hubspot, samples.shopify, samples.segment):
        service.faults.update(latency_ms=300)
    person = samples.people[11]
    started = time.monotonic()
    body = await gql(
        client,
        "query($email: String!) { customer(email: $email) "
        "{ lifecycleStage lifetimeValue { amount } engagement { sessions30d } } }",
        email=person.email,
    )
    elapsed = time.monotonic() - started
    assert "errors" not in body
    assert elapsed < 0.9 + 0.3, f"took {elapsed:.2f}s"


async def test_an_unknown_customer_calls_no_upstream(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    body = await gql(client, EVERYTHING, email="nobody.at.all@example.com")
    assert body == {"data": {"customer": None}}
    assert (
        samples.hubspot.calls.total + samples.shopify.calls.total + samples.segment.calls.total == 0
    )


async def test_readiness_reports_each_upstream_circuit(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    ready = await client.get("/readyz")
    assert ready.json()["checks"]["upstreams"] == {
        "hubspot": "closed",
        "shopify": "closed",
        "segment": "closed",
    }


async def test_consent_per_purpose_comes_from_the_crm(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    person = samples.people[12]
    body = await gql(
        client,
        "query($email: String!) { customer(email: $email) "
        "{ consent { emailMarketing personalisation analytics } } }",
        email=person.email,
    )
    assert body["data"]["customer"]["consent"] == {
        "emailMarketing": person.email_marketing_consent,
        "personalisation": person.personalisation_consent,
        "analytics": person.analytics_consent,
    }


PAGE = "query($e: [String!]) { customers(emails: $e) { email orders(first: 3) { name } } }"
GRAPHQL = "POST /admin/api/2024-10/graphql.json"


async def test_a_graphql_shop_reads_a_page_of_customers_orders_in_one_call(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    emails = [p.email for p in samples.people[:50]]
    patient = {"timeout_s": 5.0, "deadline_s": 10.0}  # 50 calls at once on a busy machine
    async with gateway(overrides={"shopify": patient}) as rest:
        expected = await gql(rest, PAGE, e=emails)
    assert "errors" not in expected
    assert samples.shopify.calls.count("GET /admin/api/2024-10/customers/{id}/orders.json") == 50
    samples.reset()
    async with gateway(overrides={"shopify": {**patient, "api": "graphql"}}) as client:
        body = await gql(client, PAGE, e=emails)
        assert samples.shopify.calls.count(GRAPHQL) == 1
        assert body == expected  # the same answer from either shape of the shop
        fields = "orderCount lifetimeValue { amount } lastOrderAt"
        more = await gql(
            client, f"query($e: [String!]) {{ customers(emails: $e) {{ {fields} }} }}", e=emails
        )
    assert "errors" not in more
    assert samples.shopify.calls.count(GRAPHQL) == 2  # the customer records: one more page
    assert samples.shopify.graphql.throttled == 0


LINES = (
    "query($e: [String!]) { customers(emails: $e) { email "
    "orders { id name totalPrice { amount } lineItems { productId title quantity } } } }"
)


async def test_a_graphql_shop_answers_ten_orders_with_line_items_whole(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    # orders' default first is 10: more than the 5 the cheapest batch read brings.
    people = sorted(samples.people, key=lambda p: -len(orders_for(p)))[:50]
    emails = [p.email for p in people]
    patient = {"timeout_s": 5.0, "deadline_s": 20.0}
    async with gateway(overrides={"shopify": patient}) as rest:
        expected = await gql(rest, LINES, e=emails)
    assert "errors" not in expected
    samples.reset()
    samples.shopify.graphql.reset(PLANS["plus"])
    graphql = {**patient, "api": "graphql", "graphql": {"bucket_size": 2000.0}}
    async with gateway(overrides={"shopify": graphql}) as client:
        body = await gql(client, LINES, e=emails)
        assert body == expected  # the same answer from either shape of the shop
        assert any(len(c["orders"]) == 10 for c in body["data"]["customers"])
        # 303 points a customer (10 orders of 5 line items): 3 a query.
        assert samples.shopify.calls.count(GRAPHQL) == 17
        # 3 orders, no line items: what the read of 10 with them already holds.
        again = await gql(client, PAGE, e=emails)
    assert "errors" not in again
    assert samples.shopify.calls.count(GRAPHQL) == 17
    assert samples.shopify.graphql.throttled == 0


SAVE = """mutation($t: String!) { saveTemplate(name: "last-three", source: $t) { version } }"""
BATCH = """query($ids: [ID!]!) { renderBatch(name: "last-three", customerIds: $ids) {
  customerId body error { code } } }"""
LAST_THREE = (
    "{% for o in orders limit: 3 %}{{ o.name }} {{ o.total_price.amount }};{% endfor %}"
    "{{ last_order_at }}"
)


async def _render_batch(client: httpx.AsyncClient, emails: list[str]) -> dict[str, Any]:
    assert "errors" not in await gql(client, SAVE, t=LAST_THREE)
    found = await gql(client, "query($e: [String!]) { customers(emails: $e) { id } }", e=emails)
    return await gql(client, BATCH, ids=[c["id"] for c in found["data"]["customers"]])


async def test_a_render_batch_reads_from_a_graphql_shop_only_the_orders_it_shows(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    """A template showing the last 3 orders' names and totals: the shop is asked for
    those 3 without line items (50 customers in one query, priced as such), and the
    renders are the REST shop's."""
    people = sorted(samples.people, key=lambda p: -len(orders_for(p)))[:50]
    emails = [p.email for p in people]
    patient = {"timeout_s": 5.0, "deadline_s": 20.0}
    async with gateway(overrides={"shopify": patient}) as rest:
        expected = await _render_batch(rest, emails)
    assert "errors" not in expected
    assert all(item["body"] for item in expected["data"]["renderBatch"])
    samples.reset()
    samples.shopify.graphql.reset(PLANS["plus"])
    graphql = {**patient, "api": "graphql", "graphql": {"bucket_size": 2000.0}}
    async with gateway(overrides={"shopify": graphql}) as client:
        assert await _render_batch(client, emails) == expected
    assert samples.shopify.calls.count(GRAPHQL) == 1
    # 3 orders of 3 points, the customer 1, its orders' connection 2; the page 2.
    assert samples.shopify.graphql.points_spent == 50 * (1 + 2 + 3 * 3) + 2

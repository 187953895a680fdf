"""What operators see: Prometheus metrics, request ids, and logs free of customer data."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import httpx
import pytest

from demo.upstreams.runner import SampleUpstreams
from gateway.observability.logs import JsonFormatter, mask
from tests.gql_client import gql

QUERY = """query Profile($email: String!) {
  customer(email: $email) { email firstName lifecycleStage lifetimeValue { amount } }
}"""


@pytest.fixture
def client(federated: httpx.AsyncClient) -> httpx.AsyncClient:
    return federated


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything logged, at DEBUG, through the production JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert match, f"{name}{{{wanted}}} not in /metrics"
    return float(match.group(1))


async def test_metrics_show_operations_upstreams_and_the_cache(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    for person in samples.people[100:103]:
        await gql(client, QUERY, email=person.email)
    await gql(client, QUERY, email=samples.people[100].email)  # a cache hit
    samples.shopify.faults.update(error_rate=1.0, error_status=503)
    await gql(client, QUERY, email=samples.people[104].email)

    failed = await gql(client, QUERY, email=samples.people[104].email)
    assert failed["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert _sample(text, "gateway_request_duration_seconds_count", operation="Profile") >= 5
    assert _sample(text, "gateway_upstream_request_duration_seconds_count", upstream="hubspot") >= 1
    assert (
        _sample(
            text, "gateway_upstream_errors_total", upstream="shopify", code="UPSTREAM_UNAVAILABLE"
        )
        >= 1
    )
    assert _sample(text, "gateway_cache_lookups_total", upstream="hubspot", result="hit") >= 1
    assert _sample(text, "gateway_cache_lookups_total", upstream="hubspot", result="miss") >= 4
    assert _sample(text, "gateway_upstream_circuit_state", upstream="hubspot") == 0


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"x-request-id": "esp-send-42"})
    assert given.headers["x-request-id"] == "esp-send-42"
    made = await client.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])


async def test_a_captured_run_logs_no_customer_email(
    client: httpx.AsyncClient, samples: SampleUpstreams, captured_logs: io.StringIO
) -> None:
    people = samples.people[110:115]
    for person in people:
        await gql(client, QUERY, email=person.email)
    samples.hubspot.faults.update(malformed=True)
    await gql(client, QUERY, email=samples.people[115].email)
    samples.hubspot.faults.update(malformed=False, error_rate=1.0)
    await client.get(f"/api/v1/users/{samples.people[116].email}/profile")
    await gql(client, 'mutation { upsertCustomer(input: {email: "broken@"}) { id } }')

    output = captured_logs.getvalue()
    assert output, "the run logged nothing: the capture is not wired"
    for person in samples.people[110:117]:
        assert person.email not in output
        assert person.email.split("@")[0] not in output
    assert '"request_id"' in output


def test_masking_keeps_nothing_of_an_address() -> None:
    assert mask("refused for ada.lovelace@example.com today") == "refused for ***@*** today"

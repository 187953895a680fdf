"""No customer data in any span: a broad run of requests (queries by e-mail and in a
batch, GET URLs carrying e-mails, mutations, a webhook, renders, an upstream failing)
traced through the in-memory exporter, every span's name, attributes, events and status
searched for each e-mail, name and phone the run used."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import orjson
import phonenumbers
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from demo.people.population import Person
from demo.upstreams.runner import SampleUpstreams
from tests.gql_client import gql
from tests.ingest.webhook_requests import SECRETS, shopify_request
from tests.observability.traced import THREE_UPSTREAMS, Traced

BATCH = """query($emails: [String!]) {
  customers(emails: $emails) { id email firstName lastName phone lifecycleStage orderCount }
}"""
UPSERT = """mutation($input: CustomerInput!) { upsertCustomer(input: $input) { id email phone } }"""
RENDER = """query($email: String!) {
  customer(email: $email) {
    render(template: "Hi {{ customer.first_name }} {{ customer.last_name }}") { body }
  }
}"""
SAVE = """mutation { saveTemplate(name: "trace-greeting",
  source: "Dear {{ customer.first_name }}, {{ customer.email }}") { name } }"""
RENDER_BATCH = """query($ids: [ID!]!) {
  renderBatch(name: "trace-greeting", customerIds: $ids) { body }
}"""
CONSENT = """mutation($id: ID!) {
  setConsent(customerId: $id, purpose: EMAIL_MARKETING, granted: true) { granted }
}"""
INVENTED = {
    "email": "ada.trace-lovelace@example.org",
    "firstName": "Adalinde",
    "lastName": "Tracewood",
    "phone": "+44 20 7946 0321",
}


def _forms(person: Person) -> Iterator[str]:
    yield from (person.email, person.email.lower(), person.first_name, person.last_name)
    yield from _phone_forms(person.phone)


def _phone_forms(phone: str) -> Iterator[str]:
    yield phone
    parsed = phonenumbers.parse(phone, "GB")
    yield phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    yield str(parsed.national_number)


def _texts(span: ReadableSpan) -> Iterator[str]:
    yield span.name
    yield orjson.dumps(dict(span.attributes or {}), default=str).decode()
    for event in span.events:
        yield event.name
        yield orjson.dumps(dict(event.attributes or {}), default=str).decode()
    yield span.status.description or ""


@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "crm-failing"])
async def test_no_email_name_or_phone_in_any_span(
    traced: Traced, samples: SampleUpstreams, failing: bool
) -> None:
    exporter = InMemorySpanExporter()
    people = samples.people[20:26]
    async with traced(exporter, webhook_secrets=dict(SECRETS)) as client:
        if failing:
            samples.hubspot.faults.update(error_rate=1.0, error_status=503)
        for person in people[:2]:
            await gql(client, THREE_UPSTREAMS, email=person.email)
        await gql(client, BATCH, emails=[p.email for p in people])
        # E-mails in URLs: a GET GraphQL query's variables and the profile path.
        variables = quote(orjson.dumps({"email": people[2].email}).decode())
        query = quote("query($email: String!) { customer(email: $email) { firstName } }")
        got = await client.get(f"/graphql?query={query}&variables={variables}")
        assert got.status_code == 200, got.text
        assert (await client.get(f"/api/v1/users/{people[3].email}/profile")).status_code == 200
        assert (await client.get(f"/api/v1/users/{quote(people[3].phone)}/profile")).status_code
        upserted = await gql(client, UPSERT, input=INVENTED)
        assert "errors" not in upserted, upserted
        ids = [upserted["data"]["upsertCustomer"]["id"]]
        found = await gql(client, BATCH, emails=[people[4].email])
        ids.append(found["data"]["customers"][0]["id"])
        assert "errors" not in await gql(client, CONSENT, id=ids[1])
        assert "errors" not in await gql(client, RENDER, email=people[4].email)
        assert "errors" not in await gql(client, SAVE)
        rendered = await gql(client, RENDER_BATCH, ids=ids)
        assert "errors" not in rendered, rendered
        assert people[4].first_name in orjson.dumps(rendered).decode()  # it did render them
        webhook = shopify_request(
            {
                "id": 7300000999001,
                "email": people[5].email,
                "first_name": people[5].first_name,
                "last_name": people[5].last_name,
                "phone": people[5].phone,
            }
        )
        assert (await client.post(**webhook)).status_code == 200
        # An unknown e-mail in a mutation that fails validation: an error with the input.
        await client.post(
            "/graphql", json={"query": UPSERT, "variables": {"input": {"email": "x@@trace"}}}
        )
    spans = exporter.get_finished_spans()
    names = {span.name for span in spans}
    assert {"webhook", "render", "POST /webhooks/shopify"} <= names
    assert any(name.startswith("upstream hubspot") for name in names)
    secrets = {form for person in people for form in _forms(person) if len(form) > 2}
    secrets |= {INVENTED["email"], INVENTED["firstName"], INVENTED["lastName"], "x@@trace"}
    secrets |= set(_phone_forms(INVENTED["phone"]))
    leaks = sorted(
        {(secret, span.name) for span in spans for text in _texts(span) for secret in secrets
         if secret in text}
    )  # fmt: skip
    assert leaks == []

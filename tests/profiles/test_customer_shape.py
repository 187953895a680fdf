"""One Customer, whichever field returns it: a query, a batch, an upsert's or a merge's
reply all load what their selection needs and answer every field the same way; times
carry their offset on every backend; bad input is explained for people."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import graphql
import httpx
import pytest
from sqlalchemy import select

from demo.upstreams.runner import SampleUpstreams
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import AuditEntry
from resolvers.graphql.schema import build_schema
from tests.conftest import unique_email
from tests.gql_client import gql

SCHEMA = build_schema()._schema
# Arguments a field cannot go without (render needs a template or a name).
ARGUMENTS = {("Customer", "render"): '(template: "Hi {{ first_name }}", format: TEXT)'}
# What differs between two reads of the same data: timings and where it came from.
VOLATILE = {"latencyMs", "fetchedAt", "ageSeconds", "status"}
OFFSET = re.compile(r"(Z|[+-]\d\d:\d\d)$")


def every_field(type_name: str, depth: int = 0) -> str:
    """A selection of every field of a type, nested objects included (made from the
    schema, so a field added later is covered too)."""
    parts = []
    named = SCHEMA.type_map[type_name]
    assert isinstance(named, graphql.GraphQLObjectType)
    for name, field in named.fields.items():
        inner = graphql.get_named_type(field.type)
        arguments = ARGUMENTS.get((type_name, name), "")
        if isinstance(inner, graphql.GraphQLObjectType):
            parts.append(f"{name}{arguments} {{ {every_field(inner.name, depth + 1)} }}")
        else:
            parts.append(f"{name}{arguments}")
    return " ".join(parts)


EVERYTHING = every_field("Customer")


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _person(samples: SampleUpstreams, which: int) -> Any:
    """A seeded person of each test's own (a merge changes its customer for good), who
    consents to personalisation: the behavioural fields read analytics too."""
    return [p for p in samples.people[5:] if p.personalisation_consent][which]


async def test_every_customer_field_answers_alike_from_each_root_field_and_mutation(
    federated: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    person = _person(samples, 0)
    # A write that changes no field still records who reported the email (provenance),
    # so it comes first: its reply, and every read after it, must answer alike.
    upsert = await gql(
        federated,
        f"mutation($e: String!) {{ upsertCustomer(input: {{email: $e}}) {{ {EVERYTHING} }} }}",
        e=person.email,
    )
    by_email = await gql(
        federated,
        f"query($e: String!) {{ customer(email: $e) {{ {EVERYTHING} }} }}",
        e=person.email,
    )
    assert "errors" not in by_email, by_email["errors"]
    read = by_email["data"]["customer"]
    assert "errors" not in upsert, upsert["errors"]  # was "Internal server error." x14
    batch = await gql(
        federated,
        f"query($ids: [ID!]) {{ customers(ids: $ids) {{ {EVERYTHING} }} }}",
        ids=[read["id"]],
    )
    assert "errors" not in batch, batch["errors"]
    by_identity = await gql(
        federated,
        f"query($i: String!) {{ customer(identity: $i) {{ {EVERYTHING} }} }}",
        i=f"{read['identities'][0]['source']}:{read['identities'][0]['externalId']}",
    )
    assert "errors" not in by_identity, by_identity["errors"]
    expected = _stable(read)
    assert expected["lifecycleStage"] == person.lifecycle_stage  # the CRM was read
    assert expected["engagement"]["sessions30d"] is not None
    assert _stable(upsert["data"]["upsertCustomer"]) == expected
    assert _stable(batch["data"]["customers"][0]) == expected
    assert _stable(by_identity["data"]["customer"]) == expected


async def test_one_field_asked_twice_loads_what_both_halves_select(
    federated: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    person = _person(samples, 1)
    body = await gql(
        federated,
        "query($e: String!) { c: customer(email: $e) { id } "
        "c: customer(email: $e) { lifecycleStage orderCount } }",
        e=person.email,
    )
    assert "errors" not in body, body["errors"]
    assert body["data"]["c"]["lifecycleStage"] == person.lifecycle_stage
    reply = await gql(
        federated,
        "mutation($e: String!) { u: upsertCustomer(input: {email: $e}) { id } "
        "u: upsertCustomer(input: {email: $e}) { city } }",
        e=person.email,
    )
    assert "errors" not in reply, reply["errors"]
    assert reply["data"]["u"]["city"] == person.city


def _times(value: Any, key: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _times(v, k)]
    if isinstance(value, list):
        return [t for v in value for t in _times(v, key)]
    return [(key, value)] if key.endswith("At") and isinstance(value, str) else []


async def test_every_stored_time_carries_its_offset(client: httpx.AsyncClient) -> None:
    """On Postgres and on SQLite alike (SQLite's were naive: "2023-12-09T12:53:19")."""
    email = unique_email("tz")
    created = await gql(
        client,
        'mutation($e: String!) { upsertCustomer(input: {email: $e, firstName: "Ada"}) { id } }',
        e=email,
    )
    customer_id = created["data"]["upsertCustomer"]["id"]
    await gql(
        client,
        "mutation($id: ID!) { setConsent(customerId: $id, purpose: ANALYTICS, granted: true) "
        "{ recordedAt } }",
        id=customer_id,
    )
    body = await gql(
        client,
        "query($id: ID!) { customer(id: $id) { createdAt updatedAt "
        "attributes { observedAt } identityLinks { createdAt } consents { recordedAt } } }",
        id=customer_id,
    )
    times = _times(body["data"])
    assert {name for name, _ in times} >= {"createdAt", "updatedAt", "observedAt", "recordedAt"}
    for name, value in times:
        assert OFFSET.search(value), f"{name} = {value!r} has no offset"
        assert datetime.fromisoformat(value).utcoffset() == timedelta(0)


async def test_a_moment_with_any_offset_is_stored_as_that_moment(database_url: str) -> None:
    """SQLite has no time zones: a +02:00 moment was stored by its wall clock, two
    hours off. Stored and read back, it is the same instant, in UTC."""
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    actor = f"tz-{uuid.uuid4().hex[:8]}"
    engine = create_engine(database_url)
    try:
        sessions = create_sessionmaker(engine)
        async with sessions.begin() as session:
            session.add(AuditEntry(occurred_at=moment, actor=actor, operation="test"))
        async with sessions() as session:
            stored = await session.scalar(
                select(AuditEntry.occurred_at).where(AuditEntry.actor == actor)
            )
            later = await session.scalar(
                select(AuditEntry.actor).where(
                    AuditEntry.actor == actor,
                    AuditEntry.occurred_at > datetime(2024, 5, 1, 10, 30, tzinfo=UTC),
                )
            )
    finally:
        await engine.dispose()
    assert stored == moment
    assert stored.tzinfo == UTC
    assert later is None  # compared as 10:00 UTC, not as 12:00


@pytest.mark.parametrize(
    ("phone", "says"),
    [
        ("abc", "not a phone number"),
        ("020 7946 0958", "country code"),
        ("+999 1234", "country code"),
    ],
)
async def test_an_invalid_phone_is_explained_for_people(
    client: httpx.AsyncClient, phone: str, says: str
) -> None:
    body = await gql(
        client,
        "mutation($e: String!, $p: String) "
        "{ upsertCustomer(input: {email: $e, phone: $p}) { id } }",
        e=unique_email("phone"),
        p=phone,
    )
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "phone"}
    message = error["message"]
    assert says in message
    assert "+14155550123" in message
    # Not the phonenumbers library's own words: "(1) The string supplied did not seem…".
    assert not re.search(r"\(\d\)|did not seem|default region", message), message

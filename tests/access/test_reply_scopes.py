"""Scopes on what a reply reveals: a key that may write but not read learns from a
mutation's reply only that the write worked (the id), whatever it selects, and reads
nothing through any root field; a key that may read sees replies whole, as before.

The selections are generated from the schema itself, so a field or type added later is
covered without touching these tests (and is refused to a writer until it is listed in
``resolvers.graphql.access.WRITER_VISIBLE``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
    is_leaf_type,
    is_non_null_type,
    is_object_type,
)
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from resolvers.graphql.access import WRITER_VISIBLE, writer_may_see
from resolvers.graphql.schema import build_schema
from tests.conftest import api_client, unique_email
from tests.gql_client import gql
from tests.in_process import services_of

SCHEMA: GraphQLSchema = build_schema()._schema
# Arguments a field needs for the generated selection to run (inline ones, to stay
# valid wherever the field appears). Every template variable a customer has.
FIELD_ARGS = {
    ("Customer", "render"): '(template: "{{ email }} {{ phone }} {{ first_name }} '
    '{{ last_name }} {{ date_of_birth }} {{ identities }}")',
}
DEPTH = 4  # Customer.orders.lineItems.price.amount: every leaf under a mutation's reply


def everything(type_: GraphQLObjectType, depth: int = DEPTH) -> str:
    """A selection of every field of ``type_`` and below, from the schema."""
    parts = ["__typename"]
    for name, field in type_.fields.items():
        named = get_named_type(field.type)
        args = FIELD_ARGS.get((type_.name, name), "")
        if is_leaf_type(named):
            parts.append(f"{name}{args}")
        elif is_object_type(named) and depth > 0:
            parts.append(f"{name}{args} {{ {everything(named, depth - 1)} }}")
    return " ".join(parts)


def leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every non-null leaf of a response's data, by its path (list indices dropped)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item, path)
    elif value is not None:
        yield path, value


def _type_at(path: tuple[str, ...]) -> tuple[str, str]:
    """The (parent type, field) a data path ends in, following the schema from Mutation."""
    parent: Any = SCHEMA.mutation_type
    for name in path[:-1]:
        parent = get_named_type(parent.fields[name].type)
    return parent.name, path[-1]


@pytest.fixture
async def people(app: Starlette) -> dict[str, Any]:
    """Customers with personal data, made by an admin key; and a template with a history."""
    tag = uuid.uuid4().hex[:8]
    made: dict[str, Any] = {"tag": tag}
    async with api_client(app) as admin:
        for name, phone, identities in (
            ("a", "+14155550101", [("crm", f"crm-a-{tag}")]),
            ("b", "+14155550102", [("crm", f"crm-b-{tag}")]),
            ("c", "+14155550103", [("crm", f"crm-c-{tag}"), ("shop", f"shop-c-{tag}")]),
        ):
            email = unique_email(f"secret-{name}")
            body = await gql(
                admin,
                "mutation($i: CustomerInput!) { upsertCustomer(input: $i) { id } }",
                i={
                    "email": email,
                    "phone": phone,
                    "firstName": f"First{name}{tag}",
                    "lastName": f"Last{name}{tag}",
                    "identities": [{"source": s, "externalId": e} for s, e in identities],
                },
            )
            assert "errors" not in body, body
            made[name] = {
                "id": body["data"]["upsertCustomer"]["id"],
                "secrets": [email, phone, f"First{name}{tag}", f"Last{name}{tag}"]
                + [e for _, e in identities],
            }
        saved = await gql(
            admin,
            'mutation($n: String!) { saveTemplate(name: $n, source: "earlier {{ email }}") '
            "{ version } }",
            n=f"tpl-{tag}",
        )
        assert "errors" not in saved, saved
    return made


def _mutations(people: dict[str, Any]) -> dict[str, str]:
    """Each mutation as a write-only key would call it, by root field."""
    a, b, c, tag = people["a"], people["b"], people["c"], people["tag"]
    email_a = a["secrets"][0]
    return {
        "upsertCustomer": f'upsertCustomer(input: {{email: "{email_a}"}})',
        "invalidateCustomer": f'invalidateCustomer(id: "{a["id"]}")',
        "saveTemplate": f'saveTemplate(name: "tpl-{tag}", source: "Hi {{{{ first_name }}}}")',
        "mergeCustomers": f'mergeCustomers(into: "{a["id"]}", from: "{b["id"]}", reason: "dup")',
        "unmergeCustomer": f'unmergeCustomer(source: "shop", externalId: "shop-c-{tag}")',
        "setConsent": f'setConsent(customerId: "{c["id"]}", purpose: ANALYTICS, granted: true, '
        'source: "sent-by-writer")',
        "forgetCustomer": f'forgetCustomer(id: "{c["id"]}")',
        # No such review: answered NOT_FOUND, and its reply reveals nothing either way.
        "resolveReview": 'resolveReview(id: "999999999", decision: KEEP_APART, reason: "x")',
        # Admin only: a write key is refused, and its reply shows nothing.
        "runExport": "runExport",
        "runRetention": "runRetention(apply: true)",
        "saveExperiment": f'saveExperiment(name: "exp-{tag}", start: "2030-01-01T00:00:00Z", '
        'end: "2030-01-02T00:00:00Z", variants: [{name: "a", strategy: POPULARITY}, '
        '{name: "b", strategy: MODEL}])',
        "saveSegment": f'saveSegment(name: "seg-{tag}", filter: {{field: "rfmSegment", '
        'eq: "champions"})',
        "deleteSegment": f'deleteSegment(name: "seg-{tag}")',
    }


def _operation(field: str, call: str) -> str:
    returned = get_named_type(SCHEMA.mutation_type.fields[field].type)  # type: ignore[union-attr]
    selection = f" {{ {everything(returned)} }}" if is_object_type(returned) else ""
    return f"mutation {{ {call}{selection} }}"


async def test_every_mutation_reply_shows_a_write_key_only_what_it_may_see(
    app: Starlette, people: dict[str, Any]
) -> None:
    calls = _mutations(people)
    # Every mutation of the schema is exercised: a new one must be added above.
    assert set(calls) == set(SCHEMA.mutation_type.fields)  # type: ignore[union-attr]
    secrets = [s for name in "abc" for s in people[name]["secrets"]]
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        for field, call in calls.items():
            body = await gql(writer, _operation(field, call))
            text = str(body)
            assert not [s for s in secrets if s in text], (field, body)
            assert "earlier" not in text  # the template's earlier version
            for path, _value in leaves(body.get("data")):
                assert writer_may_see(*_type_at(path)), (field, path, body)
            errors = body.get("errors", [])
            allowed = {"FORBIDDEN", "NOT_FOUND"} if field == "resolveReview" else {"FORBIDDEN"}
            assert {e["extensions"]["code"] for e in errors} <= allowed, body
            returned = get_named_type(SCHEMA.mutation_type.fields[field].type)  # type: ignore[union-attr]
            hidden = is_object_type(returned) and not all(
                writer_may_see(returned.name, name) for name in returned.fields
            )
            expected = hidden or field in {"forgetCustomer", "resolveReview"}
            assert bool(errors) == expected, (field, body)


@pytest.mark.parametrize(
    "field",
    sorted(name for name in build_schema()._schema.get_type("Customer").fields),  # type: ignore[union-attr]
)
async def test_each_customer_field_in_an_upsert_reply_needs_profiles_read(
    app: Starlette, people: dict[str, Any], field: str
) -> None:
    customer = SCHEMA.get_type("Customer")
    assert isinstance(customer, GraphQLObjectType)
    definition = customer.fields[field]
    named = get_named_type(definition.type)
    args = FIELD_ARGS.get(("Customer", field), "")
    sub = f" {{ {everything(named, 2)} }}" if is_object_type(named) else ""
    query = (
        f'mutation {{ upsertCustomer(input: {{email: "{people["a"]["secrets"][0]}"}}) '
        f"{{ id __typename {field}{args}{sub} }} }}"
    )
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        body = await gql(writer, query)
    if field in WRITER_VISIBLE["Customer"]:
        assert "errors" not in body, body
        return
    (error,) = body["errors"]
    assert error["path"] == ["upsertCustomer", field]
    assert error["extensions"] == {"code": "FORBIDDEN", "field": field}
    assert "'profiles:read'" in error["message"]
    if is_non_null_type(definition.type):
        # GraphQL nulls the parent of a null non-null field; the mutation still ran.
        assert body["data"] is None
    else:
        assert body["data"] == {
            "upsertCustomer": {"id": people["a"]["id"], "__typename": "Customer", field: None}
        }


async def test_a_write_key_knows_its_write_worked_from_the_id(
    app: Starlette, people: dict[str, Any]
) -> None:
    email = unique_email("fresh")
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        created = await gql(
            writer,
            'mutation($e: String!) { upsertCustomer(input: {email: $e, phone: "+14155550199"}) '
            "{ id __typename } }",
            e=email,
        )
        consent = await gql(writer, _operation("setConsent", _mutations(people)["setConsent"]))
        template = await gql(
            writer,
            'mutation($n: String!) { saveTemplate(name: $n, source: "Hi") '
            "{ name version format source createdAt } }",
            n=f"writer-{people['tag']}",
        )
    assert "errors" not in created
    assert created["data"]["upsertCustomer"]["id"]
    statement = consent["data"]["setConsent"]
    assert statement["purpose"] == "ANALYTICS"
    assert statement["source"] == "sent-by-writer"
    assert "errors" not in template
    assert template["data"]["saveTemplate"]["version"] == 1
    # The write happened: a reader sees it.
    async with api_client(app, Scope.PROFILES_READ) as reader:
        found = await gql(reader, "query($e: String!) { customer(email: $e) { phone } }", e=email)
    assert found["data"]["customer"] == {"phone": "+14155550199"}


async def test_a_key_that_may_read_and_write_sees_the_whole_reply(
    app: Starlette, people: dict[str, Any]
) -> None:
    email, phone, first, *_ = people["a"]["secrets"]
    async with api_client(app, Scope.PROFILES_READ, Scope.PROFILES_WRITE) as both:
        body = await gql(
            both,
            "mutation($e: String!) { upsertCustomer(input: {email: $e}) "
            '{ id email phone firstName createdAt attributes(name: "phone") { value } '
            'render(template: "{{ first_name }}") { body } } }',
            e=email,
        )
    assert "errors" not in body, body
    reply = body["data"]["upsertCustomer"]
    assert (reply["email"], reply["phone"], reply["firstName"]) == (email, phone, first)
    assert reply["render"]["body"] == first
    assert {"value": phone} in reply["attributes"]


# Every root query field, called as a write-only key would; all need profiles:read or admin.
QUERY_CALLS = {
    "customer": 'customer(id: "{id}") {{ id }}',
    "customers": 'customers(ids: ["{id}"]) {{ id }}',
    "template": 'template(name: "tpl-{tag}") {{ name }}',
    "renderBatch": 'renderBatch(name: "tpl-{tag}", customerIds: ["{id}"]) {{ customerId }}',
    "exportCustomer": 'exportCustomer(id: "{id}")',
    "auditLog": "auditLog {{ actor }}",
    "experiment": 'experiment(name: "exp-{tag}") {{ name }}',
    "campaign": 'campaign(sendId: "send-{tag}") {{ delivered }}',
    "segment": 'segment(name: "seg-{tag}") {{ name }}',
    "segments": "segments {{ name }}",
}


async def test_a_write_key_reads_nothing_through_any_root_query_field(
    app: Starlette, people: dict[str, Any]
) -> None:
    # identityReviews is a write key's to work (profiles:write); the records in it are
    # personal data, checked by the next test.
    assert {*QUERY_CALLS, "identityReviews"} == set(SCHEMA.query_type.fields)  # type: ignore[union-attr]
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        for field, call in QUERY_CALLS.items():
            query = "{ " + call.format(id=people["a"]["id"], tag=people["tag"]) + " }"
            body = await gql(writer, query)
            (error,) = body["errors"]
            assert error["path"] == [field], body
            assert error["extensions"]["code"] == "FORBIDDEN", body
            assert not (body["data"] or {}).get(field), body


async def test_render_batch_is_audited_per_customer(app: Starlette, people: dict[str, Any]) -> None:
    ids = [people["a"]["id"], people["b"]["id"]]
    async with api_client(app, Scope.PROFILES_READ) as reader:
        rendered = await gql(
            reader,
            "query($n: String!, $ids: [ID!]!) { renderBatch(name: $n, customerIds: $ids) "
            "{ customerId body } }",
            n=f"tpl-{people['tag']}",
            ids=[*ids, str(uuid.uuid4())],  # an unknown id is nobody's read
        )
        actor = await _actor(app, reader)
    assert "errors" not in rendered, rendered
    async with api_client(app) as admin:
        for customer_id in ids:
            log = await gql(
                admin,
                "query($c: ID!, $a: String!) { auditLog(customerId: $c, actor: $a) "
                "{ action operation customerId } }",
                c=customer_id,
                a=actor,
            )
            assert log["data"]["auditLog"] == [
                {"action": "read", "operation": "query:renderBatch", "customerId": customer_id}
            ]


async def _actor(app: Starlette, client: httpx.AsyncClient) -> str:
    """The name of the key a client holds (the audit log's actor)."""
    key = client.headers["authorization"].removeprefix("Bearer ")
    principal = await services_of(app).api_keys.authenticate(key)
    assert principal is not None
    return str(principal.name)


async def test_the_profile_url_refuses_a_write_key_with_403(
    app: Starlette, people: dict[str, Any]
) -> None:
    email = people["a"]["secrets"][0]
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        refused = await writer.get(f"/api/v1/users/{email}/profile")
    async with api_client(app, Scope.PROFILES_READ) as reader:
        answered = await reader.get(f"/api/v1/users/{email}/profile")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "forbidden"
    assert not [s for s in people["a"]["secrets"] if s in refused.text]
    assert answered.status_code == 200
    assert answered.json()["phone"] == people["a"]["secrets"][1]

"""Abuse limits: query depth and cost, introspection, and request body size.

Over HTTP against the app in-process (refusals are 400 or 413 with no data and a
code); the cost model's figures and the settings' effects through ``build_schema``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query, parse

from gateway.settings import load_settings
from resolvers.graphql.limits import QueryCost
from resolvers.graphql.query_cost import DEFAULT_LIST_WEIGHT
from resolvers.graphql.schema import build_schema

GRAPHQL_RESPONSE = "application/graphql-response+json"
ESP_BATCH = """
query EspSend($ids: [ID!], $emails: [String!], $orders: Int! = 3) {
  customers(ids: $ids, emails: $emails) {
    id email firstName lastName locale
    consent { emailMarketing personalisation }
    lifetimeValue { amount currency } orderCount
    orders(first: $orders) { id name createdAt totalPrice { amount currency } }
    cart { subtotal items { productId title quantity price } }
  }
}
"""


def _deep_type_query(levels: int) -> str:
    """``__type`` then ``levels`` nested ``ofType`` fields: depth ``levels + 2``."""
    inner = "name"
    for _ in range(levels):
        inner = f"ofType {{ {inner} }}"
    return f'{{ __type(name: "Customer") {{ {inner} }} }}'


async def _post(client: httpx.AsyncClient, query: str, **variables: Any) -> httpx.Response:
    return await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"accept": GRAPHQL_RESPONSE},
    )


def _passed(response: httpx.Response) -> dict[str, Any]:
    """Executed: 200 with data, and no limit among its errors (scopes may still apply)."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "data" in body
    codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
    assert not codes & {"QUERY_TOO_DEEP", "QUERY_TOO_COSTLY", "BODY_TOO_LARGE"}
    return body


def _refusal(response: httpx.Response, code: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert "data" not in body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code
    return error  # type: ignore[no-any-return]


# --- depth ---------------------------------------------------------------------------


async def test_the_deepest_data_path_and_introspection_pass(client: httpx.AsyncClient) -> None:
    deepest = (
        '{ customer(email: "nobody@example.com") '
        "{ orders(first: 1) { lineItems { price { amount } } } } }"
    )
    _passed(await _post(client, deepest))
    # What GraphiQL and graphql-core clients send first.
    introspection = await _post(client, get_introspection_query(descriptions=True))
    assert introspection.status_code == 200
    assert introspection.json()["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_a_query_deeper_than_the_limit_is_refused(client: httpx.AsyncClient) -> None:
    assert (await _post(client, _deep_type_query(13))).status_code == 200  # depth 15
    error = _refusal(await _post(client, _deep_type_query(14)), "QUERY_TOO_DEEP")
    assert error["message"] == "Query depth 16 exceeds the limit of 15"
    assert error["extensions"] == {"code": "QUERY_TOO_DEEP", "depth": 16, "limit": 15}


async def test_depth_counts_through_fragments() -> None:
    schema = build_schema(load_settings(max_query_depth=3))
    query = """
      query { customer(id: "x") { ...Orders } }
      fragment Orders on Customer { orders { ...Lines } }
      fragment Lines on Order { lineItems { price { amount } } }
    """
    result = await schema.execute(query)
    assert result.errors
    assert result.errors[0].message == "Query depth 5 exceeds the limit of 3"


async def test_the_depth_rule_is_built_once_so_validation_stays_cached() -> None:
    schema = build_schema()
    query = "{ __typename }"
    await schema.execute(query)
    hits = schema.documents.hits
    for _ in range(3):
        assert (await schema.execute(query)).data == {"__typename": "Query"}
    assert schema.documents.hits == hits + 3


# --- introspection -------------------------------------------------------------------


async def test_introspection_can_be_turned_off() -> None:
    schema = build_schema(load_settings(introspection=False))
    for query in ("{ __schema { queryType { name } } }", '{ __type(name: "Customer") { name } }'):
        result = await schema.execute(query)
        assert result.errors, query
        assert "introspection" in result.errors[0].message.lower()
        assert result.data is None
    assert (await schema.execute("{ __typename }")).data == {"__typename": "Query"}
    on = await build_schema().execute("{ __schema { queryType { name } } }")
    assert on.data == {"__schema": {"queryType": {"name": "Query"}}}


# --- cost ----------------------------------------------------------------------------


def _cost(query: str, **variables: Any) -> int:
    schema = build_schema()._schema
    return QueryCost(10**12).check(schema, parse(query), query, None, variables)


def test_cost_model_figures() -> None:
    # Per customer: itself 1, consent 1, lifetimeValue 1, 3 orders x (1 + totalPrice 1),
    # cart 1 + 10 items (scalars only) x 1: 20.
    assert _cost(ESP_BATCH, ids=["x"] * 1000) == 20_000
    assert _cost(ESP_BATCH, emails=["a@b.co"] * 10, orders=1) == 10 * 16
    assert _cost(ESP_BATCH, emails=None, ids=["x"] * 5) == 100  # null counts 0
    # Literal lists and sizes, and a list with no size argument.
    assert _cost('{ customers(ids: ["a", "b"]) { id orders { id } } }') == 2 * (1 + 10)
    assert _cost('{ customer(id: "a") { cart { items { title } } } }') == 1 + 1 + (
        DEFAULT_LIST_WEIGHT
    )
    # A fragment spread twice counts twice, without the plan growing with the spreads.
    twice = """query($ids: [ID!]) { customers(ids: $ids) { ...A ...A } }
               fragment A on Customer { consent { analytics } }"""
    assert _cost(twice, ids=["x"] * 7) == 7 * (1 + 2)


def test_cost_picks_the_named_operation_and_any_root() -> None:
    schema = build_schema()._schema
    document = """
      query Small { customer(id: "a") { id } }
      query Big($ids: [ID!]) { customers(ids: $ids) { consent { analytics } } }
      mutation Write { upsertCustomer(input: {email: "a@b.co"}) { orders(first: 2) { id } } }
    """
    costs = QueryCost(10**12)

    def check(name: str, **variables: Any) -> int:
        return costs.check(schema, parse(document), document, name, variables)

    assert check("Small") == 1
    assert check("Big", ids=["x"] * 4) == 8
    assert check("Big", ids=["x"] * 9) == 18  # the cached plan, other variables
    assert check("Write") == 1 + 2


async def test_a_1000_customer_esp_batch_is_within_the_default_cost(
    client: httpx.AsyncClient,
) -> None:
    emails = [f"nobody.{i}@example.com" for i in range(1000)]
    _passed(await _post(client, ESP_BATCH, emails=emails))


async def test_a_costly_query_is_refused_before_it_runs(client: httpx.AsyncClient) -> None:
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    response = await _post(client, ESP_BATCH, ids=ids, orders=50)
    error = _refusal(response, "QUERY_TOO_COSTLY")
    # 1000 x (1 + 1 + 1 + 50 x 2 + 11)
    assert error["message"] == "Query cost 114000 exceeds the limit of 100000"
    assert error["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 114_000, "limit": 100_000}


async def test_the_cost_limit_is_the_settings() -> None:
    schema = build_schema(load_settings(max_query_cost=100))
    query = "query($e: [String!]) { customers(emails: $e) { consent { analytics } } }"
    over = await schema.execute(query, variable_values={"e": ["a@b.co"] * 51})
    assert over.data is None
    assert over.errors
    assert over.errors[0].extensions == {"code": "QUERY_TOO_COSTLY", "cost": 102, "limit": 100}


# --- size: tokens, fields, root fields, variables --------------------------------------


async def test_10000_aliases_of_a_customer_are_refused_before_anything_runs(
    client: httpx.AsyncClient,
) -> None:
    customer_id = uuid.uuid4()
    query = "{ " + " ".join(f'a{i}: customer(id: "{customer_id}") {{ id }}' for i in range(10_000))
    error = _refusal(await _post(client, query + " }"), "QUERY_TOO_LARGE")
    assert error["extensions"] == {"code": "QUERY_TOO_LARGE", "limit": 5000}
    # Within the token limit, the root fields are counted.
    query = "{ " + " ".join(f'a{i}: customer(id: "{customer_id}") {{ id }}' for i in range(51))
    error = _refusal(await _post(client, query + " }"), "TOO_MANY_ROOT_FIELDS")
    assert error["extensions"] == {"code": "TOO_MANY_ROOT_FIELDS", "rootFields": 51, "limit": 50}
    assert "customers(ids: [...])" in error["message"]


@pytest.mark.parametrize(
    ("count", "code"), [(1000, "QUERY_TOO_LARGE"), (51, "TOO_MANY_ROOT_FIELDS")]
)
async def test_mutation_fields_are_capped_and_no_recursion_error_reaches_the_client(
    client: httpx.AsyncClient, count: int, code: str
) -> None:
    fields = " ".join(f'm{i}: invalidateCustomer(id: "{uuid.uuid4()}")' for i in range(count))
    response = await _post(client, "mutation { " + fields + " }")
    _refusal(response, code)
    assert "recursion" not in response.text.lower()


@pytest.mark.logs_errors(r"gateway\.graphql: unexpected error(.|\n)*RecursionError")
async def test_an_error_escaping_execution_is_masked_not_quoted() -> None:
    # With the root-field cap lifted, graphql-core's serial execution of 1,000
    # mutations overflows Python's stack outside any resolver.
    schema = build_schema(
        load_settings(max_root_fields=5000, max_query_fields=5000, max_query_tokens=50_000)
    )
    fields = " ".join(
        f'm{i}: saveTemplate(name: "n", source: "x") {{ version }}' for i in range(1000)
    )
    result = await schema.execute("mutation { " + fields + " }")
    assert result.errors
    assert {e.message for e in result.errors} == {"Internal server error."}


async def test_fields_are_counted_where_fragments_are_spread(client: httpx.AsyncClient) -> None:
    wide = " ".join(f"f{i}: __typename" for i in range(100))
    spreads = " ".join(f's{i}: customer(id: "x") {{ ...Wide }}' for i in range(5))
    query = f"{{ {spreads} }} fragment Wide on Customer {{ {wide} }}".replace('\\"', '"')
    error = _refusal(await _post(client, query), "QUERY_TOO_LARGE")
    assert error["extensions"] == {"code": "QUERY_TOO_LARGE", "fields": 505, "limit": 500}
    # The same fields spread four times pass.
    fewer = query.replace(' s4: customer(id: "x") { ...Wide }'.replace('\\"', '"'), "")
    assert (await _post(client, fewer)).status_code == 200


def _fan_out(levels: int, on: str, leaf: str) -> str:
    """Fragments each spreading the next twice: ``2 ** levels`` selections of ``leaf``
    in a document of a few kilobytes."""
    fragments = " ".join(
        f"fragment F{i} on {on} {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    return f"{fragments} fragment F{levels} on {on} {{ {leaf} }}"


async def test_fragments_multiplying_fields_are_refused_with_a_json_count(
    client: httpx.AsyncClient,
) -> None:
    # 2^70 fields: the count does not fit the 64 bits orjson writes (it was a 500).
    query = '{ customer(id: "x") { ...F0 } } ' + _fan_out(70, "Customer", "id")
    error = _refusal(await _post(client, query), "QUERY_TOO_LARGE")
    assert error["extensions"] == {"code": "QUERY_TOO_LARGE", "fields": 2**53 - 1, "limit": 500}


def test_root_fields_are_counted_in_one_pass_over_the_fragments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counted per spread, ``fragment a on Query { ...b ...b ...b ...b ...b }`` ten deep
    (447 bytes) walked 5^10 spreads and held the event loop for 8 s; each fragment is
    measured once per depth."""
    from resolvers.graphql import document_size

    visits = 0
    measure = document_size._FieldCounter.fields

    def counted(self: Any, selections: Any, depth: int | None = None) -> int:
        nonlocal visits
        visits += 1
        assert visits < 1000, "the count walks every spread of every fragment"
        return measure(self, selections, depth)

    monkeypatch.setattr(document_size._FieldCounter, "fields", counted)
    document = parse("{ ...F0 } " + _fan_out(64, "Query", "__typename"))
    (error,) = document_size.size_errors(document, max_fields=500, max_root_fields=50)
    assert error.extensions == {
        "code": "TOO_MANY_ROOT_FIELDS",
        "rootFields": 2**53 - 1,
        "limit": 50,
    }


async def test_a_document_over_the_token_limit_is_refused_while_parsing(
    client: httpx.AsyncClient,
) -> None:
    ids = ", ".join(f'"{uuid.uuid4()}"' for _ in range(5000))
    response = await _post(client, f"{{ customers(ids: [{ids}]) {{ id }} }}")
    error = _refusal(response, "QUERY_TOO_LARGE")
    assert "5000 tokens" in error["message"]


async def test_variables_holding_too_many_values_are_refused_before_coercion(
    client: httpx.AsyncClient,
) -> None:
    identities = [{"source": "hubspot", "externalId": str(i)} for i in range(3000)]
    query = "mutation($i: CustomerInput!) { upsertCustomer(input: $i) { id } }"
    response = await _post(client, query, i={"email": "many@example.com", "identities": identities})
    error = _refusal(response, "VARIABLES_TOO_LARGE")
    assert error["extensions"] == {"code": "VARIABLES_TOO_LARGE", "limit": 5000}


async def test_the_size_limits_are_the_settings() -> None:
    schema = build_schema(
        load_settings(max_root_fields=2, max_query_fields=20, max_query_tokens=200)
    )
    assert (await schema.execute("{ a: __typename b: __typename }")).errors is None
    three = await schema.execute("{ a: __typename b: __typename c: __typename }")
    assert three.errors
    assert three.errors[0].extensions == {
        "code": "TOO_MANY_ROOT_FIELDS",
        "rootFields": 3,
        "limit": 2,
    }
    tokens = await schema.execute("{ __typename " + "# x\n" * 10 + "}" + " " * 10)
    assert tokens.errors is None  # comments are not tokens
    long = await schema.execute("{ " + "__typename " * 201 + "}")
    assert long.errors
    assert long.errors[0].extensions == {"code": "QUERY_TOO_LARGE", "limit": 200}


# --- body size -----------------------------------------------------------------------

LIMIT = 1_048_576


async def test_a_body_over_the_limit_is_413_from_its_content_length(
    client: httpx.AsyncClient,
) -> None:
    body = b'{"query": "{ __typename }", "pad": "' + b"x" * LIMIT + b'"}'
    response = await client.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "errors": [
            {
                "message": f"Request body larger than {LIMIT} bytes",
                "extensions": {"code": "BODY_TOO_LARGE", "limit": LIMIT},
            }
        ]
    }


async def test_a_chunked_body_is_cut_off_at_the_limit(client: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"query": "{ __typename }", "pad": "'
        for _ in range(64):  # 4 MiB in all, unless the gateway stops reading
            sent += 1
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "BODY_TOO_LARGE"
    assert sent <= LIMIT // 65536 + 1  # the rest was never read


@pytest.mark.parametrize("path", ["/webhooks/shopify", "/api/v1/users/x/profile"])
async def test_the_limit_covers_webhooks_and_the_api(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path, content=b"x" * (LIMIT + 1))
    assert response.status_code == 413


async def test_a_body_at_the_limit_is_served(client: httpx.AsyncClient) -> None:
    prefix, suffix = b'{"query": "{ __typename }", "pad": "', b'"}'
    body = prefix + b"x" * (LIMIT - len(prefix) - len(suffix)) + suffix
    assert len(body) == LIMIT
    response = await client.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}

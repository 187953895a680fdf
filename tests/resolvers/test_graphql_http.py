"""GraphQL over HTTP: media types, status codes and errors as the specification asks."""

from __future__ import annotations

import hashlib
import json
import re

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.types import Message

from demo.upstreams.runner import SampleUpstreams
from tests.conftest import issue_key
from tests.in_process import asgi, lifespan, state_of

QUERY = '{ customer(email: "nobody@example.com") { id } }'
GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        ("application/json", "application/json"),
        (None, "application/json"),  # legacy clients that send no Accept
        ("*/*", "application/json"),  # curl, fetch, httpx, requests: maybe legacy too
        ("application/*", "application/json"),
        (f"application/json;q=0.5, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json", GRAPHQL_RESPONSE),  # named: preferred
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"text/html, nonsense, {GRAPHQL_RESPONSE};q=0.5", GRAPHQL_RESPONSE),
    ],
)
async def test_response_media_type_follows_accept(
    client: httpx.AsyncClient, accept: str | None, expected: str
) -> None:
    request = client.build_request("POST", "/graphql", json={"query": QUERY})
    del request.headers["accept"]  # httpx sends */* unless told otherwise
    if accept:
        request.headers["accept"] = accept
    response = await client.send(request)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == expected
    assert response.json() == {"data": {"customer": None}}


@pytest.mark.parametrize("accept", ["text/csv", "garbage", "text/html", ";;;"])
async def test_unacceptable_media_type_is_406(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.post("/graphql", json={"query": QUERY}, headers={"accept": accept})
    assert response.status_code == 406  # "garbage" was a 500
    assert response.json()["errors"][0]["message"].startswith("Accept one of")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(accept=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
async def test_any_accept_header_gets_an_answer_not_a_server_error(
    client: httpx.AsyncClient, accept: str
) -> None:
    response = await client.post("/graphql", json={"query": QUERY}, headers={"accept": accept})
    assert response.status_code in {200, 406}, (accept, response.text)


BY_ID = "query Find($id: ID!) { customer(id: $id) { id } }"
# Well-formed requests that fail before anything runs: the spec's "request errors".
REQUEST_ERRORS = [
    ({"query": "{ customer(email: "}, "Syntax Error"),
    ({"query": '{ customer(email: "a@b.co") { id shoeSize } }'}, "shoeSize"),
    ({"query": "{ customer(email: 42) { id } }"}, "String"),
    ({"query": BY_ID, "variables": {"id": {"not": "an id"}}}, "Variable '$id'"),
    ({"query": BY_ID, "variables": {}}, "Variable '$id'"),
    ({"query": BY_ID, "operationName": "Other"}, "Unknown operation named"),
]
# Requests that are not well-formed GraphQL-over-HTTP at all: 400 whatever the client accepts.
MALFORMED = [
    ({"query": None}, "No GraphQL query"),
    ({"query": "{ customer { id } }", "variables": "nope"}, "variables"),
    ({"query": QUERY, "operationName": {"an": "object"}}, "operationName"),
    ({"query": QUERY, "operationName": ["a", "list"]}, "operationName"),
    ({"query": QUERY, "operationName": 7}, "operationName"),
]


@pytest.mark.parametrize(("body", "reason"), REQUEST_ERRORS + MALFORMED)
async def test_request_errors_are_4xx_without_data(
    client: httpx.AsyncClient, body: dict[str, object], reason: str
) -> None:
    response = await client.post("/graphql", json=body, headers={"accept": GRAPHQL_RESPONSE})
    assert response.status_code == 400  # a variable of the wrong type was 200 with data: null
    payload = response.json()
    assert "data" not in payload
    assert reason in payload["errors"][0]["message"]
    assert "unhashable" not in response.text  # operationName as an object: a TypeError's text


@pytest.mark.parametrize(("body", "reason"), REQUEST_ERRORS)
async def test_request_errors_are_200_for_clients_of_application_json(
    client: httpx.AsyncClient, body: dict[str, object], reason: str
) -> None:
    """The spec's SHOULD for legacy clients: they read the body, whatever the status."""
    response = await client.post("/graphql", json=body, headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/json"
    payload = response.json()
    assert "data" not in payload
    assert reason in payload["errors"][0]["message"]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
async def test_malformed_requests_are_400_for_clients_of_application_json(
    client: httpx.AsyncClient, body: dict[str, object], reason: str
) -> None:
    response = await client.post("/graphql", json=body, headers={"accept": "application/json"})
    assert response.status_code == 400
    assert reason in response.json()["errors"][0]["message"]


async def test_invalid_json_body_is_400_with_a_json_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Unable to parse request body as JSON"}]}


async def test_query_over_get_works(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": QUERY}, headers={"accept": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"customer": None}}


async def test_mutation_over_get_is_405(client: httpx.AsyncClient) -> None:
    mutation = 'mutation { upsertCustomer(input: {email: "get@example.com"}) { id } }'
    response = await client.get(
        "/graphql", params={"query": mutation}, headers={"accept": "application/json"}
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    check = await client.post(
        "/graphql", json={"query": '{ customer(email: "get@example.com") { id } }'}
    )
    assert check.json() == {"data": {"customer": None}}  # and nothing was written


async def test_other_methods_are_405(client: httpx.AsyncClient) -> None:
    response = await client.put("/graphql", json={"query": QUERY})
    assert response.status_code == 405


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_a_persisted_get_answers_data_to_any_client_and_graphiql_only_to_a_browser(
    client: httpx.AsyncClient,
) -> None:
    digest = hashlib.sha256(QUERY.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    await client.post("/graphql", json={"query": QUERY, "extensions": extensions})
    for accept in ["*/*", "application/json", GRAPHQL_RESPONSE, BROWSER]:
        response = await client.get(
            "/graphql", params={"extensions": json.dumps(extensions)}, headers={"accept": accept}
        )
        assert response.status_code == 200, accept  # */* was answered GraphiQL's page
        assert response.json() == {"data": {"customer": None}}, accept
    page = await client.get("/graphql", headers={"accept": BROWSER})
    assert page.headers["content-type"].startswith("text/html")
    for accept in ["*/*", "application/json"]:
        bare = await client.get("/graphql", headers={"accept": accept})
        assert bare.status_code == 400, accept
        assert "No GraphQL query" in bare.json()["errors"][0]["message"]


async def test_only_a_persisted_get_may_be_cached(client: httpx.AsyncClient) -> None:
    digest = hashlib.sha256(QUERY.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    post = await client.post("/graphql", json={"query": QUERY, "extensions": extensions})
    get = await client.get("/graphql", params={"query": QUERY})
    persisted = await client.get("/graphql", params={"extensions": json.dumps(extensions)})
    failed = await client.get(
        "/graphql", params={"query": "{ customer(id: 7) { id } }", "extensions": "{}"}
    )
    page = await client.get("/graphql", headers={"accept": BROWSER})
    assert post.headers["cache-control"] == "no-store"
    assert get.headers["cache-control"] == "no-store"
    assert failed.headers["cache-control"] == "no-store"
    assert page.headers["cache-control"] == "no-store"  # it may embed a key
    # Stored data only: nothing says how long it stays as it is, so: revalidate.
    assert persisted.headers["cache-control"] == "private, max-age=0"


async def test_a_persisted_get_of_upstream_data_is_cacheable_while_that_data_is_fresh(
    federated: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    query = "query($e: String!) { customer(email: $e) { lifecycleStage orderCount } }"
    extensions = {
        "persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}
    }
    variables = json.dumps({"e": samples.people[90].email})
    registered = await federated.post(
        "/graphql", json={"query": query, "extensions": extensions, "variables": {"e": "x@y.co"}}
    )
    assert registered.status_code == 200
    response = await federated.get(
        "/graphql", params={"extensions": json.dumps(extensions), "variables": variables}
    )
    assert response.json()["data"]["customer"]["lifecycleStage"]
    kind, max_age = response.headers["cache-control"].split(", max-age=")
    assert kind == "private"
    assert 0 < int(max_age) <= 300  # the example config's upstream TTL
    samples.hubspot.faults.update(error_rate=1.0)
    other = json.dumps({"e": samples.people[91].email})
    failing = await federated.get(
        "/graphql", params={"extensions": json.dumps(extensions), "variables": other}
    )
    assert failing.json()["errors"]
    assert failing.headers["cache-control"] == "no-store"


async def test_graphiql_page_loads_its_assets_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    # Nothing fetched from a CDN: every script and stylesheet is served by the gateway.
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    assert all(a.startswith("/graphiql/assets/") for a in assets)
    assert "https://" not in page.text
    assert "http://" not in page.text
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 500


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["reasons"] == []
    assert body["checks"] == {"database": "ok", "cache": "ok", "upstreams": {}}


async def test_readiness_is_503_when_the_database_is_down() -> None:
    from gateway.settings import load_settings
    from resolvers.app import create_app

    # A port nothing listens on: the database cannot answer.
    app = create_app(load_settings(database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    async with lifespan(app):
        transport = asgi(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            ready = await http.get("/readyz")
            health = await http.get("/healthz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "down"
    assert health.status_code == 200


@pytest.mark.parametrize("path", ["/graphql", "/api/recommendations"])
async def test_a_client_that_leaves_before_its_body_ends_the_request_quietly(
    app: Starlette, path: str
) -> None:
    """uvicorn logs an exception escaping the app as a server failure, with a traceback:
    a client that hung up mid-request (a timeout of its own) is not one."""
    key = await issue_key(app)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [*headers, (b"authorization", f"Bearer {key}".encode())],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
        "state": dict(state_of(app)),  # as a server hands it over
    }
    await app(scope, receive, send)  # raised ClientDisconnect
    assert sent == []  # nobody to answer


async def test_graphiql_and_the_console_may_not_be_framed(client: httpx.AsyncClient) -> None:
    """Where a person pastes a key or reads a customer, no other site may frame the page
    (the console's pages, its redirects and what it does not know included)."""
    answers = [
        await client.get("/graphql", headers={"accept": BROWSER}),
        await client.get("/console/sign-in"),
        await client.get("/console/customers"),
        await client.get("/console/no-such-page"),
        await client.get("/console/customers/"),
    ]
    assert answers[3].status_code == 404
    # A trailing slash too many is redirected to the page, as Starlette's router does.
    assert answers[4].status_code == 307
    assert httpx.URL(answers[4].headers["location"]).path == "/console/customers"
    for answer in answers:
        where = f"{answer.request.url.path} {answer.status_code}"
        assert answer.headers.get("x-frame-options") == "DENY", where
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], where
    policy = answers[0].headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy  # the page's one inline script only
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]

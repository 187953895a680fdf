"""GraphQL over HTTP: media types, status codes and errors as the specification asks."""

from __future__ import annotations

import re

import httpx
import pytest

QUERY = '{ customer(email: "nobody@example.com") { id } }'
GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        ("application/json", "application/json"),
        (None, "application/json"),  # legacy clients that send no Accept
        ("*/*", GRAPHQL_RESPONSE),
        (f"application/json;q=0.5, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
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


async def test_unacceptable_media_type_is_406(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": QUERY}, headers={"accept": "text/csv"})
    assert response.status_code == 406


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"query": "{ customer(email: "}, "Syntax Error"),
        ({"query": '{ customer(email: "a@b.co") { id shoeSize } }'}, "shoeSize"),
        ({"query": "{ customer(email: 42) { id } }"}, "String"),
        ({"query": None}, "No GraphQL query"),
        ({"query": "{ customer { id } }", "variables": "nope"}, "variables"),
    ],
)
async def test_request_errors_are_4xx_without_data(
    client: httpx.AsyncClient, body: dict[str, object], reason: str
) -> None:
    response = await client.post("/graphql", json=body, headers={"accept": GRAPHQL_RESPONSE})
    assert response.status_code == 400
    payload = response.json()
    assert "data" not in payload
    assert reason in payload["errors"][0]["message"]


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


async def test_graphiql_page_loads_its_assets_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    # Nothing fetched from a CDN: every script and stylesheet is served by the gateway.
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/graphiql/assets/") for a in assets)
    assert "https://" not in page.text and "http://" not in page.text
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 500


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "cache": "ok", "upstreams": {}},
    }


async def test_readiness_is_503_when_the_database_is_down() -> None:
    from gateway.app import create_app
    from gateway.settings import load_settings

    # A port nothing listens on: the database cannot answer.
    app = create_app(load_settings(database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            ready = await http.get("/readyz")
            health = await http.get("/healthz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "unavailable"
    assert health.status_code == 200

"""A tiny GraphQL client for tests: post a document, get the decoded answer."""

from __future__ import annotations

from typing import Any

import httpx


async def gql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"accept": "application/graphql-response+json"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_codes(body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    return [(e.get("extensions", {}).get("code"), e.get("path")) for e in body.get("errors", [])]

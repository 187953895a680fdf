"""Automatic persisted queries: a hash instead of the document, over POST and GET."""

from __future__ import annotations

import hashlib
import json

import httpx

QUERY = '{ customer(email: "nobody@example.com") { id } }'
DIGEST = hashlib.sha256(QUERY.encode()).hexdigest()
EXTENSIONS = {"persistedQuery": {"version": 1, "sha256Hash": DIGEST}}


async def test_unknown_hash_asks_for_the_document_then_the_hash_alone_works(
    client: httpx.AsyncClient,
) -> None:
    other = hashlib.sha256(f"{QUERY} # {id(client)}".encode()).hexdigest()
    miss = await client.post(
        "/graphql", json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": other}}}
    )
    assert miss.status_code == 400
    assert miss.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"

    register = await client.post("/graphql", json={"query": QUERY, "extensions": EXTENSIONS})
    assert register.json() == {"data": {"customer": None}}
    by_hash = await client.post("/graphql", json={"extensions": EXTENSIONS})
    assert by_hash.json() == {"data": {"customer": None}}


async def test_a_persisted_query_is_callable_over_get(client: httpx.AsyncClient) -> None:
    await client.post("/graphql", json={"query": QUERY, "extensions": EXTENSIONS})
    response = await client.get(
        "/graphql",
        params={"extensions": json.dumps(EXTENSIONS)},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"customer": None}}


async def test_a_hash_that_does_not_match_the_document_is_refused(
    client: httpx.AsyncClient,
) -> None:
    wrong = {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}
    response = await client.post("/graphql", json={"query": QUERY, "extensions": wrong})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"

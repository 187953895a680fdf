"""Automatic persisted queries: a hash instead of the document, over POST and GET."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from contextlib import AsyncExitStack

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import GatewayFactory, clean_redis, redis_database_url

REDIS_URL = redis_database_url(13)

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


def _persisted(query: str) -> dict[str, object]:
    digest = hashlib.sha256(query.encode()).hexdigest()
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


async def _by_hash(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.post("/graphql", json={"extensions": _persisted(query)})


def _code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


@pytest.mark.parametrize(
    "document",
    ["{ noSuchField }", "{ customer(email: ", "query { __typename } # " + "x" * 2000],
    ids=["invalid", "unparsable", "valid"],
)
async def test_only_a_document_that_parses_and_validates_is_remembered(
    client: httpx.AsyncClient, document: str
) -> None:
    document = f"{document} # {uuid.uuid4()}" if document.startswith("{ no") else document
    first = await client.post(
        "/graphql", json={"query": document, "extensions": _persisted(document)}
    )
    again = await _by_hash(client, document)
    if document.startswith("query"):
        assert first.status_code == again.status_code == 200
        assert again.json() == {"data": {"__typename": "Query"}}
    else:
        assert "data" not in first.json()  # a request error: nothing ran
        assert again.status_code == 400
        assert _code(again) == "PERSISTED_QUERY_NOT_FOUND"


async def test_a_document_over_the_size_limit_is_refused_and_not_kept(
    gateway: GatewayFactory,
) -> None:
    async with gateway(persisted_query_max_bytes=2048) as client:
        large = "{ __typename } # " + "x" * 3000
        response = await client.post(
            "/graphql", json={"query": large, "extensions": _persisted(large)}
        )
        assert response.status_code == 400
        assert _code(response) == "PERSISTED_QUERY_TOO_LARGE"
        assert "at most 2048 bytes" in response.json()["errors"][0]["message"]
        assert _code(await _by_hash(client, large)) == "PERSISTED_QUERY_NOT_FOUND"
        # Sent whole, without the extension, it still runs.
        plain = await client.post("/graphql", json={"query": large})
        assert plain.json() == {"data": {"__typename": "Query"}}


def _documents(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"query Q{tag}{i} {{ __typename }}" for i in range(n)]


@pytest.mark.parametrize("cache", ["memory", "redis"])
async def test_the_least_recently_used_documents_go_beyond_the_count_limit(
    gateway: GatewayFactory, cache: str
) -> None:
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(clean_redis(REDIS_URL)) if cache == "redis" else None
        one = await stack.enter_async_context(gateway(url or "memory://", persisted_queries_max=3))
        documents = _documents(4)
        for document in documents:
            registered = await one.post(
                "/graphql", json={"query": document, "extensions": _persisted(document)}
            )
            assert registered.status_code == 200
        await asyncio.sleep(0.01)  # the newest registration is the most recent use
        assert (await _by_hash(one, documents[1])).status_code == 200
        readers = [one]
        if url:  # a second instance sees what the first kept, and only that
            readers.append(await stack.enter_async_context(gateway(url, persisted_queries_max=3)))
        for reader in readers:
            assert _code(await _by_hash(reader, documents[0])) == "PERSISTED_QUERY_NOT_FOUND"
            for kept in documents[1:]:
                assert (await _by_hash(reader, kept)).json() == {"data": {"__typename": "Query"}}
        if url:
            # A document written into Redis under another one's hash is not served.
            fresh = await stack.enter_async_context(gateway(url))
            redis = aioredis.from_url(url)
            digest = hashlib.sha256(documents[0].encode()).hexdigest()
            await redis.hset("gw:apq:v2:documents", digest, "mutation { forgetCustomer(id: 1) }")
            await redis.aclose()
            assert _code(await _by_hash(fresh, documents[0])) == "PERSISTED_QUERY_NOT_FOUND"

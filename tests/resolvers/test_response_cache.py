"""The response cache of persisted queries: a stored answer is the bytes a run would
give, for the same document, variables and scopes, until anything it holds is written,
on any instance sharing Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.access.api_keys import Scope
from gateway.settings import load_settings
from resolvers.http.view import GatewayGraphQL
from tests.access.instances import new_customer
from tests.conftest import api_client, clean_redis, issue_key, redis_database_url, unique_email
from tests.in_process import asgi, lifespan, services_of
from tests.ingest.webhook_requests import realtime_app, shopify_request

REDIS_URL = redis_database_url(10)
PROFILE = (
    "query Profile($email: String!) { customer(email: $email) { id email firstName "
    "consent { emailMarketing } } }"
)


def _extensions(query: str) -> dict[str, Any]:
    digest = hashlib.sha256(query.encode()).hexdigest()
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


async def persisted_get(
    client: httpx.AsyncClient, query: str, headers: dict[str, str] | None = None, **variables: Any
) -> httpx.Response:
    """The query by its hash over GET, registered first if the gateway does not know it."""
    params = {"extensions": json.dumps(_extensions(query)), "variables": json.dumps(variables)}
    response = await client.get("/graphql", params=params, headers=headers)
    if response.status_code == 400 and "PERSISTED_QUERY_NOT_FOUND" in response.text:
        await client.post(
            "/graphql",
            json={"query": query, "variables": variables, "extensions": _extensions(query)},
        )
        response = await client.get("/graphql", params=params, headers=headers)
    return response


async def fresh(client: httpx.AsyncClient, query: str, **variables: Any) -> Any:
    """The answer a run gives now (a plain POST never reads the response cache)."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    return response.json()


def hit(response: httpx.Response) -> bool:
    return bool(response.headers.get("x-response-cache") == "hit")


def _max_age(response: httpx.Response) -> int:
    """A stored answer's whole seconds left, as its Cache-Control says."""
    control = response.headers.get("cache-control", "")
    ages = [p.strip().removeprefix("max-age=") for p in control.split(",") if "max-age=" in p]
    return int(ages[0]) if ages else 0


async def gql(client: httpx.AsyncClient, query: str, **variables: Any) -> Any:
    body = (await client.post("/graphql", json={"query": query, "variables": variables})).json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
async def two(database_url: str) -> AsyncIterator[tuple[Starlette, Starlette]]:
    """Two gateway instances sharing one Redis (and a database), webhooks on."""
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(clean_redis(REDIS_URL))
        settings = load_settings(database_url=database_url, cache_url=url)
        first, second = realtime_app(settings), realtime_app(settings)
        await stack.enter_async_context(lifespan(first))
        await stack.enter_async_context(lifespan(second))
        yield first, second


async def test_a_hit_is_the_same_bytes_with_an_etag_and_304(
    two: tuple[Starlette, Starlette],
) -> None:
    app, _ = two
    _, email = await new_customer(app)
    async with api_client(app) as client:
        first = await persisted_get(client, PROFILE, email=email)
        second = await persisted_get(client, PROFILE, email=email)
        assert first.status_code == second.status_code == 200
        assert hit(second)  # the registration ran it and stored it
        assert second.content == first.content
        etag = second.headers["etag"]
        assert first.headers["etag"] == etag
        assert second.headers["cache-control"].startswith("private, max-age=")
        again = await persisted_get(client, PROFILE, {"if-none-match": etag}, email=email)
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        other = await persisted_get(client, PROFILE, {"if-none-match": '"x"'}, email=email)
        assert other.status_code == 200
        assert other.content == first.content
        # A POST by the hash alone is served from it too.
        post = await client.post(
            "/graphql", json={"extensions": _extensions(PROFILE), "variables": {"email": email}}
        )
        assert hit(post)
        assert post.content == first.content


async def test_every_hit_is_audited(two: tuple[Starlette, Starlette]) -> None:
    app, _ = two
    customer_id, email = await new_customer(app)
    audit = services_of(app).audit
    async with api_client(app) as client:
        for _ in range(3):
            await persisted_get(client, PROFILE, email=email)
        await audit.flush()
        body = await gql(
            client,
            "query($id: ID!) { auditLog(customerId: $id) { action operation } }",
            id=customer_id,
        )
    reads = [e for e in body["auditLog"] if e["action"] == "read"]
    # The registration's run, then three GETs served from the cache: each one a read.
    assert len(reads) == 4, body
    assert {e["operation"] for e in reads} == {"query:customer"}


def _writes() -> dict[str, str]:
    return {
        "upsert": "mutation($email: String!, $name: String!) { upsertCustomer(input: "
        "{email: $email, firstName: $name}) { id } }",
        "consent": "mutation($id: ID!) { setConsent(customerId: $id, purpose: EMAIL_MARKETING, "
        "granted: true) { granted } }",
        "erase": "mutation($id: ID!) { forgetCustomer(id: $id) { customerId } }",
        "invalidate": "mutation($id: ID!) { invalidateCustomer(id: $id) }",
    }


async def _write(app: Starlette, how: str, customer_id: str, email: str, name: str) -> None:
    """Change the customer through one write path, on ``app``."""
    async with api_client(app) as writer:
        if how == "upsert":
            await gql(writer, _writes()["upsert"], email=email, name=name)
        elif how in {"consent", "erase", "invalidate"}:
            await gql(writer, _writes()[how], id=customer_id)
        elif how == "merge":
            other, _ = await new_customer(app)
            await gql(
                writer,
                "mutation($into: ID!, $from: ID!) { mergeCustomers(into: $into, from: $from, "
                'reason: "test") { id } }',
                into=other,
                **{"from": customer_id},
            )
        elif how == "webhook":
            shop_id = int(hashlib.sha256(email.encode()).hexdigest()[:10], 16)
            response = await writer.post(
                **shopify_request({"id": shop_id, "email": email, "first_name": name})
            )
            assert response.status_code < 300, response.text
        else:  # pragma: no cover
            raise AssertionError(how)


@pytest.mark.parametrize("how", ["upsert", "consent", "erase", "merge", "webhook", "invalidate"])
async def test_a_write_on_one_instance_drops_the_answer_on_the_other(
    two: tuple[Starlette, Starlette], how: str
) -> None:
    reader_app, writer_app = two
    customer_id, email = await new_customer(reader_app)
    async with api_client(reader_app) as reader:
        await persisted_get(reader, PROFILE, email=email)
        assert hit(await persisted_get(reader, PROFILE, email=email))
        await _write(writer_app, how, customer_id, email, "Changed")
        after = await persisted_get(reader, PROFILE, email=email)
        assert not hit(after)
        assert after.json() == await fresh(reader, PROFILE, email=email)


async def test_a_key_without_a_scope_never_gets_the_answer_of_one_with_it(
    two: tuple[Starlette, Starlette],
) -> None:
    app, _ = two
    _, email = await new_customer(app)
    async with api_client(app) as admin, api_client(app, Scope.PROFILES_WRITE) as writer:
        full = await persisted_get(admin, PROFILE, email=email)
        assert hit(await persisted_get(admin, PROFILE, email=email))
        narrow = await persisted_get(writer, PROFILE, email=email)
        assert not hit(narrow)
        assert narrow.content != full.content
        assert "FORBIDDEN" in narrow.text


async def test_an_answer_with_errors_is_never_stored(two: tuple[Starlette, Starlette]) -> None:
    app, _ = two
    async with api_client(app) as client:
        query = "query($id: ID!) { customer(id: $id) { id } }"
        for _ in range(2):
            response = await persisted_get(client, query, id="not-a-uuid")
            assert "errors" in response.json()
            assert not hit(response)


async def test_redis_down_still_answers(database_url: str) -> None:
    settings = load_settings(database_url=database_url, cache_url="redis://127.0.0.1:9/0")
    app = realtime_app(settings)
    async with lifespan(app):
        _, email = await new_customer(app)
        async with api_client(app) as client:
            for _ in range(3):
                response = await persisted_get(client, PROFILE, email=email)
                assert response.status_code == 200
                assert response.json()["data"]["customer"]["email"] == email
                assert not hit(response)


async def test_in_memory_a_write_drops_the_answer_in_the_same_process(database_url: str) -> None:
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    async with lifespan(app):
        customer_id, email = await new_customer(app)
        async with api_client(app) as client:
            await persisted_get(client, PROFILE, email=email)
            assert hit(await persisted_get(client, PROFILE, email=email))
            await _write(app, "consent", customer_id, email, "x")
            after = await persisted_get(client, PROFILE, email=email)
            assert not hit(after)
            assert after.json() == await fresh(client, PROFILE, email=email)


_STEP = st.one_of(
    st.tuples(st.just("read"), st.integers(0, 1)),
    st.tuples(st.just("write"), st.integers(0, 1), st.sampled_from(["upsert", "webhook"])),
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(_STEP, min_size=2, max_size=8))
async def test_no_stored_answer_outlives_a_write_to_a_customer_it_holds(
    two: tuple[Starlette, Starlette], steps: list[tuple[Any, ...]]
) -> None:
    apps = list(two)
    email = unique_email("rc")
    keys = [await issue_key(app) for app in apps]
    clients = [
        httpx.AsyncClient(
            transport=asgi(app), base_url="http://gw", headers={"authorization": f"Bearer {key}"}
        )
        for app, key in zip(apps, keys, strict=True)
    ]
    try:
        await gql(clients[0], _writes()["upsert"], email=email, name="n0")
        for number, step in enumerate(steps):
            if step[0] == "write":
                await _write(apps[step[1]], step[2], "", email, f"n{number + 1}")
                continue
            client = clients[step[1]]
            answer = await persisted_get(client, PROFILE, email=email)
            assert answer.json() == await fresh(client, PROFILE, email=email), steps
    finally:
        for client in clients:
            await client.aclose()


async def test_persisted_get_answers_vary_by_key_and_media_type(
    two: tuple[Starlette, Starlette],
) -> None:
    app, _ = two
    _, email = await new_customer(app)
    async with api_client(app) as client:
        miss = await persisted_get(client, PROFILE, email=email)
        again = await persisted_get(client, PROFILE, email=email)
    assert hit(again)
    for response in (miss, again):
        assert response.headers["cache-control"].startswith("private")
        varies = {h.strip().lower() for h in response.headers["vary"].split(",")}
        assert {"authorization", "x-api-key", "accept"} <= varies


@pytest.mark.parametrize(
    "selection",
    ["sources { upstream status ageSeconds }", "scores { __typename }"],
    ids=["sources", "scores"],
)
async def test_an_answer_selecting_what_no_write_drops_is_never_stored(
    two: tuple[Starlette, Starlette], selection: str
) -> None:
    """``sources`` is the run's own status and age; ``scores`` a scores build rewrites."""
    app, _ = two
    _, email = await new_customer(app)
    query = f"query Selected($email: String!) {{ customer(email: $email) {{ id {selection} }} }}"
    async with api_client(app) as client:
        for _ in range(3):
            response = await persisted_get(client, query, email=email)
            assert "errors" not in response.json(), response.text
            assert not hit(response)


async def test_an_answer_dies_with_the_cached_profile_it_read(database_url: str) -> None:
    """A profile cached ``ttl`` ago at most is served no longer: an answer holding it
    may not outlive it (a write the gateway never heard of shows by then)."""
    ttl = 3.0
    async with clean_redis(REDIS_URL) as url:
        settings = load_settings(database_url=database_url, cache_url=url, profile_cache_ttl_s=ttl)
        app = realtime_app(settings)
        async with lifespan(app):
            for _attempt in range(3):
                _, email = await new_customer(app)
                async with api_client(app) as client:
                    await fresh(client, PROFILE, email=email)  # the profile is cached now
                    cached_by = time.time()
                    await asyncio.sleep(ttl / 2)
                    await persisted_get(client, PROFILE, email=email)  # stored, from the copy
                    stored = await persisted_get(client, PROFILE, email=email)
                    assert hit(stored)
                    left = cached_by + ttl - time.time()
                    if left <= 0 or _max_age(stored) > left:
                        # A loaded machine (CI) held this past the copy's life, or its
                        # read of the copy timed out: the answer was built from a profile
                        # read again (its max-age says so), and may live on. Again.
                        continue
                    await asyncio.sleep(max(0.0, cached_by + ttl + 0.2 - time.time()))
                    assert not hit(await persisted_get(client, PROFILE, email=email))
                    return
            pytest.fail("three attempts each took longer than the profile's cache life")


async def test_variables_the_operation_does_not_declare_never_make_a_stored_answer(
    two: tuple[Starlette, Starlette],
) -> None:
    app, _ = two
    _, email = await new_customer(app)
    async with api_client(app) as client:
        for number in range(3):
            extra = await persisted_get(client, PROFILE, email=email, unused=number)
            assert extra.status_code == 200
            assert not hit(await persisted_get(client, PROFILE, email=email, unused=number))
        await persisted_get(client, PROFILE, email=email)
        assert hit(await persisted_get(client, PROFILE, email=email))


async def test_an_answer_larger_than_the_limit_is_not_stored(database_url: str) -> None:
    async with clean_redis(REDIS_URL) as url:
        settings = load_settings(
            database_url=database_url, cache_url=url, response_cache_max_answer_bytes=64
        )
        app = realtime_app(settings)
        async with lifespan(app):
            _, email = await new_customer(app)
            async with api_client(app) as client:
                for _ in range(3):
                    response = await persisted_get(client, PROFILE, email=email)
                    assert response.json()["data"]["customer"]["email"] == email
                    assert not hit(response)


async def test_a_persisted_get_url_is_parsed_once(two: tuple[Starlette, Starlette]) -> None:
    """The middleware that serves stored answers hands the view its verdict on every GET
    it looked at (by the hash alone, with the document too, or no persisted query): the
    view keeps no second memo of the same URLs."""
    app, _ = two
    view = next(r.app for r in app.routes if isinstance(r, Route) and r.path == "/graphql")
    assert isinstance(view, GatewayGraphQL)
    _, email = await new_customer(app)
    params = {
        "query": PROFILE,
        "extensions": json.dumps(_extensions(PROFILE)),
        "variables": json.dumps({"email": email}),
    }
    async with api_client(app) as client:
        for _ in range(2):
            with_document = await client.get("/graphql", params=params)
            assert with_document.json()["data"]["customer"]["email"] == email
            assert not hit(with_document)  # a document sent is run (checked against its hash)
        assert hit(await persisted_get(client, PROFILE, email=email))
        plain = await client.get("/graphql", params={"query": "{ __typename }"})
        assert plain.json() == {"data": {"__typename": "Query"}}
    assert len(view._persisted._kept) == 0

"""A read that drops its cached profile because a write overtook it does not count as a
write itself: two instances missing on one customer around a write used to drop each
other's copy (each drop touched the customer's tags, which every read whose ticket came
before it then took for a write), so the profile never stayed cached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette

from tests.conftest import api_client, unique_email
from tests.in_process import services_of
from tests.resolvers.test_response_cache import gql, two  # noqa: F401  (a fixture)

NAMED = (
    "mutation($email: String!, $name: String!) "
    "{ upsertCustomer(input: {email: $email, firstName: $name}) { id } }"
)
SEQ = "gw:rc:v1:seq"  # the response cache's invalidation counter


def _paused(monkeypatch: pytest.MonkeyPatch, app: Starlette) -> tuple[asyncio.Event, asyncio.Event]:
    """The next profile read of ``app`` by e-mail waits, its rows read, until released."""
    store = services_of(app).customers.store
    read, go = asyncio.Event(), asyncio.Event()
    original = store.get_many_by_email

    async def paused(emails: Any) -> Any:
        found = await original(emails)
        monkeypatch.setattr(store, "get_many_by_email", original)
        read.set()
        await go.wait()
        return found

    monkeypatch.setattr(store, "get_many_by_email", paused)
    return read, go


async def test_a_read_dropping_its_overtaken_copy_does_not_overtake_another_read(
    two: tuple[Starlette, Starlette],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reader A (first instance) reads before a write W (second instance) and caches
    after W's delete: A drops its copy. Reader B (second instance) reads after W and
    caches after A's drop: B's copy is fresh and stays, and A's drop moves no counter."""
    first, second = two
    email = unique_email("cascade")
    guard = services_of(first).redis
    assert guard is not None
    redis = guard.client
    async with api_client(second) as writer:
        await gql(writer, NAMED, email=email, name="Before")
        a_read, a_go = _paused(monkeypatch, first)
        a = asyncio.ensure_future(services_of(first).customers.get_by_email(email))
        await asyncio.wait_for(a_read.wait(), 30)
        await gql(writer, NAMED, email=email, name="After")  # W
        after_write = int(await redis.get(SEQ) or 0)
        b_read, b_go = _paused(monkeypatch, second)
        b = asyncio.ensure_future(services_of(second).customers.get_by_email(email))
        await asyncio.wait_for(b_read.wait(), 30)
        a_go.set()
        read_by_a = await a  # cached after W's delete, found overtaken, dropped
        b_go.set()
        read_by_b = await b
    assert read_by_a is not None
    assert read_by_a.first_name == "Before"
    assert read_by_b is not None
    assert read_by_b.first_name == "After"
    # A's drop is no write: the counter stands where W left it (it moved by 2: A's drop
    # invalidated, then B took that for a write, dropped its fresh copy, invalidated).
    assert int(await redis.get(SEQ) or 0) == after_write
    # B's copy stayed: both instances now answer from the cache, the fresh profile.
    for app in (first, second):
        customers = services_of(app).customers

        async def no_database(emails: Any) -> Any:
            raise AssertionError(f"read from the database, not the cache: {emails}")

        monkeypatch.setattr(customers.store, "get_many_by_email", no_database)
        cached = await customers.get_by_email(email)
        assert cached is not None
        assert cached.first_name == "After"

"""An upstream answer fetched on one instance while a write to its customer commits on
another (a webhook) is not cached past that write: fetched before it and cached after
its DEL, it would be served, and every whole answer built on it stored, for its life."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette

from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.settings import load_settings
from gateway.upstreams.cache import Entry
from gateway.upstreams.response_cache import ResponseCache, id_tag
from tests.conftest import FAST, api_client, clean_redis, redis_database_url
from tests.in_process import lifespan, services_of
from tests.ingest.webhook_requests import hubspot_change, hubspot_request, realtime_app
from tests.resolvers.test_response_cache import fresh, persisted_get, two  # noqa: F401

SEQ = "gw:rc:v1:seq"  # the response cache's invalidation counter

READ = "query Stage($email: String!) { customer(email: $email) { email lifecycleStage } }"


async def test_a_crm_answer_fetched_across_a_webhook_elsewhere_is_not_cached_stale(
    samples: SampleUpstreams, seeded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples.reset()
    upstreams = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    hubspot = samples.hubspot
    person = hubspot.people[11]
    changed = "evangelist" if person.lifecycle_stage != "evangelist" else "customer"
    async with clean_redis(redis_database_url(6)) as cache_url:
        settings = load_settings(database_url=seeded_url, cache_url=cache_url)
        reader_app = realtime_app(settings, upstreams=upstreams)
        writer_app = realtime_app(settings, upstreams=upstreams)
        async with lifespan(reader_app), lifespan(writer_app):
            crm: Any = services_of(reader_app).federation.adapters["hubspot"]
            read, go = asyncio.Event(), asyncio.Event()
            batch_read = crm._batch_read

            async def paused(*args: Any, **kwargs: Any) -> Any:
                found = await batch_read(*args, **kwargs)
                read.set()  # answered before the change, cached after the webhook's DEL
                await go.wait()
                return found

            monkeypatch.setattr(crm, "_batch_read", paused)
            try:
                async with api_client(reader_app) as reader, api_client(writer_app) as writer:
                    racing = asyncio.ensure_future(persisted_get(reader, READ, email=person.email))
                    await asyncio.wait_for(read.wait(), 30)
                    monkeypatch.setattr(crm, "_batch_read", batch_read)
                    touched = dataclasses.replace(
                        person,
                        lifecycle_stage=changed,
                        updated_at=datetime.now(UTC) + timedelta(seconds=1),
                    )
                    # The sample answers batch reads from its indexes of the people.
                    monkeypatch.setitem(hubspot._by_id, person.hubspot_id, touched)
                    monkeypatch.setitem(hubspot._by_email, person.email.lower(), touched)
                    change = hubspot_change(int(person.hubspot_id), "lifecyclestage", changed)
                    response = await writer.post(**hubspot_request([change]))
                    assert response.status_code < 300, response.text
                    go.set()
                    await racing
                    for client in (reader, writer):
                        after = await persisted_get(client, READ, email=person.email)
                        assert after.json()["data"]["customer"]["lifecycleStage"] == changed, (
                            after.text
                        )
                        assert after.json() == await fresh(client, READ, email=person.email)
            finally:
                go.set()
                samples.reset()


async def test_a_fetch_dropping_its_overtaken_answer_does_not_overtake_another(
    two: tuple[Starlette, Starlette],  # noqa: F811
) -> None:
    """Fetch A (first instance) took its ticket before a write W, fetch B (second) after:
    A's answer is dropped, B's stays, and A's drop moves no counter (it invalidated the
    customer twice, and B then took that for a write and dropped its fresh answer)."""
    first, second = two
    a_cache, b_cache = services_of(first).federation.cache, services_of(second).federation.cache
    guard = services_of(first).redis
    assert guard is not None
    customer = str(uuid.uuid4())
    a_ticket = await a_cache.ticket(60)
    await services_of(second).federation.invalidate_many([customer])  # W
    after_write = await guard.client.get(SEQ)
    b_ticket = await b_cache.ticket(60)
    now = datetime.now(UTC)
    await a_cache.keep_fetched("crm", {customer: Entry("before", now)}, 60, a_ticket)
    assert await a_cache.get_many("crm", [customer]) == {}
    await b_cache.keep_fetched("crm", {customer: Entry("after", now)}, 60, b_ticket)
    assert await guard.client.get(SEQ) == after_write
    assert (await a_cache.get_many("crm", [customer]))[customer].value == "after"


async def test_a_retraction_drops_the_answers_ticketed_before_it_and_is_no_write(
    two: tuple[Starlette, Starlette],  # noqa: F811
) -> None:
    """What an overtaken read retracts: every answer whose ticket came before (stored or
    not yet), never one ticketed after, and no reader's ``touched_since`` sees it."""
    first, _ = two
    tag = id_tag(uuid.uuid4())
    for responses in (services_of(first).federation.cache.responses, ResponseCache(None)):
        reader = await responses.ticket()
        early, late = await responses.lookup("stored"), await responses.lookup("late")
        assert reader is not None
        assert early.ticket is not None
        assert late.ticket is not None
        assert await responses.store("stored", early.ticket, b"on the copy", [tag], 60)
        await responses.retract([tag])
        assert (await responses.lookup("stored")).hit is None
        assert not await responses.store("late", late.ticket, b"on the copy", [tag], 60)
        after = await responses.lookup("after")
        assert after.ticket is not None
        assert await responses.store("after", after.ticket, b"fresh", [tag], 60)
        assert (await responses.lookup("after")).hit is not None
        assert await responses.touched_since(reader, [tag]) == set()

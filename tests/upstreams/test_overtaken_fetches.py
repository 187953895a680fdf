"""An upstream answer fetched on one instance while a write to its customer commits on
another (a webhook) is not cached past that write: fetched before it and cached after
its DEL, it would be served, and every whole answer built on it stored, for its life."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.settings import load_settings
from tests.conftest import FAST, api_client, clean_redis, redis_database_url
from tests.in_process import lifespan, services_of
from tests.ingest.webhook_requests import hubspot_change, hubspot_request, realtime_app
from tests.resolvers.test_response_cache import fresh, persisted_get

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

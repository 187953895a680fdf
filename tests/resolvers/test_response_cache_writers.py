"""Writers outside a serving gateway drop the stored answers holding what they change,
on every instance sharing Redis: ``gateway import`` (a process of its own, as an
operator runs it) and ``gateway sync`` (through the hook its command installs). And
writes that change a customer's answer without writing the customer (an experiment
saved) find no stored answer to outlive them: such fields are never stored."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLObjectType, get_named_type
from starlette.applications import Starlette

from adapters.registry import aclose_adapters, build_adapters
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import example_upstreams, sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.ingest.committed import CommittedBatches
from gateway.ingest.streams.customer_updates import CustomerUpdates
from gateway.ingest.streams.event_batches import CustomerTouch
from gateway.ingest.streams.running import ConsumerParts
from gateway.ingest.sync import sync
from gateway.settings import load_settings
from resolvers.graphql import storable_documents
from resolvers.graphql.schema import build_schema
from tests.access.instances import new_customer
from tests.conftest import FAST, REPO, api_client, clean_redis, redis_database_url, unique_email
from tests.in_process import lifespan, services_of
from tests.ingest.webhook_requests import realtime_app
from tests.resolvers.test_response_cache import PROFILE, fresh, gql, hit, persisted_get

REDIS_URL = redis_database_url(11)


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[tuple[Starlette, str]]:
    """A running gateway on a shared Redis, and that Redis's URL."""
    async with clean_redis(REDIS_URL) as url:
        app = realtime_app(load_settings(database_url=database_url, cache_url=url))
        async with lifespan(app):
            yield app, url


async def _import(path: Path, database_url: str, cache_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(REPO), GATEWAY_DATABASE_URL=database_url, GATEWAY_CACHE_URL=cache_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "gateway", "import", str(path), "--source", "crm_export"),
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert await process.wait() == 0, out.decode()
    return out.decode()


async def test_an_import_drops_the_answers_holding_the_customers_it_changed(
    gateway: tuple[Starlette, str], database_url: str, tmp_path: Path
) -> None:
    app, cache_url = gateway
    email = unique_email("import")
    people = tmp_path / "people.csv"
    people.write_text(f"external_id,email,first_name\n1,{email},Ada\n")
    await _import(people, database_url, cache_url)
    async with api_client(app) as client:
        await persisted_get(client, PROFILE, email=email)
        assert hit(await persisted_get(client, PROFILE, email=email))
        people.write_text(f"external_id,email,first_name\n1,{email},Changed\n")
        await _import(people, database_url, cache_url)
        after = await persisted_get(client, PROFILE, email=email)
        assert not hit(after)
        assert after.json() == await fresh(client, PROFILE, email=email)
        assert after.json()["data"]["customer"]["firstName"] == "Changed"


async def test_an_import_naming_a_customer_by_id_alone_drops_their_profile_by_email(
    gateway: tuple[Starlette, str], database_url: str, tmp_path: Path
) -> None:
    """A record without the customer's address (a CRM row of its id and a name): the
    profile cached under the address stayed the old one for profile_cache_ttl_s."""
    app, cache_url = gateway
    email = unique_email("import")
    people = tmp_path / "people.csv"
    people.write_text(f"external_id,email,first_name\n1,{email},Ada\n")
    await _import(people, database_url, cache_url)
    async with api_client(app) as client:
        before = await fresh(client, PROFILE, email=email)  # cached by its address
        assert before["data"]["customer"]["firstName"] == "Ada", before
        people.write_text("external_id,first_name\n1,Changed\n")
        await _import(people, database_url, cache_url)
        after = await fresh(client, PROFILE, email=email)
        assert after["data"]["customer"]["firstName"] == "Changed", after


async def test_a_sync_drops_the_answers_holding_the_customers_it_changed(
    gateway: tuple[Starlette, str], database_url: str, samples: SampleUpstreams
) -> None:
    app, cache_url = gateway
    samples.reset()
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    adapters = build_adapters(config)
    # The caches as ``gateway sync`` opens them: another process's, sharing Redis.
    settings = load_settings(database_url=database_url, cache_url=cache_url)
    parts = ConsumerParts.open(settings, config)
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    after_commit = CommittedBatches(parts.federation, parts.customers)
    hubspot = samples.hubspot
    original = hubspot.people
    try:
        await sync(sessions, adapters, ["hubspot"], after_commit=after_commit)
        person = original[7]
        async with api_client(app) as client:
            await persisted_get(client, PROFILE, email=person.email)
            assert hit(await persisted_get(client, PROFILE, email=person.email))
            touched = dataclasses.replace(
                person, first_name="Zebedee", updated_at=datetime.now(UTC) + timedelta(seconds=1)
            )
            hubspot.people = [touched if p is person else p for p in original]
            await sync(sessions, adapters, ["hubspot"], after_commit=after_commit)
            after = await persisted_get(client, PROFILE, email=person.email)
            assert not hit(after)
            assert after.json()["data"]["customer"]["firstName"] == "Zebedee"
    finally:
        hubspot.people = original
        samples.reset()
        await parts.aclose()
        await aclose_adapters(adapters)
        await engine.dispose()


@pytest.mark.parametrize("identify", [False, True], ids=["track", "identify"])
async def test_a_stream_batch_drops_the_answers_holding_its_customers(
    gateway: tuple[Starlette, str], database_url: str, identify: bool
) -> None:
    """A committed stream batch, as ``gateway stream`` (another process sharing Redis)
    announces it: behaviour alone (track, page) and an identify both drop the stored
    answers of their customers."""
    app, cache_url = gateway
    customer_id, email = await new_customer(app)
    parts = ConsumerParts.open(
        load_settings(database_url=database_url, cache_url=cache_url),
        sample_upstreams_config(
            dict.fromkeys(example_upstreams()["upstreams"], "http://127.0.0.1:9")
        ),
    )
    try:
        updates = CustomerUpdates(parts.federation, parts.customers, parts.notifications)
        async with api_client(app) as client:
            await persisted_get(client, PROFILE, email=email)
            assert hit(await persisted_get(client, PROFILE, email=email))
            touch = CustomerTouch(fields={"recent_events"}, profile_changed=identify)
            await updates({uuid.UUID(customer_id): touch})
            after = await persisted_get(client, PROFILE, email=email)
            assert not hit(after)
            assert after.json() == await fresh(client, PROFILE, email=email)
    finally:
        await parts.aclose()


EXPERIMENTS = (
    "query Variant($id: ID!) { customer(id: $id) { id experiments { experiment variant } } }"
)
SAVE_EXPERIMENT = (
    "mutation($name: String!, $start: DateTime!, $end: DateTime!) { saveExperiment(name: $name, "
    'variants: [{name: "a", strategy: MODEL}, {name: "b", strategy: NONE}], start: $start, '
    "end: $end) { name } }"
)


async def test_no_stored_answer_outlives_an_experiment_saved_on_another_instance(
    tmp_path: Path,
) -> None:
    """``experiments`` is the running experiment's, which no customer write announces:
    an answer selecting it, stored, would show the old experiment (or none) for its
    whole life after ``saveExperiment``. A database of its own: a running experiment
    would change what the session's other tests are served."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    await asyncio.to_thread(upgrade, url)  # it runs a loop of its own
    async with clean_redis(REDIS_URL) as cache_url:
        settings = load_settings(database_url=url, cache_url=cache_url)
        storing, saving = realtime_app(settings), realtime_app(settings)
        async with lifespan(storing), lifespan(saving):
            customer_id, _ = await new_customer(storing)
            async with api_client(storing) as first, api_client(saving) as second:
                for _ in range(2):
                    before = await persisted_get(first, EXPERIMENTS, id=customer_id)
                    assert before.json()["data"]["customer"]["experiments"] == []
                now = datetime.now(UTC)
                await gql(
                    second,
                    SAVE_EXPERIMENT,
                    name="rc-experiment",
                    start=(now - timedelta(minutes=1)).isoformat(),
                    end=(now + timedelta(days=1)).isoformat(),
                )
                after = await persisted_get(second, EXPERIMENTS, id=customer_id)
                assert not hit(after)
                assert after.json() == await fresh(second, EXPERIMENTS, id=customer_id)
                assert after.json()["data"]["customer"]["experiments"], after.text


# Every field a stored answer may reach, by type: each one the customer's own, dropped
# with its answers by every write path that changes it. A new field of one of these
# types that shares a name with a listed one would be stored unasked: this fails then.
REVIEWED = {
    "Customer": "id email phone firstName lastName locale createdAt updatedAt identities "
    "attributes identityLinks consentHistory lifecycleStage ownerId company jobTitle city "
    "country dateOfBirth consent consents suppressed orders lifetimeValue orderCount "
    "lastOrderAt recentEvents engagement cart",
    "Identity": "source externalId",
    "ProfileAttribute": "name value source observedAt golden",
    "IdentityLink": "source externalId rule score reason matchedSource matchedExternalId createdAt",
    "ConsentStatement": "purpose granted source recordedAt",
    "Consent": "emailMarketing personalisation analytics",
    "Order": "id name createdAt financialStatus fulfillmentStatus totalPrice lineItems",
    "Money": "amount currency",
    "LineItem": "productId title quantity price",
    "Event": "id type name occurredAt sessionId properties",
    "Engagement": "sessions30d pageViews30d lastSeenAt emailOpens30d emailClicks30d "
    "lastEmailOpenAt",
    "Cart": "items subtotal updatedAt",
    "CartItem": "productId title quantity price",
}


def test_every_field_a_stored_answer_may_select_is_one_a_customer_write_drops() -> None:
    """Stored answers select only ``STORABLE_FIELDS`` (an allow list: a field added to
    the schema is refused until classified), and what those names reach in the schema
    is exactly what was reviewed."""
    schema = build_schema()._schema
    storable = storable_documents.STORABLE_FIELDS
    reached: dict[str, set[str]] = {}

    def walk(kind: Any) -> None:
        if not isinstance(kind, GraphQLObjectType) or kind.name in reached:
            return
        reached[kind.name] = {n for n in kind.fields if n in storable}
        for name in sorted(reached[kind.name]):
            walk(get_named_type(kind.fields[name].type))

    walk(schema.type_map["Customer"])
    assert reached == {kind: set(names.split()) for kind, names in REVIEWED.items()}
    for name in ("experiments", "segments", "scores", "recommendations", "render", "sources"):
        query = f"{{ customer(id: 1) {{ id {name} {{ __typename }} }} }}"
        assert storable_documents.storable_document(query, None) is None, name
    assert (
        storable_documents.storable_document("{ customer(id: 1) { id email } }", None) is not None
    )


NAMED = (
    "mutation($email: String!, $name: String!) "
    "{ upsertCustomer(input: {email: $email, firstName: $name}) { id } }"
)


async def test_a_profile_read_across_a_write_on_another_instance_is_not_cached_stale(
    gateway: tuple[Starlette, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance reads a profile, another commits a write to it and forgets it, then
    the first caches what it read: that copy is dropped (and the answers built on it),
    not served for the profile cache's life to every instance and every answer."""
    reader_app, cache_url = gateway
    writer_app = realtime_app(load_settings(database_url=database_url, cache_url=cache_url))
    async with lifespan(writer_app):
        email = unique_email("race")
        async with api_client(writer_app) as writer, api_client(reader_app) as reader:
            await gql(writer, NAMED, email=email, name="Before")
            store = services_of(reader_app).customers.store
            read, go = asyncio.Event(), asyncio.Event()
            original = store.get_many_by_email

            async def paused(emails: Any) -> Any:
                found = await original(emails)
                read.set()  # read before the write commits, cached after its forget
                await go.wait()
                return found

            monkeypatch.setattr(store, "get_many_by_email", paused)
            racing = asyncio.ensure_future(persisted_get(reader, PROFILE, email=email))
            await asyncio.wait_for(read.wait(), 30)
            monkeypatch.setattr(store, "get_many_by_email", original)
            await gql(writer, NAMED, email=email, name="After")
            go.set()
            await racing
            for client in (reader, writer):
                after = await persisted_get(client, PROFILE, email=email)
                assert after.json()["data"]["customer"]["firstName"] == "After", after.text
                assert after.json() == await fresh(client, PROFILE, email=email)

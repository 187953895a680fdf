"""Consent, erasure, subject access and the audit log, as a customer and an operator
see them: behaviour is served only with personalisation consent; a forgotten customer
is gone from every read and cache and is not brought back by a webhook, a sync or the
API; an export holds everything stored; the audit log names keys, never people."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from starlette.applications import Starlette

from adapters.registry import aclose_adapters, build_adapters
from demo.people.catalogue import catalogue
from demo.people.population import Person
from demo.recommendation_history import store_demo_history
from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import Scope
from gateway.db.access_models import Tombstone
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import AuditEntry, Customer, Event
from gateway.ingest.sync import sync
from gateway.privacy.erasure import Tombstones
from gateway.recommendations.store import RecommendationStore
from gateway.recommendations.training.builder import build
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import (
    FAST,
    bearer,
    clean_redis,
    create_postgres_database,
    drop_postgres_database,
    redis_database_url,
    unique_email,
)
from tests.gql_client import error_codes, gql
from tests.in_process import asgi, lifespan, services_of
from tests.ingest.test_webhooks import (
    SECRETS,
    hubspot_change,
    hubspot_request,
    segment_request,
    shopify_request,
)

REDIS_URL = redis_database_url(15)
BASE = "http://gw"
BEHAVIOUR = (
    "query($email: String!) { customer(email: $email) { id consent { personalisation } "
    "recentEvents { type } cart { subtotal } engagement { pageViews30d sessions30d } } }"
)
CONSENTS = (
    "query($id: ID!) { customer(id: $id) { suppressed consent { emailMarketing "
    "personalisation analytics } consents { purpose granted source recordedAt } } }"
)
SET_CONSENT = (
    "mutation($id: ID!, $purpose: ConsentPurpose!, $granted: Boolean!, $source: String!) "
    "{ setConsent(customerId: $id, purpose: $purpose, granted: $granted, source: $source) "
    "{ purpose granted source recordedAt } }"
)
FORGET = (
    "mutation($id: ID!) { forgetCustomer(id: $id) "
    "{ customerId identities attributes events consents tombstones } }"
)
PERSONAL = "{% if recent_events.size > 0 %}personal{% else %}generic{% endif %}"


# --- a seeded database of this module's own (erasure deletes seeded people) ---------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def privacy_url(
    request: pytest.FixtureRequest,
    samples: SampleUpstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('privacy') / 'g.db'}"
    else:
        url = create_postgres_database("gateway_privacy")
    upgrade(url)

    async def populate() -> None:
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        await seed(sessions, samples.people)
        # Their history as events, and a built recommendation model on it.
        await store_demo_history(sessions, samples.people)
        categories = {str(p.id): p.category for p in catalogue().products}
        await build(RecommendationStore(sessions), categories=categories)
        await engine.dispose()

    asyncio.run(populate())
    yield url
    if request.param == "postgres":
        drop_postgres_database(url)


class Instance:
    """One running gateway and a client holding a key whose name is known."""

    def __init__(self, app: Starlette, http: httpx.AsyncClient, key_name: str) -> None:
        self.app, self.http, self.key_name = app, http, key_name

    async def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        return await gql(self.http, query, **variables)


@pytest.fixture
def instance(samples: SampleUpstreams, privacy_url: str) -> Iterator[Any]:
    samples.reset()

    @asynccontextmanager
    async def start(
        cache_url: str = "memory://", scopes: tuple[Scope, ...] = (Scope.ADMIN,)
    ) -> AsyncIterator[Instance]:
        config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
        settings = load_settings(database_url=privacy_url, cache_url=cache_url)
        app = create_app(
            settings.model_copy(update={"webhook_secrets": dict(SECRETS)}), upstreams=config
        )
        async with lifespan(app):
            name = f"privacy-{uuid.uuid4().hex[:10]}"
            key, _ = await services_of(app).api_keys.create(name, scopes, 10**6)
            async with httpx.AsyncClient(
                transport=asgi(app), base_url=BASE, headers=bearer(key)
            ) as http:
                yield Instance(app, http, name)

    yield start
    samples.reset()


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


# Each test takes people of its own from the seeded population, so tests that change
# or erase someone never meet: indices are handed out once per module and backend.
_TAKEN: dict[str, set[int]] = {}


def _person(
    samples: SampleUpstreams, url: str, *, real_domain: bool = False, **wanted: bool
) -> Person:
    """A seeded person with these consents; ``real_domain``: an address the identity
    rules take as one (not a placeholder such as ``@inbox.example``)."""
    taken = _TAKEN.setdefault(url, set())
    for index, person in enumerate(samples.people):
        if index in taken or index < 50:  # the first 50 are other suites' favourites
            continue
        if real_domain and person.email.endswith(".example"):
            continue
        if all(getattr(person, f"{name}_consent") == value for name, value in wanted.items()):
            taken.add(index)
            return person
    raise AssertionError(f"no seeded person left with {wanted}")


async def _with_events(gw: Instance, samples: SampleUpstreams, url: str) -> tuple[Person, Any]:
    """A seeded person with personalisation consent and some recent events."""
    for _ in range(20):
        person = _person(samples, url, personalisation=True)
        found = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
        if found["recentEvents"]:
            return person, found
    raise AssertionError("no consenting seeded person has events")


async def _count(url: str, model: type) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        await engine.dispose()


# --- consent --------------------------------------------------------------------------------


async def test_behaviour_is_served_only_with_personalisation_consent(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    async with instance() as gw:
        refused = _person(samples, privacy_url, personalisation=False)
        body = await gw.gql(BEHAVIOUR, email=refused.email)
        _, consenting = await _with_events(gw, samples, privacy_url)
    assert "errors" not in body, body
    without = body["data"]["customer"]
    assert without["consent"] == {"personalisation": False}
    assert without["recentEvents"] == []
    assert without["cart"] is None
    assert without["engagement"] == {"pageViews30d": 0, "sessions30d": 0}
    assert consenting["consent"] == {"personalisation": True}
    assert consenting["recentEvents"]


async def test_set_consent_takes_effect_on_the_next_read(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    async with instance() as gw:
        person, before = await _with_events(gw, samples, privacy_url)
        customer_id = before["id"]
        await gw.gql(BEHAVIOUR, email=person.email)  # cached now
        started = datetime.now(UTC) - timedelta(seconds=5)
        changed = await gw.gql(
            SET_CONSENT, id=customer_id, purpose="PERSONALISATION", granted=False, source="crm-form"
        )
        after = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
        statements = (await gw.gql(CONSENTS, id=customer_id))["data"]["customer"]
        await gw.gql(
            SET_CONSENT, id=customer_id, purpose="PERSONALISATION", granted=True, source="api"
        )
        again = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
    assert changed["data"]["setConsent"]["granted"] is False
    assert after["consent"] == {"personalisation": False}
    assert after["recentEvents"] == []
    assert after["cart"] is None
    assert after["engagement"] == {"pageViews30d": 0, "sessions30d": 0}
    (personalisation,) = [c for c in statements["consents"] if c["purpose"] == "PERSONALISATION"]
    assert personalisation["granted"] is False
    assert personalisation["source"] == "crm-form"
    recorded = datetime.fromisoformat(personalisation["recordedAt"])
    assert recorded.tzinfo is not None
    assert recorded >= started
    assert personalisation["recordedAt"] == changed["data"]["setConsent"]["recordedAt"]
    # Consent given again: behaviour comes back, the same as before.
    assert again["recentEvents"] == before["recentEvents"]


async def test_withdrawn_consent_stops_personalised_recommendations_at_once(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    recs = "query($id: ID!) { customer(id: $id) { recommendations(limit: 8) { id reason } } }"
    behavioural = ("because you bought ", "because you viewed ")
    async with instance() as gw:
        for _ in range(20):
            person = _person(samples, privacy_url, personalisation=True)
            found = await gw.gql(
                "query($e: String!) { customer(email: $e) { id } }", e=person.email
            )
            customer_id = found["data"]["customer"]["id"]
            before = (await gw.gql(recs, id=customer_id))["data"]["customer"]["recommendations"]
            if any(r["reason"].startswith(behavioural) for r in before):
                break
        else:
            raise AssertionError("no consenting seeded person has personal recommendations")
        await gw.gql(
            SET_CONSENT, id=customer_id, purpose="PERSONALISATION", granted=False, source="api"
        )
        after = (await gw.gql(recs, id=customer_id))["data"]["customer"]["recommendations"]
    assert after, after
    assert not [r for r in after if r["reason"].startswith(behavioural)], after


async def test_a_later_crm_edit_does_not_undo_a_withdrawal(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    """The CRM dates a whole contact, not its consent: a sales rep editing a job title
    after the customer said no through the API is not the customer saying yes."""
    async with instance() as gw:
        person, before = await _with_events(gw, samples, privacy_url)
        await gw.gql(
            SET_CONSENT, id=before["id"], purpose="PERSONALISATION", granted=False, source="api"
        )
        hubspot = samples.hubspot
        original = hubspot.people
        edited = dataclasses.replace(
            person, job_title="Head of Llamas", updated_at=datetime.now(UTC) + timedelta(seconds=1)
        )
        # A CRM edit: the sample answers reads from these (search, by id, by email).
        hubspot.people = [edited if p is person else p for p in original]
        hubspot._by_id[person.hubspot_id] = edited
        hubspot._by_email[person.email.lower()] = edited
        try:
            change = hubspot_change(int(person.hubspot_id), "jobtitle", "Head of Llamas")
            assert (await gw.http.post(**hubspot_request([change], BASE))).status_code == 200
            after = (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
            title = await gw.gql(
                "query($e: String!) { customer(email: $e) { jobTitle } }", e=person.email
            )
        finally:
            hubspot.people = original
            hubspot._by_id[person.hubspot_id] = person
            hubspot._by_email[person.email.lower()] = person
    assert title["data"]["customer"]["jobTitle"] == "Head of Llamas"  # the edit was read
    assert after["consent"] == {"personalisation": False}
    assert after["recentEvents"] == []
    assert after["cart"] is None


async def test_suppressed_follows_email_marketing_consent(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    mailable = _person(samples, privacy_url, email_marketing=True)
    unmailable = _person(samples, privacy_url, email_marketing=False)
    async with instance() as gw:
        ids = {}
        for person in (mailable, unmailable):
            found = await gw.gql(
                "query($e: String!) { customer(email: $e) { id } }", e=person.email
            )
            ids[person.email] = found["data"]["customer"]["id"]
        first = (await gw.gql(CONSENTS, id=ids[mailable.email]))["data"]["customer"]
        second = (await gw.gql(CONSENTS, id=ids[unmailable.email]))["data"]["customer"]
        await gw.gql(
            SET_CONSENT,
            id=ids[mailable.email],
            purpose="EMAIL_MARKETING",
            granted=False,
            source="x",
        )
        now_suppressed = (await gw.gql(CONSENTS, id=ids[mailable.email]))["data"]["customer"]
        await gw.gql(
            SET_CONSENT,
            id=ids[unmailable.email],
            purpose="EMAIL_MARKETING",
            granted=True,
            source="x",
        )
        now_mailable = (await gw.gql(CONSENTS, id=ids[unmailable.email]))["data"]["customer"]
    assert (first["suppressed"], first["consent"]["emailMarketing"]) == (False, True)
    assert (second["suppressed"], second["consent"]["emailMarketing"]) == (True, False)
    assert (now_suppressed["suppressed"], now_suppressed["consent"]["emailMarketing"]) == (
        True,
        False,
    )
    assert (now_mailable["suppressed"], now_mailable["consent"]["emailMarketing"]) == (False, True)


async def test_a_customer_without_any_consent_is_not_granted(instance: Any) -> None:
    async with instance() as gw:
        email = unique_email("noconsent")
        created = await gw.gql(
            "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }", e=email
        )
        customer_id = created["data"]["upsertCustomer"]["id"]
        found = (await gw.gql(CONSENTS, id=customer_id))["data"]["customer"]
        bad = await gw.gql(
            SET_CONSENT, id=str(uuid.uuid4()), purpose="ANALYTICS", granted=True, source="api"
        )
    assert found == {
        "suppressed": True,
        "consent": {"emailMarketing": None, "personalisation": None, "analytics": None},
        "consents": [],
    }
    assert error_codes(bad) == [("NOT_FOUND", ["setConsent"])]


async def test_concurrent_consent_statements_leave_one_current_row(instance: Any) -> None:
    """A preference centre submitted twice at once: both answered, one statement kept."""
    async with instance() as gw:
        created = await gw.gql(
            "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }",
            e=unique_email("twice"),
        )
        customer_id = created["data"]["upsertCustomer"]["id"]
        answers = await asyncio.gather(
            *(
                gw.gql(
                    SET_CONSENT,
                    id=customer_id,
                    purpose="EMAIL_MARKETING",
                    granted=bool(n % 2),
                    source=f"form-{n}",
                )
                for n in range(6)
            )
        )
        found = (await gw.gql(CONSENTS, id=customer_id))["data"]["customer"]
    assert all("errors" not in a for a in answers), answers
    (statement,) = found["consents"]
    last = max(answers, key=lambda a: a["data"]["setConsent"]["recordedAt"])
    assert statement["source"] == last["data"]["setConsent"]["source"]


async def test_render_takes_the_generic_branch_without_consent(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    render = (
        "query($email: String!, $t: String!) { customer(email: $email) { id render(template: $t) "
        "{ body } } }"
    )
    async with instance() as gw:
        person, found = await _with_events(gw, samples, privacy_url)
        with_consent = await gw.gql(render, email=person.email, t=PERSONAL)
        await gw.gql(
            SET_CONSENT, id=found["id"], purpose="PERSONALISATION", granted=False, source="api"
        )
        without = await gw.gql(render, email=person.email, t=PERSONAL)
        refused = _person(samples, privacy_url, personalisation=False)
        never = await gw.gql(render, email=refused.email, t=PERSONAL)
    assert with_consent["data"]["customer"]["render"]["body"] == "personal", with_consent
    assert without["data"]["customer"]["render"]["body"] == "generic", without
    assert never["data"]["customer"]["render"]["body"] == "generic", never


# --- erasure ---------------------------------------------------------------------------------


async def test_a_forgotten_customer_is_gone_and_stays_gone(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    person = _person(samples, privacy_url, real_domain=True)
    hubspot_id, shopify_id = person.hubspot_id, person.shopify_id
    async with instance() as gw:
        found = await gw.gql(BEHAVIOUR, email=person.email)  # read, and cached
        customer_id = found["data"]["customer"]["id"]
        customers = await _count(privacy_url, Customer)

        recs = {"customer_id": customer_id, "limit": 4}
        assert (await gw.http.post("/api/recommendations", json=recs)).status_code == 200
        erased = await gw.gql(FORGET, id=customer_id)
        assert "errors" not in erased, erased
        summary = erased["data"]["forgetCustomer"]
        assert summary["customerId"] == customer_id
        assert summary["identities"] >= 2
        assert summary["consents"] == 3
        assert summary["tombstones"] >= summary["identities"] + 1  # ids and the email

        by_email = await gw.gql(BEHAVIOUR, email=person.email)
        by_id = await gw.gql("query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
        by_identity = await gw.gql(
            "query($i: String!) { customer(identity: $i) { id } }", i=f"hubspot:{hubspot_id}"
        )
        assert by_email == {"data": {"customer": None}}
        assert by_id == {"data": {"customer": None}}
        assert by_identity == {"data": {"customer": None}}
        assert (await gw.http.post("/api/recommendations", json=recs)).status_code == 404

        # Replayed webhooks naming the person are acknowledged and write nothing.
        events = await _count(privacy_url, Event)
        shopify = await gw.http.post(
            **shopify_request(
                {"id": int(shopify_id), "email": person.email, "first_name": "Back"},
                topic="customers/create",
            )
        )
        by_new_shop_id = await gw.http.post(
            **shopify_request({"id": uuid.uuid4().int % 10**12 + 1, "email": person.email})
        )
        hubspot = await gw.http.post(
            **hubspot_request([hubspot_change(int(hubspot_id), "firstname", "Back")], BASE)
        )
        hubspot_by_email = await gw.http.post(
            **hubspot_request(
                [hubspot_change(uuid.uuid4().int % 10**12 + 1, "email", person.email)], BASE
            )
        )
        track = await gw.http.post(
            **segment_request(
                {
                    "type": "track",
                    "messageId": str(uuid.uuid4()),
                    "userId": person.segment_user_id,
                    "event": "Product Viewed",
                    "properties": {"sku": "A-1"},
                }
            )
        )
        replays = {
            "shopify": shopify,
            "shopify, new id": by_new_shop_id,
            "hubspot": hubspot,
            "hubspot, new id": hubspot_by_email,
            "segment track": track,
        }
        for what, response in replays.items():
            assert response.status_code == 200, (what, response.text)
            statuses = [e["status"] for e in response.json()["events"]]
            assert statuses == ["erased"], (what, person.index, response.text)
        assert await _count(privacy_url, Customer) == customers - 1
        assert await _count(privacy_url, Event) == events

        # The API will not re-create the person either.
        upsert = await gw.gql(
            'mutation($e: String!) { upsertCustomer(input: {email: $e, firstName: "Back"}) '
            "{ id } }",
            e=person.email.upper(),
        )
        assert error_codes(upsert) == [("ERASED", ["upsertCustomer"])]
        assert (await gw.gql(BEHAVIOUR, email=person.email))["data"]["customer"] is None

        # Forgetting again, or someone unknown, answers null.
        assert (await gw.gql(FORGET, id=customer_id)) == {"data": {"forgetCustomer": None}}
        assert (await gw.gql(FORGET, id=str(uuid.uuid4()))) == {"data": {"forgetCustomer": None}}
    assert await _count(privacy_url, Customer) == customers - 1


async def test_sync_does_not_bring_a_forgotten_customer_back(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    person = _person(samples, privacy_url)
    async with instance() as gw:
        found = await gw.gql("query($e: String!) { customer(email: $e) { id } }", e=person.email)
        customer_id = found["data"]["customer"]["id"]
        assert (await gw.gql(FORGET, id=customer_id))["data"]["forgetCustomer"]
        tombstones = services_of(gw.app).erasure.tombstones
        assert isinstance(tombstones, Tombstones)

    engine = create_engine(privacy_url)
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    adapters = build_adapters(config)
    try:
        reports = await sync(
            create_sessionmaker(engine), adapters, ["hubspot"], None, tombstones=tombstones
        )
    finally:
        await aclose_adapters(adapters)
        await engine.dispose()
    (report,) = reports
    assert report.status == "ok", report
    assert report.erased >= 1
    assert "erased" in report.line()
    async with instance() as gw:
        again = await gw.gql("query($e: String!) { customer(email: $e) { id } }", e=person.email)
    assert again == {"data": {"customer": None}}


async def test_forgetting_on_one_instance_drops_the_others_cached_copy(
    instance: Any, samples: SampleUpstreams, privacy_url: str, redis_url: str
) -> None:
    person = _person(samples, privacy_url)
    async with instance(redis_url) as first, instance(redis_url) as second:
        cached = (await second.gql(BEHAVIOUR, email=person.email))["data"]["customer"]
        customer_id = cached["id"]
        # Read twice on the second instance: its copy is cached, locally and in Redis.
        assert (await second.gql(BEHAVIOUR, email=person.email))["data"]["customer"] == cached
        assert [k for k in await _redis_keys(redis_url) if customer_id in k]
        assert (await first.gql(FORGET, id=customer_id))["data"]["forgetCustomer"]
        by_email = await second.gql(BEHAVIOUR, email=person.email)
        by_id = await second.gql("query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
    assert by_email == {"data": {"customer": None}}
    assert by_id == {"data": {"customer": None}}
    keys = await _redis_keys(redis_url)
    identifiers = (customer_id, person.email, person.hubspot_id, str(person.shopify_id))
    assert keys, keys
    assert not [k for k in keys if any(i in k for i in identifiers)], keys


async def _redis_keys(url: str) -> list[str]:
    client = aioredis.from_url(url)
    try:
        return [k.decode() async for k in client.scan_iter()]
    finally:
        await client.aclose()


# --- subject access ------------------------------------------------------------------------


async def test_export_holds_everything_stored(instance: Any) -> None:
    email, user_id = unique_email("export"), f"user-{uuid.uuid4().hex[:8]}"
    async with instance() as gw:
        identify = {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "userId": user_id,
            "traits": {"email": email, "firstName": "Mary"},
            "timestamp": "2026-11-23T10:00:00Z",
        }
        track = {
            "type": "track",
            "messageId": str(uuid.uuid4()),
            "userId": user_id,
            "event": "Product Viewed",
            "properties": {"sku": "A-1"},
        }
        for payload in (identify, track):
            response = await gw.http.post(**segment_request(payload))
            assert response.json()["status"] == "processed", response.text
        customer_id = response.json()["events"][0]["customerId"]
        await gw.gql(
            SET_CONSENT, id=customer_id, purpose="ANALYTICS", granted=True, source="signup"
        )
        body = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=customer_id)
        unknown = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=str(uuid.uuid4()))
    assert "errors" not in body, body
    exported = body["data"]["exportCustomer"]
    assert exported["customer"]["id"] == customer_id
    assert exported["customer"]["email"] == email
    assert exported["customer"]["first_name"] == "Mary"
    assert {"source": "segment", "external_id": user_id} in [
        {k: i[k] for k in ("source", "external_id")} for i in exported["identities"]
    ]
    assert {"name": "first_name", "value": "Mary"} in [
        {k: a[k] for k in ("name", "value")} for a in exported["attributes"]
    ]
    assert [(c["purpose"], c["granted"], c["source"]) for c in exported["consents"]] == [
        ("analytics", True, "signup")
    ]
    assert [e["type"] for e in exported["events"]] == ["identify", "track:Product Viewed"]
    assert exported["events"][1]["properties"]["properties"] == {"sku": "A-1"}
    stamps = [exported["exported_at"], exported["customer"]["created_at"]]
    stamps += [row[f] for part, f in _TIMES for row in exported[part]]
    assert all(datetime.fromisoformat(t).tzinfo is not None for t in stamps), stamps
    assert exported["recommendations"] is None  # nothing built for them yet
    assert unknown == {"data": {"exportCustomer": None}}


async def test_export_includes_what_was_derived_from_behaviour(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    person = _person(samples, privacy_url, personalisation=True)
    async with instance() as gw:
        found = await gw.gql("query($e: String!) { customer(email: $e) { id } }", e=person.email)
        customer_id = found["data"]["customer"]["id"]
        body = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=customer_id)
    exported = body["data"]["exportCustomer"]
    assert {e["source"] for e in exported["events"]} >= {"segment"}  # their stored history
    derived = exported["recommendations"]
    assert derived is not None
    assert "items" in derived
    assert "purchased" in derived
    assert datetime.fromisoformat(derived["built_at"]).tzinfo is not None


_TIMES = [
    ("identities", "linked_at"),
    ("attributes", "observed_at"),
    ("consents", "recorded_at"),
    ("events", "occurred_at"),
]


# --- the audit log ---------------------------------------------------------------------------


async def test_the_audit_log_names_the_key_and_no_person(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    person = _person(samples, privacy_url)
    log = (
        "query($id: ID!, $since: DateTime) { auditLog(customerId: $id, since: $since) "
        "{ occurredAt actor keyId action operation customerId } }"
    )
    async with instance() as gw:
        since = datetime.now(UTC) - timedelta(seconds=5)
        found = await gw.gql(BEHAVIOUR, email=person.email)
        customer_id = found["data"]["customer"]["id"]
        await gw.gql("query($e: [String!]) { customers(emails: $e) { id } }", e=[person.email])
        await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=customer_id)
        await gw.gql(SET_CONSENT, id=customer_id, purpose="ANALYTICS", granted=False, source="api")
        await gw.gql(FORGET, id=customer_id)
        # Read at once: the reader's instance writes what it buffered first.
        body = await gw.gql(log, id=customer_id, since=since.isoformat())
        by_actor = await gw.gql(
            "query($a: String!) { auditLog(actor: $a, first: 2) { actor operation } }",
            a=gw.key_name,
        )
        # The same instant in another offset filters the same.
        paris = since.astimezone(timezone(timedelta(hours=2)))
        same = await gw.gql(log, id=customer_id, since=paris.isoformat())
        later = await gw.gql(
            log, id=customer_id, since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
        )
        key_name = gw.key_name
    assert later == {"data": {"auditLog": []}}
    assert same == body
    assert "errors" not in body, body
    entries = body["data"]["auditLog"]
    assert {e["actor"] for e in entries} == {key_name}
    assert all(e["customerId"] == customer_id and e["keyId"] for e in entries)
    assert [(e["action"], e["operation"]) for e in reversed(entries)] == [
        ("read", "query:customer"),
        ("read", "query:customers"),
        ("export", "query:exportCustomer"),
        ("change", "mutation:setConsent"),
        ("erase", "mutation:forgetCustomer"),
    ]
    times = [datetime.fromisoformat(e["occurredAt"]) for e in entries]
    assert times == sorted(times, reverse=True)
    assert all(t.tzinfo is not None and t >= since for t in times), times
    assert by_actor["data"]["auditLog"] == [
        {"actor": key_name, "operation": "mutation:forgetCustomer"},
        {"actor": key_name, "operation": "mutation:setConsent"},
    ]
    # No personal data in any audit row, in the API or the table.
    assert person.email not in orjson.dumps(body).decode()
    engine = create_engine(privacy_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(AuditEntry))).all()
            tombstones = (await connection.execute(select(Tombstone))).all()
    finally:
        await engine.dispose()
    dumped = repr(rows) + repr(tombstones)
    for personal in (person.email, person.first_name, person.last_name, person.email.split("@")[0]):
        assert personal not in dumped


async def test_privacy_fields_need_their_scopes(instance: Any) -> None:
    async with instance(scopes=(Scope.PROFILES_READ,)) as gw:
        body = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=str(uuid.uuid4()))
        consent = await gw.gql(
            SET_CONSENT, id=str(uuid.uuid4()), purpose="ANALYTICS", granted=True, source="api"
        )
    assert error_codes(body) == [("FORBIDDEN", ["exportCustomer"])]
    assert error_codes(consent) == [("FORBIDDEN", ["setConsent"])]

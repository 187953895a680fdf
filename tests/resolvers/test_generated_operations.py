"""Generated operations over every root field, mutation and subscription, on SQLite and
Postgres, with keys of each scope set: no 5xx, no masked or raw exception, every
DateTime with its offset, no field answered outside the key's scopes, none slow
(tests/operations_oracle.py says each rule).

The documents come from hypothesis-graphql, their arguments rewritten to the data
the test database holds (tests/operations.py). The default run tries a bounded
number of operations; ``--fuzz=N`` tries N per test (``--fuzz`` alone: 500). A failure
prints the seed and a blob to replay it (``--hypothesis-seed=…`` or
``@reproduce_failure``); the database's state between examples is not replayed.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import graphql
import httpx
import hypothesis.core
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from demo.people.catalogue import CATEGORIES
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import Scope
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Customer, Identity
from gateway.ingest.notifications import CustomerChange
from gateway.settings import load_settings
from gateway.templates.render import RenderFormat
from resolvers.app import create_app
from resolvers.graphql.schema import build_schema
from tests.conftest import (
    FAST,
    bearer,
)
from tests.demo_database import demo_database
from tests.in_process import asgi, lifespan, services_of
from tests.operations import LIQUID, RealData, Rewriter, documents
from tests.operations_oracle import Problem, check

SCHEMA = build_schema()._schema
SCOPE_SETS: dict[str, tuple[Scope, ...]] = {
    "read": (Scope.PROFILES_READ,),
    "write": (Scope.PROFILES_WRITE,),
    "read-write": (Scope.PROFILES_READ, Scope.PROFILES_WRITE),
    "admin": (Scope.ADMIN,),
}
# Operations per test in the default run (each answered once per scope set).
EXAMPLES = {"query": 30, "mutation": 30, "subscription": 8, "reply": 10}
RATE_LIMIT = 10**9  # the limits are tested elsewhere; here every operation must run


def examples(config: pytest.Config, kind: str) -> int:
    fuzz: int | None = config.getoption("fuzz")
    return fuzz if fuzz else EXAMPLES[kind]


def run_settings(config: pytest.Config, kind: str) -> settings:
    return settings(
        max_examples=examples(config, kind),
        deadline=None,  # the oracle bounds each answer; the first example also warms up
        database=None,  # no .hypothesis/ in the checkout; print_blob replays instead
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


# --- the data --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_url(
    request: pytest.FixtureRequest,
    samples: SampleUpstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A database of this module's own: merges and erasures consume seeded people."""
    with demo_database(request.param, "fuzz", samples.people, tmp_path_factory) as url:
        yield url


def _app(url: str, samples: SampleUpstreams) -> Starlette:
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    return create_app(load_settings(database_url=url, cache_url="memory://"), upstreams=config)


async def _real_data(url: str, templates: Sequence[str], actors: Sequence[str]) -> RealData:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            customers = list((await session.execute(select(Customer.id, Customer.email))).all())
            pairs = (await session.execute(select(Identity.source, Identity.external_id))).all()
    finally:
        await engine.dispose()
    customers.sort(key=lambda row: row.email or "")
    ids = [str(row.id) for row in customers]
    return RealData(
        ids=ids[: len(ids) * 3 // 4],
        expendable_ids=ids[len(ids) * 3 // 4 :],
        emails=[row.email for row in customers if row.email],
        identities=sorted((row.source, row.external_id) for row in pairs),
        templates=templates,
        categories=list(CATEGORIES),
        event_types=["Product Viewed", "Product Added", "Order Completed", "page", "track"],
        actors=actors,
    )


class Fuzz:
    """One running gateway over the module's database, keys of each scope set, and the
    data to draw arguments from."""

    def __init__(self, app: Starlette, keys: dict[str, str], real: RealData) -> None:
        self.app, self.keys, self.real = app, keys, real
        self.http = httpx.AsyncClient(transport=asgi(app), base_url="http://gw")
        self.loop = asyncio.get_running_loop()

    def answer_from_thread(self, document: str, scopes: str) -> tuple[int, Any, float]:
        """``answer``, from a thread other than the app's event loop's."""
        return asyncio.run_coroutine_threadsafe(self.answer(document, scopes), self.loop).result()

    async def answer(self, document: str, scopes: str) -> tuple[int, Any, float]:
        started = time.monotonic()
        response = await self.http.post(
            "/graphql",
            json={"query": document},
            headers={**bearer(self.keys[scopes]), "accept": "application/graphql-response+json"},
        )
        seconds = time.monotonic() - started
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return response.status_code, body, seconds


@pytest.fixture(scope="module")
async def fuzz(fuzz_url: str, samples: SampleUpstreams) -> AsyncIterator[Fuzz]:
    app = _app(fuzz_url, samples)
    async with lifespan(app):
        services = services_of(app)
        keys = {}
        for name, scopes in SCOPE_SETS.items():
            keys[name], _ = await services.api_keys.create(f"fuzz-{name}", scopes, RATE_LIMIT)
        templates = ["welcome", "orders", "consent"]
        for name, source, format in zip(templates, LIQUID, [*RenderFormat] * 2, strict=False):
            await services.templates.save(name, source, format)
        real = await _real_data(fuzz_url, templates, actors=[f"fuzz-{n}" for n in SCOPE_SETS])
        fuzz = Fuzz(app, keys, real)
        try:
            yield fuzz
        finally:
            await fuzz.http.aclose()


# --- queries and mutations --------------------------------------------------------------


def _fail(problems: list[Problem], document: str, status: int, body: Any, scopes: str) -> None:
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise AssertionError(
            f"{len(problems)} problem(s) with a generated operation, sent with a key of "
            f"scopes {', '.join(s.value for s in SCOPE_SETS[scopes])}:\n{listed}\n\n"
            f"operation:\n{document}\n\nanswered {status}:\n{orjson.dumps(body).decode()[:3000]}"
        )


def _operation(fuzz: Fuzz, data: st.DataObject, kind: str) -> str:
    rewriter = Rewriter(SCHEMA, fuzz.real, data.draw)
    return rewriter.document(data.draw(documents(SCHEMA, kind)), kind)


def generate(pytestconfig: pytest.Config, kind: str, example: Callable[[Any], None]) -> None:
    """Run ``example`` on generated data, seeded: ``--hypothesis-seed``'s, or a new one
    named on failure with the command that replays it."""
    seed = hypothesis.core.global_force_seed
    if seed is None:
        seed = random.getrandbits(32)
    generated = hypothesis.seed(seed)(
        run_settings(pytestconfig, kind)(given(data=st.data())(example))
    )
    try:
        generated()
    except BaseException as exc:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        exc.add_note(f"Replay (the database aside): pytest '{test}' --hypothesis-seed={seed}")
        raise


async def run(pytestconfig: pytest.Config, kind: str, example: Callable[[Any], None]) -> None:
    """Hypothesis runs sync examples: it runs in a thread, and each example hands its
    HTTP call to this (the app's) event loop through `Fuzz.answer`."""
    await asyncio.to_thread(generate, pytestconfig, kind, example)


@pytest.mark.parametrize("kind", ["query", "mutation"])
async def test_generated_operations_answer_as_they_must(
    fuzz: Fuzz, kind: str, pytestconfig: pytest.Config
) -> None:
    """Each operation is sent with a key of each scope set (documents cost more to make
    than to answer), and each answer is checked against that key's scopes."""

    def example(data: st.DataObject) -> None:
        document = _operation(fuzz, data, kind)
        for scopes in SCOPE_SETS:
            status, body, seconds = fuzz.answer_from_thread(document, scopes)
            problems = check(SCHEMA, document, SCOPE_SETS[scopes], status, body, seconds)
            if scopes == "write":  # what a reply reveals to it is checked on its own (below)
                problems = [p for p in problems if p.kind != "reply-scope"]
            _fail(problems, document, status, body, scopes)

    await run(pytestconfig, kind, example)


async def test_a_write_only_key_reads_nothing_through_a_mutations_reply(
    fuzz: Fuzz, pytestconfig: pytest.Config
) -> None:
    def example(data: st.DataObject) -> None:
        document = _operation(fuzz, data, "mutation")
        status, body, seconds = fuzz.answer_from_thread(document, "write")
        problems = check(SCHEMA, document, SCOPE_SETS["write"], status, body, seconds)
        _fail([p for p in problems if p.kind == "reply-scope"], document, status, body, "write")

    await run(pytestconfig, "reply", example)


# --- subscriptions ------------------------------------------------------------------------


def _target(document: str) -> uuid.UUID | None:
    """The customer a generated subscription asks about, when its id is one."""
    [operation] = graphql.parse(document).definitions
    assert isinstance(operation, graphql.OperationDefinitionNode)
    [field] = operation.selection_set.selections
    assert isinstance(field, graphql.FieldNode)
    for argument in field.arguments or ():
        if isinstance(argument.value, graphql.StringValueNode):
            try:
                return uuid.UUID(argument.value.value)
            except ValueError:
                return None
    return None


def _subscribe(
    client: TestClient, document: str, key: str, admin: str, known: set[str]
) -> tuple[int, Any, float]:
    """One generated subscription over graphql-transport-ws: subscribed, a change made to
    its customer (a real write when the customer exists), and the first message back,
    as (status, body) the oracle reads: `next` is an executed answer, `error` a
    request error."""
    started = time.monotonic()
    target = _target(document)
    notifications = services_of(client).notifications
    with client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"], headers=bearer(key)
    ) as ws:
        ws.send_json({"type": "connection_init"})
        assert orjson.loads(_text(ws.receive()))["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": document}})
        messages: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=lambda: messages.put(ws.receive()), daemon=True).start()
        deadline = time.monotonic() + 5
        while messages.empty() and time.monotonic() < deadline:
            if target is not None and notifications.subscribers(target):
                _change(client, target, admin, known)
                break
            time.sleep(0.005)
        try:
            message = orjson.loads(_text(messages.get(timeout=5)))
        except queue.Empty:
            return 504, "no message within 10 s", time.monotonic() - started
        ws.send_json({"id": "1", "type": "complete"})
    seconds = time.monotonic() - started
    if message["type"] == "next":
        return 200, message["payload"], seconds
    if message["type"] == "error":
        return 400, {"errors": message["payload"]}, seconds
    return 500, message, seconds


def _text(message: Any) -> str | bytes:
    assert message["type"] == "websocket.send", message
    return message.get("text") or message["bytes"]  # type: ignore[no-any-return]


def _change(client: TestClient, target: uuid.UUID, admin: str, known: set[str]) -> None:
    if str(target) in known:
        mutation = (
            "mutation($id: ID!) { setConsent(customerId: $id, purpose: ANALYTICS, "
            'granted: true, source: "fuzz") { recordedAt } }'
        )
        body = {"query": mutation, "variables": {"id": str(target)}}
        client.post("/graphql", json=body, headers=bearer(admin))
        return
    change = CustomerChange(
        customer_id=target,
        source="fuzz",
        event_type="test",
        event_id=uuid.uuid4().hex,
        fields=("first_name",),
        occurred_at=datetime.now(UTC),
    )
    notifications = services_of(client).notifications
    client.portal.call(notifications.publish, change)  # type: ignore[union-attr]


async def test_generated_subscriptions_answer_as_they_must(
    fuzz: Fuzz, fuzz_url: str, samples: SampleUpstreams, pytestconfig: pytest.Config
) -> None:
    """Over a WebSocket, on an instance of its own (a test client runs the app in a
    thread with its own event loop).

    Async, with the examples in a thread: the module's own gateway (``fuzz``) lives on the
    session's event loop, which a sync test stops. Its background writers (the audit and
    impression buffers) stopped mid-transaction then held SQLite's write lock for the
    whole test, and this instance's writes failed "database is locked" after 5 s."""
    known = {*fuzz.real.ids, *fuzz.real.expendable_ids}

    def examples() -> None:
        with TestClient(_app(fuzz_url, samples)) as client:

            def example(data: st.DataObject) -> None:
                document = _operation(fuzz, data, "subscription")
                for scopes in SCOPE_SETS:
                    key = fuzz.keys[scopes]
                    admin = fuzz.keys["admin"]
                    status, body, seconds = _subscribe(client, document, key, admin, known)
                    problems = check(SCHEMA, document, SCOPE_SETS[scopes], status, body, seconds)
                    _fail(problems, document, status, body, scopes)

            generate(pytestconfig, "subscription", example)

    await asyncio.to_thread(examples)

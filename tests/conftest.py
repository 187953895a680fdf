"""Shared fixtures: real databases (a fresh Postgres database per run, and SQLite),
and the app served in-process over httpx's ASGI transport.

Postgres is found through GATEWAY_TEST_POSTGRES_URL (a database `.ci/run` made for
this run) or, failing that, a database this session creates and drops on the
server at GATEWAY_TEST_POSTGRES_ADMIN_URL (default: the local trust-auth server).
Under CI=true a missing Postgres fails the run instead of skipping its tests.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from hypothesis import settings as hypothesis_settings
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.testclient import TestClient

from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.access.api_keys import Scope
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.settings import Settings, load_settings
from resolvers.app import create_app
from tests.in_process import asgi, lifespan, services_of

# No per-example deadline: on a shared 2-core machine one example of a fast property
# (a cookie check, a parse) can take over Hypothesis's 200 ms default, which fails the
# test as flaky though nothing is wrong; a hang is still caught by pytest-timeout.
hypothesis_settings.register_profile("gateway", deadline=None)
hypothesis_settings.load_profile("gateway")

# The whole run's ERROR log, checked after each test and at the end (tests/error_log.py).
pytest_plugins = ["tests.error_log", "tests.hang_report", "pytester"]

ADMIN_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# The Redis server the shared-cache, rate-limit and erasure tests use (databases 11 to 15).
# Runs side by side (several checkouts on one machine) each point it at their own server.
REDIS_BASE_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz",
        nargs="?",
        type=int,
        const=500,
        default=None,
        metavar="N",
        help="generated-operation tests try N operations each (500 without N) instead of "
        "the default run's few dozen",
    )


# What a test needs, read from its code and its fixtures' code: the `postgres` and `redis`
# markers (pyproject.toml) are set here, so `-m "not postgres"` and `-m "not redis"`
# select the tests that run without that server.
_NEEDS = {
    "postgres": re.compile(r"\b(postgres_url|create_postgres_database|GATEWAY_TEST_POSTGRES\w*)\b"),
    "redis": re.compile(
        r"\b(clean_redis|redis_url|redis_database_url|REDIS_BASE_URL|GATEWAY_TEST_REDIS_URL)\b"
    ),
}
# Fixtures that name a server without always using it (``database_url`` is parametrized
# over both backends: its Postgres half is marked by its parameter).
_NOT_SCANNED = {"database_url"}


def _sources(item: pytest.Item) -> Iterator[str]:
    functions = [getattr(item, "function", None)]
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures is not None:
        for name, definitions in fixtures.name2fixturedefs.items():
            if name not in _NOT_SCANNED:
                functions += [definition.func for definition in definitions]
    for function in functions:
        if (source := _source(function)) is not None:
            yield source


@functools.cache
def _source(function: Any) -> str | None:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        sources = list(_sources(item))
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        for marker, pattern in _NEEDS.items():
            if any(pattern.search(source) for source in sources) or (
                marker == "postgres" and params.get("database_url") == "postgres"
            ):
                item.add_marker(getattr(pytest.mark, marker))


def redis_database_url(db: int) -> str:
    """The URL of database ``db`` on the test Redis server."""
    return f"{REDIS_BASE_URL}/{db}"


def _unavailable(what: str, reason: str) -> None:
    message = f"{what} is not reachable ({reason})"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@asynccontextmanager
async def clean_redis(url: str) -> AsyncIterator[str]:
    """An emptied Redis database for one test, emptied again after; fails under CI=true
    (skips locally) when Redis is not reachable."""
    client = aioredis.from_url(url)
    try:
        await client.flushdb()
    except (OSError, aioredis.ConnectionError) as exc:
        await client.aclose()
        _unavailable("Redis", str(exc))
    try:
        yield url
    finally:
        await client.flushdb()
        await client.aclose()


def create_postgres_database(prefix: str = "gateway_test") -> str:
    """Create an empty database; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable("PostgreSQL", str(exc))
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    given = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'gateway.db'}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database on each backend the gateway supports."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return load_settings(database_url=database_url, cache_url="memory://")


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with lifespan(application):
        yield application


async def issue_key(
    app: Starlette | TestClient, *scopes: Scope, rate_limit: int | None = 10**6
) -> str:
    """A fresh API key on a running app; admin unless scopes say otherwise."""
    key, _ = await services_of(app).api_keys.create(
        f"test-{uuid.uuid4().hex[:10]}", scopes or (Scope.ADMIN,), rate_limit
    )
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def authorize(client: TestClient, *scopes: Scope) -> str:
    """Give a synchronous test client (HTTP and WebSocket) a fresh key; returns it."""
    assert client.portal is not None, "use the client inside its `with` block"
    key = client.portal.call(issue_key, client, *scopes)
    client.headers.update(bearer(key))
    return key


@asynccontextmanager
async def api_client(
    app: Starlette, *scopes: Scope, base_url: str = "http://gw"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a running app holding a fresh key (admin unless scopes say otherwise)."""
    key = await issue_key(app, *scopes)
    transport = asgi(app)
    async with httpx.AsyncClient(
        transport=transport, base_url=base_url, headers=bearer(key)
    ) as http:
        yield http


@pytest.fixture(scope="session")
async def admin_key(app: Starlette) -> str:
    return await issue_key(app)


@pytest.fixture
async def client(app: Starlette, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app over in-process HTTP, as a client holding an admin key."""
    transport = asgi(app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway.test", headers=bearer(admin_key)
    ) as http:
        yield http


# The sample upstreams for the gateway-level tests: a small population, fast budgets,
# breakers that do not open mid-suite. Tests set faults and read counters on them and
# reset them before and after.
SAMPLE_SIZE = 200
FAST_DEADLINE_S = 1.0
FAST: dict[str, Any] = {
    "timeout_s": 0.4,
    "deadline_s": FAST_DEADLINE_S,
    "retries": 1,
    "backoff_base_s": 0.01,
    "breaker": {"failure_threshold": 50, "reset_timeout_s": 1.0},
    # Not paced: a suite's calls come far faster than an upstream's published limit
    # allows, and the samples here only announce theirs (tests of pacing turn it on).
    "rate_limit": None,
}


@pytest.fixture(scope="session")
def samples() -> Iterator[SampleUpstreams]:
    # Limits announced, not enforced: the samples outlive every test, and one test's calls
    # must not throttle the next's (tests of the limits turn them on).
    with SampleUpstreams(size=SAMPLE_SIZE, enforce_limits=False) as running:
        yield running


@pytest.fixture(scope="session")
def seeded_url(samples: SampleUpstreams, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('federation') / 'g.db'}"
    upgrade(url)

    async def run() -> None:
        engine = create_engine(url)
        await seed(create_sessionmaker(engine), samples.people)
        await engine.dispose()

    asyncio.run(run())
    return url


@pytest.fixture(scope="session")
def upstreams() -> Iterator[SampleUpstreams]:
    """The full demo population behind the samples, for the adapter and sample suites."""
    with SampleUpstreams(size=1000, enforce_limits=False) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset_upstreams(request: pytest.FixtureRequest) -> Iterator[None]:
    if "upstreams" not in request.fixturenames:
        yield
        return
    running: SampleUpstreams = request.getfixturevalue("upstreams")
    running.reset()
    yield
    running.reset()


GatewayFactory = Callable[..., Any]


@pytest.fixture
def gateway(samples: SampleUpstreams, seeded_url: str) -> Iterator[GatewayFactory]:
    """A factory of in-process gateway instances on the seeded database."""
    samples.reset()

    @asynccontextmanager
    async def instance(
        cache_url: str = "memory://",
        overrides: dict[str, Any] | None = None,
        scopes: tuple[Scope, ...] = (Scope.ADMIN,),
        **settings: Any,
    ) -> AsyncIterator[httpx.AsyncClient]:
        """One instance, and a client holding a key with ``scopes`` (admin by default)."""
        tables = {name: dict(FAST, **(overrides or {}).get(name, {})) for name in samples.base_urls}
        config = sample_upstreams_config(samples.base_urls, tables)
        app = create_app(
            load_settings(database_url=seeded_url, cache_url=cache_url, **settings),
            upstreams=config,
        )
        async with lifespan(app), api_client(app, *scopes) as http:
            yield http

    yield instance
    samples.reset()


@pytest.fixture
async def federated(gateway: GatewayFactory) -> AsyncIterator[httpx.AsyncClient]:
    """One gateway instance on the seeded database and the sample upstreams."""
    async with gateway() as client:
        yield client


@contextmanager
def recorded_statements(target: Any) -> Iterator[list[str]]:
    """The SQL statements an engine (or ``Engine``: every engine) runs inside the block."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(target, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(target, "before_cursor_execute", record)


def unique_email(tag: str = "user") -> str:
    return f"{tag}.{uuid.uuid4().hex[:12]}@example.com"


def unique_number() -> str:
    """A fresh id of the shape HubSpot and Shopify ids have (digits)."""
    return str(uuid.uuid4().int % 10**15 + 1)


REPO = Path(__file__).resolve().parent.parent

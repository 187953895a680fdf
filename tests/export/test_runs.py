"""Export and retention runs started through the API (``runExport``, ``runRetention``)
and by the schedule inside a serving gateway: admin only, audited under the calling
key, one at a time across instances, a failed scheduled run logged and retried, one that
takes too long stopped and resumed at the next interval."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.access.api_keys import Scope
from gateway.db.locks import lock_key, run_lock
from gateway.db.models import Event
from gateway.export.runs import RunBusy
from gateway.export.store import ExportStore
from gateway.export.verify import reconcile
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import api_client
from tests.export.gated import Gate, gated
from tests.export.people import add_person
from tests.in_process import lifespan, services_of

EXPORT = """mutation($raw: Boolean!) { runExport(raw: $raw) {
  runId resumed pseudonymised rows tables { table upserts deletes files cursorFrom cursorTo } } }"""
RETENTION = """mutation($apply: Boolean!) { runRetention(apply: $apply) {
  dryRun customers events eventsAction tombstones } }"""

Gateway = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
__all__ = ["gated"]  # the fixture


@pytest.fixture
def gateway(own_database_url: str, tmp_path: Path) -> Gateway:
    @asynccontextmanager
    async def start(
        *scopes: Scope, **settings: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
        given = {
            "database_url": own_database_url,
            "cache_url": "memory://",
            "export_dir": str(tmp_path / "exports"),
            "export_key": "run-test-key-0123456789",
        }
        configured = load_settings(**(given | settings))
        app = create_app(configured)
        async with lifespan(app), api_client(app, *(scopes or (Scope.ADMIN,))) as http:
            yield http, app

    return start


async def _graphql(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    answer = await http.post("/graphql", json={"query": query, "variables": variables})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _audit(app: Any, operation: str) -> list[Any]:
    services = services_of(app)
    await services.audit.flush()
    return [e for e in await services.audit.query(limit=100) if e.operation == operation]


@asynccontextmanager
async def _held_elsewhere(url: str, name: str) -> AsyncIterator[AsyncConnection]:
    """The run lock held by another instance's session, as a run under way there."""
    from gateway.db.engine import create_engine

    other = create_engine(url)
    try:
        async with other.connect() as connection:
            await connection.execute(text(f"SELECT pg_advisory_lock({lock_key(name)})"))
            await connection.commit()
            yield connection
    finally:
        await other.dispose()


async def _events(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(Event)) or 0)


async def test_an_admin_exports_through_the_api(
    gateway: Gateway, engine: AsyncEngine, tmp_path: Path
) -> None:
    for _ in range(2):
        await add_person(engine)
    async with gateway() as (http, app):
        body = await _graphql(http, EXPORT, raw=False)
        assert "errors" not in body, body
        run = body["data"]["runExport"]
        assert run["pseudonymised"]
        assert not run["resumed"]
        tables = {t["table"]: t for t in run["tables"]}
        assert tables["customers"]["upserts"] == 2
        assert tables["events"]["upserts"] == 6
        manifest = tmp_path / "exports" / "_manifests" / f"{run['runId']}.json"
        assert manifest.exists()
        found = await reconcile(str(tmp_path / "exports"), ExportStore(engine))
        assert [r.line() for r in found if not r.ok] == []
        # Who started it is on record under the calling key's name.
        entries = await _audit(app, "mutation:runExport")
        assert [(e.action, e.customer_id) for e in entries] == [("export", None)]
        assert entries[0].actor.startswith("test-")
        assert entries[0].key_id

        # Raw data never goes into a folder of pseudonymised exports: a clear answer.
        refused = await _graphql(http, EXPORT, raw=True)
        assert refused["errors"][0]["extensions"]["code"] == "CONFLICT"
        assert "pseudonymised" in refused["errors"][0]["message"]


async def test_a_key_without_admin_scope_cannot_start_runs(gateway: Gateway) -> None:
    async with gateway(Scope.PROFILES_READ, Scope.PROFILES_WRITE) as (http, _app):
        for query, variables in ((EXPORT, {"raw": False}), (RETENTION, {"apply": True})):
            body = await _graphql(http, query, **variables)
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_retention_through_the_api_is_dry_unless_applied(
    gateway: Gateway, engine: AsyncEngine
) -> None:
    await add_person(engine)
    async with gateway(retention_events_days=1) as (http, app):
        dry = (await _graphql(http, RETENTION, apply=False))["data"]["runRetention"]
        assert dry == {
            "dryRun": True,
            "customers": 0,
            "events": 2,
            "eventsAction": "delete",
            "tombstones": 0,
        }
        assert await _events(engine) == 3
        applied = (await _graphql(http, RETENTION, apply=True))["data"]["runRetention"]
        assert (applied["dryRun"], applied["events"]) == (False, 2)
        assert await _events(engine) == 1
        entries = await _audit(app, "mutation:runRetention")
        assert sorted(e.action for e in entries) == ["erase", "read"]


async def test_a_second_run_while_one_is_under_way_gets_a_clear_answer(
    gateway: Gateway, engine: AsyncEngine, own_database_url: str, tmp_path: Path
) -> None:
    await add_person(engine)
    async with gateway(retention_events_days=1) as (http, _app):
        target = (tmp_path / "exports").resolve().as_posix()
        # In this instance: a run under way (the CLI's, another request's) holds them.
        async with ExportStore(engine).exclusive(target) as held:
            assert held
            body = await _graphql(http, EXPORT, raw=False)
            assert body["errors"][0]["extensions"]["code"] == "CONFLICT"
            assert "another export" in body["errors"][0]["message"]
        async with run_lock(engine, "retention") as held:
            assert held
            body = await _graphql(http, RETENTION, apply=True)
            assert body["errors"][0]["extensions"]["code"] == "CONFLICT"
        assert await _events(engine) == 3
        if engine.dialect.name != "postgresql":
            return
        # Across instances: another instance's session holds the lock.
        async with _held_elsewhere(own_database_url, f"export:{target}"):
            body = await _graphql(http, EXPORT, raw=False)
            assert body["errors"][0]["extensions"]["code"] == "CONFLICT"
        async with _held_elsewhere(own_database_url, "retention"):
            body = await _graphql(http, RETENTION, apply=True)
            assert body["errors"][0]["extensions"]["code"] == "CONFLICT"
            assert "under way" in body["errors"][0]["message"]
            assert await _events(engine) == 3
        # Released: the next call runs.
        assert "errors" not in await _graphql(http, EXPORT, raw=False)
        assert "errors" not in await _graphql(http, RETENTION, apply=True)


async def _until(check: Callable[[], Any], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


async def test_retention_runs_on_its_schedule_inside_serve(
    gateway: Gateway, engine: AsyncEngine, own_database_url: str
) -> None:
    await add_person(engine)
    schedule = {"retention_events_days": 1, "retention_in_serve": True}
    if engine.dialect.name == "postgresql":
        # Another instance running it: this one skips its turns until the lock is free.
        async with (
            _held_elsewhere(own_database_url, "retention"),
            gateway(retention_interval_s=0.1, **schedule),
        ):
            await asyncio.sleep(0.5)
            assert await _events(engine) == 3
        # The lock free again: the schedule applies the rules.
    async with gateway(retention_interval_s=0.1, **schedule) as (http, _app):

        async def removed() -> bool:
            return await _events(engine) == 1

        await _until(removed)
        assert (await http.get("/healthz")).status_code == 200


async def test_retention_is_off_in_serve_by_default(gateway: Gateway, engine: AsyncEngine) -> None:
    await add_person(engine)
    async with gateway(retention_events_days=1, retention_interval_s=0.05):
        await asyncio.sleep(0.4)
        assert await _events(engine) == 3


async def test_a_failing_scheduled_run_is_logged_and_retried_and_serving_goes_on(
    gateway: Gateway, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    await add_person(engine)
    bad = f"nosuch://{uuid.uuid4().hex}/exports"
    with caplog.at_level(logging.ERROR, logger="gateway.runs"):
        async with gateway(export_dir=bad, export_interval_s=0.05) as (http, _app):

            async def failed_twice() -> bool:
                return sum("scheduled export failed" in r.getMessage() for r in caplog.records) >= 2

            await _until(failed_twice)
            assert (await http.get("/healthz")).status_code == 200
            body = await _graphql(http, "{ __typename }")
            assert body == {"data": {"__typename": "Query"}}


async def test_a_scheduled_export_that_takes_too_long_is_stopped_and_resumed_next_time(
    gateway: Gateway,
    engine: AsyncEngine,
    gated: tuple[str, Gate],
    caplog: pytest.LogCaptureFixture,
) -> None:
    target, gate = gated
    await add_person(engine)

    def logged(text: str) -> Callable[[], Any]:
        async def check() -> bool:
            return any(text in r.getMessage() for r in caplog.records)

        return check

    async def entered() -> bool:
        return gate.entered.is_set()

    with caplog.at_level(logging.INFO, logger="gateway.runs"):
        settings = {"export_dir": target, "export_interval_s": 0.05, "scheduled_run_timeout_s": 3}
        async with gateway(**settings) as (http, _app):
            await _until(entered)  # the first run's first upload hangs at the gate
            # Past the run's timeout (the loop's timers fire in order: the run's first).
            await asyncio.sleep(3.5)
            assert (await http.get("/healthz")).status_code == 200
            gate.open.set()
            await _until(logged("scheduled export stopped after"))
            await _until(logged("scheduled export done"))
    found = await reconcile(target, ExportStore(engine))
    assert [r.line() for r in found if not r.ok] == []


async def test_a_run_failing_as_its_caller_stops_leaves_no_unretrieved_error(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Serve's schedule stops at shutdown while a run is under way, and the run, being
    cancelled, fails (here: busy, as when another instance holds the lock). Its failure
    was left inside ``wait_for``'s own task, unretrieved, and asyncio logged it as an
    error with its traceback (a CI run failed on it); now it is the run's value, and
    nothing is logged as an error."""
    started = asyncio.Event()

    async def failing_when_cancelled() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RunBusy("a retention run is already under way", field="retention") from None

    with caplog.at_level(logging.INFO):
        async with gateway() as (_http, app):
            runs = services_of(app).runs
            caller = asyncio.create_task(runs._detached(failing_when_cancelled(), 10))
            await started.wait()
            caller.cancel()  # the caller leaves; the run goes on until shutdown
            with pytest.raises(asyncio.CancelledError):
                await caller
        gc.collect()  # an unretrieved exception is logged when its task is collected
        await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

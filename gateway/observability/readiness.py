"""``/readyz``: can this instance serve, and how well, answered within ~100 ms whatever
is down.

Every probe runs at once, each with its own timeout (``GATEWAY_READYZ_TIMEOUT_S``,
0.1 s): the database (``SELECT 1`` on a connection of its own) and Redis, by reading
the circuit states of every worker from it (one round trip checks both; without
Redis, this worker's states only). Each reads ``ok``, ``down`` (it answered with an
error, or refused) or ``timeout`` (it did not answer in time: frozen,
or a network black hole). Upstreams are not called: their circuit breakers already
know, and a hanging upstream must not hang the probe.

The rule (``status`` and HTTP status):

- ``ready`` (200): everything answers and every circuit is closed;
- ``degraded`` (200): the instance serves, with less: Redis is down (reads go to
  Postgres and the upstreams), or a circuit is open (those upstreams' fields fail
  alone), or Postgres is down while the shared cache answers (cached profiles are
  served, requests that need the database answer 503 with a code); ``reasons`` says
  which;
- ``unavailable`` (503): Postgres is down and there is no shared cache to serve from:
  nothing but what one worker happens to hold in memory could be served, and a load
  balancer should send the traffic to another instance.

A fresh report is waited for at most the probes' timeout plus 50 ms; when it is later
than that (a loop busy with load delays even a refused connection's answer), the last
complete report is answered with ``"stale": true`` and its ``age_ms``, and the fresh
one, still running, answers the next caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError

from adapters.transport.breaker import CircuitBreaker
from gateway.db.engine import create_engine
from gateway.observability.circuits import CircuitBoard, CircuitState
from gateway.settings import Settings

__all__ = ["Check", "Readiness"]

_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}


class Check(StrEnum):
    OK = "ok"
    DOWN = "down"
    TIMEOUT = "timeout"


class _Probe:
    """One dependency's check, never waited on past its timeout. A call that has not
    answered in time is left to end by itself (its client's own timeouts, about a
    second) rather than cancelled and awaited: closing a connection to a frozen server
    can itself hang, and ``wait_for`` would wait for it (2 s for Postgres behind a
    frozen link). While it runs, the dependency reads as ``timeout`` at once, so a
    frozen dependency costs one timeout per second, not one per probe, and stuck calls
    never pile up; one older than ``stale_after_s`` is abandoned for a new one."""

    def __init__(self, call: Callable[[], Awaitable[object]], stale_after_s: float = 5.0) -> None:
        self.call = call
        self.stale_after_s = stale_after_s
        self._running: asyncio.Task[object] | None = None
        self._started = 0.0

    async def check(self, timeout_s: float) -> Check:
        running = self._running
        if running is not None and not running.done():
            if time.monotonic() - self._started < self.stale_after_s:
                return Check.TIMEOUT
            running.cancel()
        task = asyncio.ensure_future(self.call())
        task.add_done_callback(_retrieve)
        self._running, self._started = task, time.monotonic()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            return Check.TIMEOUT
        return Check.DOWN if task.exception() is not None else Check.OK

    def cancel(self) -> None:
        if self._running is not None:
            self._running.cancel()


def _retrieve(task: asyncio.Future[object]) -> None:
    if not task.cancelled():
        task.exception()  # seen: not "never retrieved"


class _PostgresPing:
    """``SELECT 1`` on one kept asyncpg connection: a single round trip (SQLAlchemy adds
    BEGIN and ROLLBACK, two more turns of a busy event loop), outside the requests'
    pool, so that a pool busy with requests does not read as an outage."""

    def __init__(self, database_url: str, limit_s: float) -> None:
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.limit_s = limit_s
        self._connection: asyncpg.Connection | None = None

    async def __call__(self) -> None:
        kept = self._connection is not None
        try:
            await self._ping()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._drop()
            if not kept:
                raise
            # The kept connection may have died with a restart: one new one tells.
            await self._ping()
        except BaseException:  # cancelled mid-call: the connection's state is unknown
            self._drop()
            raise

    async def _ping(self) -> None:
        if self._connection is None or self._connection.is_closed():
            # Its own timeouts end a call to a frozen server by themselves (see _Probe).
            self._connection = await asyncpg.connect(
                self.dsn, timeout=self.limit_s, command_timeout=self.limit_s
            )
        await self._connection.execute("SELECT 1")

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None

    async def aclose(self) -> None:
        self._drop()


class _SqlitePing:
    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url)

    async def __call__(self) -> None:
        async with self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def aclose(self) -> None:
        await self.engine.dispose()


class Readiness:
    def __init__(
        self, database_url: str, redis: Redis | None, board: CircuitBoard, timeout_s: float
    ) -> None:
        self.redis = redis
        self.board = board
        self.timeout_s = timeout_s
        self._ping: _PostgresPing | _SqlitePing = (
            _SqlitePing(database_url)
            if database_url.startswith("sqlite")
            else _PostgresPing(database_url, max(1.0, 10 * timeout_s))
        )
        self._answer: asyncio.Task[tuple[int, dict[str, Any]]] | None = None
        # The last complete report and when it was made: answered (marked stale) when a
        # fresh one is late, so a busy loop or a slow probe never makes /readyz slow.
        self._last: tuple[int, dict[str, Any], float] | None = None
        self._budget_s = timeout_s + 0.05
        self._database = _Probe(self._ping)
        self._circuit_read = _Probe(self._read_circuits)
        self._circuit_states: list[CircuitState] = []
        self._publisher: asyncio.Task[None] | None = None
        # The stream consumer this worker runs (``GATEWAY_STREAM_CONSUME_IN_SERVE``): a
        # report of its state, read without I/O (its lag is refreshed by the consumer).
        self.consumer: Callable[[], dict[str, Any]] | None = None

    @classmethod
    def open(cls, settings: Settings, breakers: Mapping[str, CircuitBreaker]) -> Readiness:
        redis = None
        if not settings.cache_url.startswith("memory"):
            # A client of its own, with short timeouts: probing and publishing must give
            # up quickly, whatever the data path's client waits for.
            redis = Redis.from_url(
                settings.cache_url,
                socket_timeout=max(settings.readyz_timeout_s, 0.5),
                socket_connect_timeout=max(settings.readyz_timeout_s, 0.5),
                health_check_interval=10,
                # Once, at once: a connection broken by a restart is replaced; redis-py's
                # default (three, backing off from 1 s) would outlast every probe.
                retry=Retry(NoBackoff(), 1),
                retry_on_error=[ConnectionError],
            )
        board = CircuitBoard(breakers, redis, interval_s=settings.circuit_publish_interval_s)
        return cls(settings.database_url, redis, board, settings.readyz_timeout_s)

    def start(self) -> None:
        """Publish this worker's circuit states periodically (in the running loop)."""
        if self.redis is not None and self._publisher is None:
            self._publisher = asyncio.get_running_loop().create_task(self.board.run())

    async def answer(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body). Callers arriving while probes run share their answer."""
        if self._answer is None or self._answer.done():
            self._answer = asyncio.create_task(self._report())
        if self._last is None:
            return await asyncio.shield(self._answer)
        try:
            return await asyncio.wait_for(asyncio.shield(self._answer), self._budget_s)
        except TimeoutError:
            # The probes have their own timeouts; this one bounds the loop's lateness
            # under load too. The report goes on and is the next caller's answer.
            status, body, made = self._last
            age_ms = round((time.perf_counter() - made) * 1000, 1)
            return status, {**body, "stale": True, "age_ms": age_ms}

    async def _report(self) -> tuple[int, dict[str, Any]]:
        started = time.perf_counter()
        # Redis is checked by reading the circuit states: one round trip proves both.
        database, cache = await asyncio.gather(
            self._database.check(self.timeout_s),
            self._circuit_read.check(self.timeout_s) if self.redis is not None else _ok(),
        )
        states, scope = (
            (self._circuit_states, "instance")
            if self.redis is not None and cache is Check.OK
            else (self.board.local(), "worker")
        )
        worst = _worst(states)
        reasons = []
        if database is not Check.OK:
            reasons.append(f"database {database}: requests that need it answer 503")
        if cache is not Check.OK:
            reasons.append(f"cache {cache}: reads go to the database and the upstreams")
        reasons.extend(_describe(s, self.board.worker) for s in states if s.state != "closed")
        consumer = self.consumer() if self.consumer is not None else None
        if consumer is not None:
            if not consumer["running"]:
                reasons.append("stream consumer stopped: events wait in the stream")
            elif consumer["waiting_for_database"]:
                reasons.append("stream consumer holds its batch until the database answers")
        if database is not Check.OK and (cache is not Check.OK or self.redis is None):
            status = "unavailable"
        else:
            status = "degraded" if reasons else "ready"
        body: dict[str, Any] = {
            "status": status,
            "checks": {"database": database.value, "cache": cache.value, "upstreams": worst},
            "reasons": reasons,
            "circuits": {
                "scope": scope,
                "worker": self.board.worker,
                "workers": sorted({s.worker for s in states} | {self.board.worker}),
                "states": [_entry(s, self.board.worker) for s in states],
            },
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if consumer is not None:
            body["consumer"] = consumer
        code = 503 if status == "unavailable" else 200
        self._last = (code, body, time.perf_counter())
        return code, body

    async def _read_circuits(self) -> None:
        self._circuit_states = await self.board.read()

    async def aclose(self) -> None:
        for probe in (self._database, self._circuit_read):
            probe.cancel()
        for task in (self._answer, self._publisher):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.board.aclose()
        await self._ping.aclose()


async def _ok() -> Check:
    return Check.OK


def _worst(states: list[CircuitState]) -> dict[str, str]:
    """Per circuit, the least available state any worker has it in."""
    worst: dict[str, str] = {}
    for state in states:
        known = worst.get(state.circuit, "closed")
        if _SEVERITY.get(state.state, 2) >= _SEVERITY.get(known, 2):
            worst[state.circuit] = state.state
    return worst


def _describe(state: CircuitState, me: str) -> str:
    worker = f"worker {state.worker}" + (" (this one)" if state.worker == me else "")
    seconds = max(time.time() - state.since, 0.0)
    return f"{state.circuit}: {state.state} in {worker} since {seconds:.0f} s"


def _entry(state: CircuitState, me: str) -> dict[str, Any]:
    return {
        "circuit": state.circuit,
        "worker": state.worker,
        "this_worker": state.worker == me,
        "state": state.state,
        "for_s": round(max(time.time() - state.since, 0.0), 1),
        "failures": state.failures,
    }

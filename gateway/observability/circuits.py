"""The circuit breakers of every worker of this instance, as ``/readyz`` reports them.

Each worker process has its own breakers (adapters/transport/breaker.py): with ``--workers 2``, one
worker's circuit to an upstream may be open while the worker that answers ``/readyz``
has it closed (for 8 s in issue #17). So each worker publishes its breakers' states with
its id: with Redis, into a hash of its own that expires unless refreshed (written at
every change of state and every ``interval_s``), listed in a sorted set by the time of
its last publication; without Redis, each worker can only report its own, and says so.

Redis layout: one hash per instance (host name), so that instances sharing a Redis
report themselves only, read in one round trip::

    gw:circuits:{instance}   hash   worker -> {"at": epoch s of the publication,
                                               "circuits": {name: {"state", "since",
                                               "failures"}}}

An entry older than three intervals is a worker gone: ignored, and pruned now and then;
the whole hash expires when no worker publishes.

Publishing is best effort: it runs in tasks of its own with short timeouts, and a
failure is logged (summarised when repeated) and never reaches a request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from adapters.transport.breaker import CircuitBreaker

__all__ = ["CircuitBoard", "CircuitState"]

logger = logging.getLogger(__name__)
_NAMESPACE = "gw:circuits"
_TTL_INTERVALS = 3  # a worker missing three publications in a row is gone
_boards = itertools.count(1)  # worker ids stay unique with several apps in one process


@dataclass(frozen=True, slots=True)
class CircuitState:
    worker: str
    circuit: str
    state: str
    since: float  # epoch seconds
    failures: int


class CircuitBoard:
    def __init__(
        self,
        breakers: Mapping[str, CircuitBreaker],
        redis: Redis | None,
        *,
        interval_s: float,
        instance: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.breakers = dict(breakers)
        self.redis = redis
        self.interval_s = interval_s
        self.instance = instance or socket.gethostname()
        number = next(_boards)
        self.worker = str(os.getpid()) if number == 1 else f"{os.getpid()}.{number}"
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.key = f"{_NAMESPACE}:{self.instance}"
        self.ttl_s = interval_s * _TTL_INTERVALS
        for breaker in self.breakers.values():
            breaker.subscribe(self._changed)

    @property
    def shared(self) -> bool:
        return self.redis is not None

    def local(self) -> list[CircuitState]:
        """This worker's breakers, as they are now."""
        now = self._clock()
        states = []
        for name, breaker in self.breakers.items():
            # The breaker's clock is monotonic, per process: shared as a wall-clock time.
            age = max(breaker.seconds_in_state, 0.0)
            states.append(
                CircuitState(
                    self.worker, name, breaker.state.value, now - age, breaker.consecutive_failures
                )
            )
        return states

    async def publish(self) -> None:
        """Write this worker's states; never raises."""
        if self.redis is None or not self.breakers:
            return
        entry = {
            "at": self._clock(),
            "circuits": {
                s.circuit: {"state": s.state, "since": s.since, "failures": s.failures}
                for s in self.local()
            },
        }
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(self.key, self.worker, orjson.dumps(entry))
            pipe.pexpire(self.key, int(self.ttl_s * 1000))
            await pipe.execute()
        # Redis down or slow: the next publication tries again; never a request's failure.
        except Exception as exc:  # noqa: BLE001 - best effort, logged by type
            logger.warning(
                "circuit states not published: %s",
                type(exc).__name__,
                extra={"worker": self.worker},
            )

    async def read(self) -> list[CircuitState]:
        """Every live worker's states, this worker's as they are now; raises when Redis
        does not answer (the caller falls back on ``local()``). One round trip."""
        if self.redis is None:
            return self.local()
        states = self.local()
        for worker, entry in self._live(await self.redis.hgetall(self.key)).items():
            if worker == self.worker:
                continue
            for circuit, value in entry["circuits"].items():
                states.append(
                    CircuitState(
                        worker,
                        circuit,
                        str(value["state"]),
                        float(value["since"]),
                        int(value["failures"]),
                    )
                )
        return states

    def _live(self, published: Mapping[Any, Any]) -> dict[str, Any]:
        """Entries published within the TTL (a worker that died leaves its last one)."""
        horizon = self._clock() - self.ttl_s
        live = {}
        for worker, raw in published.items():
            entry = orjson.loads(raw)
            if float(entry["at"]) >= horizon:
                live[worker.decode() if isinstance(worker, bytes) else str(worker)] = entry
        return live

    async def prune(self) -> None:
        """Drop the entries of workers gone for longer than the TTL; never raises."""
        if self.redis is None:
            return
        try:
            published = await self.redis.hgetall(self.key)
            live = self._live(published)
            gone = [w for w in published if (w.decode() if isinstance(w, bytes) else w) not in live]
            if gone:
                await self.redis.hdel(self.key, *gone)
        except Exception as exc:  # noqa: BLE001 - best effort, pruned again later
            logger.warning("circuit states not pruned: %s", type(exc).__name__)

    async def run(self) -> None:
        """Publish every ``interval_s`` until cancelled (the app's lifespan runs it)."""
        for tick in itertools.count():
            await self.publish()
            if tick % 10 == 9:
                await self.prune()
            await asyncio.sleep(self.interval_s)

    def _changed(self, breaker: CircuitBreaker) -> None:
        if self.redis is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.publish())
        except RuntimeError:  # no loop (a breaker driven from a script): the next run() tick
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()

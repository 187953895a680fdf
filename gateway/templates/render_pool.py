"""A small pool of render worker processes (``gateway.templates.render_worker``).

Liquid rendering is CPU-bound pure Python. On the event loop, one heavy template held
a worker for seconds, and a thread would not help: it shares the interpreter lock with
the loop. In processes of their own, renders run beside the loop (on another core when
there is one), and a render that outlives its time budget despite the sandbox's own
checks (a single slow operation in C) is ended by killing its process, which the pool
then replaces. Budgets are enforced inside the workers (``gateway.templates.liquid_sandbox``);
the deadline here is the backstop.

Workers start on first use (about 0.2 s each), at most ``size`` of them; a job waits
for an idle one. Requests are pickled to them over their stdin; answers come back as
JSON. Everything happens on the event loop: pipes, no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
from typing import Any

import orjson

logger = logging.getLogger("gateway.render")

_GRACE_S = 0.5  # beyond a job's own deadline before its process is killed


class RenderPoolError(Exception):
    """A job did not complete: its worker overran the deadline, or died."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.alive = True

    @classmethod
    async def start(cls) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.templates.render_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def call(self, request: bytes, within_s: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        try:
            self.process.stdin.write(len(request).to_bytes(4, "big") + request)
            async with asyncio.timeout(within_s):
                await self.process.stdin.drain()
                header = await self.process.stdout.readexactly(4)
                answer = await self.process.stdout.readexactly(int.from_bytes(header, "big"))
        except TimeoutError:
            await self.stop()
            raise RenderPoolError("took too long") from None
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
            await self.stop()
            raise RenderPoolError("its worker process ended") from None
        except BaseException:
            await self.stop()  # cancelled mid-job: the pipe is out of step
            raise
        found: dict[str, Any] = orjson.loads(answer)
        if "failed" in found:
            raise RenderPoolError(f"failed ({found['failed']})")
        return found

    async def stop(self) -> None:
        self.alive = False
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(Exception):
            await self.process.wait()


class RenderPool:
    """``run`` a job on the first idle worker; at most ``size`` workers at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._starting = 0
        self._freed = asyncio.Condition()
        self._closed = False

    async def run(self, request: dict[str, Any], within_s: float) -> dict[str, Any]:
        """The worker's answer to ``request``; RenderPoolError if it took longer than
        ``within_s`` (plus a grace) or its process died."""
        worker = await self._acquire()
        try:
            return await worker.call(
                pickle.dumps(request, pickle.HIGHEST_PROTOCOL), within_s + _GRACE_S
            )
        finally:
            await self._release(worker)

    async def _acquire(self) -> _Worker:
        async with self._freed:
            while not self._idle:
                if self._closed:
                    raise RenderPoolError("the gateway is shutting down")
                if len(self._workers) + self._starting < self.size:
                    self._starting += 1
                    break
                await self._freed.wait()
            else:
                return self._idle.pop()
        try:
            worker = await _Worker.start()
        finally:
            async with self._freed:
                self._starting -= 1
                self._freed.notify()
        self._workers.add(worker)
        return worker

    async def _release(self, worker: _Worker) -> None:
        async with self._freed:
            if worker.alive and not self._closed:
                self._idle.append(worker)
            else:
                self._workers.discard(worker)
                if worker.alive:
                    await worker.stop()
            self._freed.notify()

    async def aclose(self) -> None:
        self._closed = True
        workers = list(self._workers)
        self._workers.clear()
        self._idle.clear()
        for worker in workers:
            if worker.process.stdin is not None:
                worker.process.stdin.close()  # the worker exits when its stdin ends
        for worker in workers:
            try:
                await asyncio.wait_for(worker.process.wait(), 2)
            except TimeoutError:
                await worker.stop()
        async with self._freed:
            self._freed.notify_all()

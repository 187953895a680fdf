"""A `redis-server` of a test's own on a free port, to stop, freeze and restart.

Never the shared one: the server is a child process of this one, started in the
foreground (its pid is ours to signal), in a temporary directory, and killed on exit
whatever happens (``with`` block, ``close()``, or at interpreter exit). ``restart`` keeps
the port, so clients holding connections from before see them broken, as after a
real restart. With ``persist``, data survives a stop (append-only file, fsync on each
write), as on a Redis an operator runs with persistence: entries cached before an
outage are still there after it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from tests.served import free_port

_READY_TIMEOUT_S = 10.0


class RedisServer:
    def __init__(self, *, persist: bool = False, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self._binary = binary
        self.port = port or free_port()
        self.persist = persist
        self._dir = Path(tempfile.mkdtemp(prefix="redis-fault-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        atexit.register(self.close)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start (again, on the same port) and wait until it answers."""
        if self.running:
            return self
        args = [
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self._dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self._dir / "redis.log"),
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if not self.running:
                    raise RuntimeError(f"redis-server exited: {self._log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer: {self._log()}")
                time.sleep(0.02)  # nothing to wait on but the port answering
        finally:
            client.close()

    def _log(self) -> str:
        log = self._dir / "redis.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def stop(self) -> None:
        """Shut it down (SIGTERM: with ``persist``, what was written is kept)."""
        if self._process is None:
            return
        if self.frozen:
            self.thaw()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as a hung Redis."""
        if self._process is not None and self.running:
            os.kill(self._process.pid, signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self._process is not None and self.frozen:
            os.kill(self._process.pid, signal.SIGCONT)
            self.frozen = False

    def close(self) -> None:
        """Kill it and remove its directory; safe to call more than once."""
        if self._process is not None:
            if self.frozen:
                self.thaw()
            self._process.kill()
            self._process.wait()
            self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["RedisServer"]

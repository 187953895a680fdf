"""A server in a process of its own (`gateway serve`, `gateway demo`, uvicorn, the sample
upstreams): a free port to give it, and waiting until it answers.

Used by the tests that serve the gateway for real and by the benchmarks (bench/), so
that every one of them waits alike: it fails at once, with the server's output, when
the server exits instead of starting, and after ``timeout`` seconds otherwise.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from subprocess import Popen
from typing import Any

import httpx


def free_port() -> int:
    """A port nothing listens on now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_served(
    url: str,
    process: Popen[Any] | None = None,
    timeout: float = 60.0,
    answered: Callable[[int], bool] = lambda status: status == 200,
) -> None:
    """Return once ``GET url`` answers a status ``answered`` accepts (by default 200).

    Raises ``AssertionError`` if ``process`` exits first (with what it wrote, when its
    output is piped) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            output = process.communicate() if process.stdout or process.stderr else ""
            raise AssertionError(f"{url}: the server exited ({process.returncode}): {output}")
        try:
            if answered(httpx.get(url, timeout=1).status_code):
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout:.0f} s")
        # Another process starting: nothing to wait on but its port answering.
        time.sleep(0.1)

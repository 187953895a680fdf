"""``python -m gateway.templates.render_worker``: one render worker process of ``RenderPool``.

Reads requests from stdin and writes answers to stdout, one at a time, each framed by
a 4-byte big-endian length. Requests come from the gateway process that started this
one, over its private pipe, as pickles (contexts hold dates and decimals); answers go
back as JSON only (bodies, reasons, counts), so that even a process subverted by a
template could hand its parent nothing but data. The process imports python-liquid
and the sandbox, nothing of the gateway's services, and caps its own memory, so a
template that would exhaust it fails alone (``RENDER_LIMIT``) instead of the machine.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import signal
import sys
from typing import Any, BinaryIO

import orjson

from gateway.templates import liquid_sandbox

MEMORY_BYTES = 1024 * 1024 * 1024  # address space: far above a render's needs
_NICENESS = 10


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def handle(request: dict[str, Any]) -> dict[str, Any]:
    html, strict = bool(request["html"]), bool(request["strict"])
    if request["op"] == "analyze":
        return liquid_sandbox.analyze(request["source"], html, strict)
    budget = liquid_sandbox.Budget(**request["budget"])
    return liquid_sandbox.render_all(request["source"], html, strict, request["contexts"], budget)


def main() -> None:
    # The parent ends this process; a Ctrl-C in a terminal is the parent's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Renders give way to the gateway's event loops when the cores are busy (measured:
    # /healthz during a long renderBatch, max 46-56 ms instead of 69-70 ms; renders/s
    # the same).
    os.nice(_NICENESS)
    with contextlib.suppress(ValueError, OSError):  # a lower hard limit already applies
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = _read(stdin, 4)
        if header is None:
            return  # the gateway closed the pipe: it is shutting down
        body = _read(stdin, int.from_bytes(header, "big"))
        if body is None:
            return
        try:
            answer = handle(pickle.loads(body))
        except MemoryError:
            answer = {"failed": "memory"}
        except Exception as exc:  # noqa: BLE001 - any failure is the render's, reported back
            answer = {"failed": type(exc).__name__}
        data = orjson.dumps(answer)
        stdout.write(len(data).to_bytes(4, "big") + data)
        stdout.flush()


if __name__ == "__main__":
    main()

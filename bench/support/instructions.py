"""What a request costs in instructions, counted by valgrind's callgrind: a figure
the shared machine's noise does not move (blocks of the same requests count within
~0.3 % of each other), where a latency or a CPU time moves by 5-15 % between turns.

The gateway runs in a child process under callgrind, instrumentation off until its
caches are warm; requests go to the app itself (raw ASGI, 32 at a time: uvicorn's HTTP
work, the same with and without what is compared, is not counted). Blocks of
``block`` requests alternate with and without recording (on, off, then off, on...),
the counts zeroed before each and dumped after it; the queued rows and audit entries
are written between blocks, outside the counts (the writers' work, not the requests').

    .venv/bin/python -m bench.impressions --instructions

Needs valgrind (`apt-get install valgrind`); about 30 s a block.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from bench.support.access import AUTH

_CONCURRENT = 32
# What a process re-reads after so many seconds, kept for the count: at callgrind's
# pace (~50 times slower) a re-read every 1-60 s falls every 20-2,000 requests and in
# some blocks more than others, not every few thousand as at full speed. (The
# upstreams' cache: their file, from the caller.)
_WARM = {
    "GATEWAY_PROFILE_CACHE_TTL_S": "86400",
    "GATEWAY_RECS_STOCK_TTL_S": "86400",
    "GATEWAY_RECS_MODEL_TTL_S": "86400",
    "GATEWAY_API_KEY_CACHE_TTL_S": "60",
    "GATEWAY_EXPERIMENTS_TTL_S": "300",
}
_LABEL = re.compile(r"^desc: Trigger: dump (on|off)-(\d+)$", re.MULTILINE)
_TOTALS = re.compile(r"^totals: (\d+)", re.MULTILINE)


def per_request(
    env: dict[str, str], customer_id: str, pairs: int = 3, block: int = 1280
) -> dict[str, float]:
    """Instructions a recommendations request costs with impressions recorded (``on``)
    and not (``off``), medians of the blocks, and what recording adds (``added``, the
    median of the pairs' differences, and its ``share`` of ``off``)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("counting instructions needs valgrind: apt-get install valgrind")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "env.json"
        settings.write_text(json.dumps({**env, **_WARM, "BENCH_CUSTOMER_ID": customer_id}))
        out = Path(tmp) / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        child = [sys.executable, "-m", "bench.support.instructions", str(settings)]
        done = subprocess.run(
            [*valgrind, f"--callgrind-out-file={out}", *child, str(pairs), str(block)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        if done.returncode != 0:
            raise SystemExit(f"the counted gateway failed:\n{done.stderr[-3000:]}")
        counted = {"on": [0.0] * pairs, "off": [0.0] * pairs}
        for dump in Path(tmp).glob("callgrind.out.*"):
            text = dump.read_text(errors="replace")
            label, totals = _LABEL.search(text), _TOTALS.search(text)
            if label and totals:
                counted[label.group(1)][int(label.group(2))] = int(totals.group(1)) / block
    if not all(counted["on"] + counted["off"]):
        raise SystemExit("a block's count is missing")
    differences = [on - off for on, off in zip(counted["on"], counted["off"], strict=True)]
    off = statistics.median(counted["off"])
    added = statistics.median(differences)
    return {
        "on": statistics.median(counted["on"]),
        "off": off,
        "added": added,
        "share": added / off,
        "added_low": min(differences),
        "added_high": max(differences),
    }


def _callgrind(*command: str) -> None:
    subprocess.run(
        ["callgrind_control", *command, str(os.getpid())], capture_output=True, check=True
    )


async def _served(pairs: int, block: int) -> None:
    """The child: the gateway with the settings in its environment, warmed, then
    ``pairs`` of blocks of ``block`` requests counted, with and without recording."""
    from resolvers.app import create_app

    app = create_app()
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    if (await outbox.get())["type"] != "lifespan.startup.complete":
        raise SystemExit("the gateway did not start")

    async def post(body: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/recommendations",
            "raw_path": b"/api/recommendations",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"authorization", AUTH["Authorization"].encode()),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": dict(state),
        }
        given: list[MutableMapping[str, Any]] = [
            {"type": "http.request", "body": body, "more_body": False}
        ]
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            if given:
                return given.pop()
            await asyncio.Event().wait()  # the client never leaves
            raise AssertionError

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"the counted request failed: {sent}")

    async def serve(total: int) -> None:
        async def one_client(count: int) -> None:
            for _ in range(count):
                await post(body)

        await asyncio.gather(*(one_client(total // _CONCURRENT) for _ in range(_CONCURRENT)))

    body = json.dumps({"customer_id": os.environ["BENCH_CUSTOMER_ID"], "limit": 4}).encode()
    services = state["services"]
    recording = services.served.impressions
    # No timed write at all: under callgrind's clock (~50 times slower) a write due
    # every 60 s lands inside some blocks and not others, thousands of instructions a
    # request apart. The bench writes between blocks instead (``written``).
    for buffer in (recording._buffer, services.audit._buffer):
        buffer._interval = 10**9

    async def written() -> None:
        """Between blocks: the rows written, and a full collection, so that each
        block starts with the collector's counts where the last one's started (an
        older collection falling in one block and not the next was ~15,000
        instructions a request apart)."""
        await recording.flush()
        await services.audit.flush()
        gc.collect()

    await serve(_CONCURRENT * 20)  # warm: caches, the prepared lists, the buffers
    await written()
    _callgrind("-i", "on")
    for pair in range(pairs):
        for on in (True, False) if pair % 2 == 0 else (False, True):
            recording.enabled = on
            _callgrind("-z")  # zeroed: the block's count alone
            await serve(block)
            _callgrind("-d", f"{'on' if on else 'off'}-{pair}")
            await written()
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan


if __name__ == "__main__":
    os.environ.update(json.loads(Path(sys.argv[1]).read_text()))
    asyncio.run(_served(int(sys.argv[2]), int(sys.argv[3])))

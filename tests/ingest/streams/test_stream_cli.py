"""``gateway consume`` as an operator runs it: consumes until SIGTERM (exit 0), leaves the
invalid messages in the dead letter with their reasons, and ``--replay-dead-letters``
moves them back with a progress line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import cast

import orjson
import redis.asyncio as aioredis
from sqlalchemy import func, select

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Event
from tests.conftest import clean_redis, redis_database_url

ROOT = Path(__file__).resolve().parents[3]
DEADLINE_S = 30.0


async def _stored(url: str, message_id: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int(
                await connection.scalar(select(func.count()).where(Event.event_id == message_id))
                or 0
            )
    finally:
        await engine.dispose()


def test_consume_runs_until_sigterm_and_replays_dead_letters(postgres_url: str) -> None:
    upgrade(postgres_url)

    async def scenario() -> None:
        async with clean_redis(redis_database_url(8)) as redis_url:
            stream = f"cli-events-{uuid.uuid4().hex[:8]}"
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "GATEWAY_DATABASE_URL": postgres_url,
                "GATEWAY_CACHE_URL": redis_url,
                "GATEWAY_STREAM_NAME": stream,
                "GATEWAY_STREAM_WAIT_S": "0.2",
            }
            client = aioredis.Redis.from_url(redis_url)
            good = {
                "type": "track",
                "event": "Product Viewed",
                "messageId": f"m-{uuid.uuid4()}",
                "anonymousId": "device-1",
            }
            for payload in (b"{broken", orjson.dumps({"type": "alias"}), orjson.dumps(good)):
                await client.xadd(stream, {"payload": payload})
            consumer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "consume",
                env=env,
                cwd=ROOT,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + DEADLINE_S
                while await client.xlen(f"{stream}:dead") < 2 or not await _stored(
                    postgres_url, good["messageId"]
                ):
                    assert consumer.returncode is None, "the consumer exited"
                    assert time.monotonic() < deadline, "the consumer did not consume"
                    await asyncio.sleep(0.1)
            finally:
                consumer.send_signal(signal.SIGTERM)
                async with asyncio.timeout(DEADLINE_S):
                    _, errors = await consumer.communicate()
            assert consumer.returncode == 0, errors
            # redis-py types stream entries loosely; this client answers bytes.
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(f"{stream}:dead")
            )
            reasons = [fields[b"reason"].decode() for _, fields in entries]
            assert reasons[0] == "invalid: the message is not valid JSON"
            assert reasons[1].startswith("invalid: type:")
            replay = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "consume",
                "--replay-dead-letters",
                env=env,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(DEADLINE_S):
                out, err = await replay.communicate()
            assert replay.returncode == 0, err
            assert "replayed 2 dead letters" in out.decode()
            assert "2/2 dead letters back on the stream" in err.decode()
            assert await client.xlen(f"{stream}:dead") == 0
            assert await client.xlen(stream) == 5
            await client.delete(stream)
            await client.aclose()

    asyncio.run(scenario())

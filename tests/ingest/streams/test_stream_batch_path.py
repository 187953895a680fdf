"""Large batches through the consumer, against the real engines and Postgres: the
messages of one read that cannot be stored go to the dead letter with their reasons
and every other message of that read is stored, all acknowledged; a refusal the
Segment webhook answers with a reason has the same reason here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ingest.json_text import NOT_UNICODE, PayloadError
from gateway.ingest.streams.transport import Delivery, Transport
from gateway.ingest.webhook_payloads import parse_segment
from tests.ingest.streams.stream_database import engine, migrated
from tests.ingest.streams.stream_engines import ENGINES, group
from tests.ingest.streams.test_stream_consumer import consumer, encode, stored, track, user

__all__ = ["engine", "migrated"]  # the fixtures (stream_database.py)

pytestmark = pytest.mark.parametrize("kind", ENGINES)


class Recording:
    """The real transport, keeping the reason of each dead letter."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.reasons: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read(self, count: int, wait_s: float) -> list[Delivery]:
        return await self.inner.read(count, wait_s)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(deliveries)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.reasons.append(reason)
        await self.inner.dead_letter(delivery, reason)


async def test_bad_messages_inside_a_batch_are_dead_lettered_and_the_rest_stored(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind) as member:
        transport = Recording(await member())
        good = [track(user()) for _ in range(300)]
        no_name = {**track(user()), "event": ""}  # a track needs its event name
        # Valid to the schema, refused by Postgres (a NUL in a text column): the batch's
        # statement fails, and only this message is kept out.
        refused = track(user(), messageId="m-\u0000-nul")
        batch = [
            *encode(*good[:100]),
            b"{not json",
            *encode(*good[100:200], no_name, refused),
            orjson.dumps({"type": "alias", "messageId": "m-alias"}),
            *encode(*good[200:]),
        ]
        await transport.publish(batch)
        # One delivery: a message failing in the database goes to the dead letter now.
        worker = consumer(transport, engine, batch_size=len(batch), max_attempts=1)
        read = 0
        while read < len(batch):  # one read in practice; the engines may split it
            read += await worker.step()
        ids = [m["messageId"] for m in good]
        assert await stored(engine, ids) == dict.fromkeys(ids, 1)
        assert await transport.dead_letters() == 4
        refusal = next(r for r in transport.reasons if r.startswith("failed"))
        assert refusal.startswith("failed 1 times: ")  # the error's type, never its text
        assert sorted(r for r in transport.reasons if r != refusal) == [
            "invalid: a track event needs its event name",
            "invalid: the message is not valid JSON",
            "invalid: type: Input should be 'identify', 'track' or 'page'",
        ]
        assert worker.status.stored == len(good)
        await asyncio.sleep(0.5)  # past the claim idle time / ack wait
        assert await transport.read(10, 0.2) == []  # every message was acknowledged


async def test_an_unpaired_surrogate_is_dead_lettered_with_the_webhooks_reason(
    kind: str, engine: AsyncEngine
) -> None:
    async with group(kind) as member:
        transport = Recording(await member())
        # JSON's grammar allows the escape; it names no character, so orjson refuses it.
        lone = (
            b'{"type": "track", "event": "Viewed", "messageId": "m-lone",'
            b' "properties": {"title": "caf\\ud800"}}'
        )
        good = track(user())
        await transport.publish([lone, *encode(good)])
        worker = consumer(transport, engine)
        read = 0
        while read < 2:
            read += await worker.step()
        with pytest.raises(PayloadError) as webhook:
            parse_segment(lone)
        assert webhook.value.status == 422
        assert transport.reasons == [f"invalid: {webhook.value.reason}"]
        assert transport.reasons == [f"invalid: properties.title: {NOT_UNICODE}"]
        assert await stored(engine, [good["messageId"]]) == {good["messageId"]: 1}

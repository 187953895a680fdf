"""The knobs of event stream ingestion (issue 21): which engine, which stream, which
group, how big a batch, when a message is poison.

Fields only: ``Settings`` (gateway/settings.py) inherits them, and stays the one
reader of the environment (``GATEWAY_STREAM_*``).
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamSettings(BaseSettings):
    """Where stream messages come from and how they are consumed."""

    stream_transport: Literal["redis", "nats"] = Field(
        default="redis", description="The streaming engine: redis (Streams) or nats (JetStream)."
    )
    stream_redis_url: str | None = Field(
        default=None,
        description="Redis holding the stream (default: GATEWAY_CACHE_URL when it is Redis).",
    )
    stream_nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="NATS server(s), comma-separated."
    )
    stream_name: str = Field(
        default="segment-events",
        pattern=r"^[A-Za-z0-9_:.-]{1,100}$",
        description="Redis: the stream key (its dead letter is NAME:dead). NATS: the "
        "JetStream stream (its dead letter is NAME_DEAD); dots become underscores there.",
    )
    stream_subject: str = Field(
        default="segment.events",
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="NATS: the subject producers publish to (dead letters: SUBJECT.dead).",
    )
    stream_group: str = Field(
        default="gateway",
        pattern=r"^[A-Za-z0-9_-]{1,100}$",
        description="The consumer group (NATS: the durable consumer) every consumer shares.",
    )
    stream_consumer: str = Field(
        default_factory=_consumer_name,
        description="This consumer's name in the group (default: host-pid). Restarted "
        "under the same name, it takes its own pending messages back at once.",
    )
    stream_batch_size: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=5000,
        description="Most messages read and stored per transaction (a read takes what is "
        "there, up to this: large under a backlog, small at a trickle).",
    )
    stream_wait_s: Annotated[float, Field(gt=0, le=30)] = Field(
        default=1.0, description="Longest a read waits for the first message."
    )
    stream_max_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        default=5,
        description="Deliveries after which a message that was never stored goes to the "
        "dead letter with its reason.",
    )
    stream_claim_idle_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="A message unacknowledged this long (its consumer died or failed) is "
        "delivered to another consumer (Redis: XAUTOCLAIM; NATS: the ack wait).",
    )
    stream_dead_letter_maxlen: Annotated[int, Field(ge=1000)] = Field(
        default=1_000_000, description="Most dead letters kept (the oldest go first)."
    )
    stream_cache_timeout_s: Annotated[float, Field(gt=0, le=30)] = Field(
        default=2.0,
        description="In a `gateway consume` process, longest a cache invalidation or "
        "notification may take (socket and operation) before it counts against Redis's "
        "circuit: its calls carry a batch's thousands of keys and no request waits on "
        "them, so they are not held to GATEWAY_REDIS_OP_TIMEOUT_S.",
    )
    stream_consume_in_serve: bool = Field(
        default=False,
        description="Run one consumer inside each `gateway serve` worker too (besides or "
        "instead of `gateway consume`).",
    )

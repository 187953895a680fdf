"""The knobs of how the gateway lives through an outage (issue 17): Redis's timeouts,
retries and circuit, API keys' grace and the database's timeouts while it is
unreachable, transaction retries, repeated-log summaries, ``/readyz`` and the circuit
states workers share.

Fields only: ``Settings`` (gateway/settings.py) inherits them, and stays the one
reader of the environment (``GATEWAY_*``, the same names as before).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings


class OutageSettings(BaseSettings):
    """What to wait for, retry and report when a dependency is slow or down."""

    redis_timeout_s: Annotated[float, Field(gt=0, le=10)] = Field(
        default=0.25,
        description="Socket and connect timeout of each Redis command: a frozen Redis costs "
        "this, not redis-py's default 5 s.",
    )
    redis_op_timeout_s: Annotated[float, Field(gt=0, le=10)] = Field(
        default=0.5,
        description="Longest one cache operation may take, its retries included; beyond, "
        "it is a miss and the request goes on without the cache.",
    )
    redis_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=2,
        description="Retries (with backoff) of a Redis command whose connection broke, e.g. "
        "by a Redis restart: the connection is replaced instead of failing the request.",
    )
    redis_health_check_interval_s: Annotated[float, Field(ge=1, le=300)] = Field(
        default=5.0, description="A Redis connection idle this long is checked before use."
    )
    redis_breaker_failures: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Consecutive Redis failures that open its circuit."
    )
    redis_breaker_reset_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0,
        description="How long Redis's open circuit serves without the cache before a probe.",
    )
    api_key_outage_grace_s: Annotated[float, Field(ge=0, le=86_400)] = Field(
        default=300.0,
        description="While the database is unreachable, a key this process verified "
        "within this many seconds is still accepted (a key known revoked, or never "
        "verified, is not); 0 refuses every key during an outage.",
    )
    database_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=2.0,
        description="Longest wait to open a database connection: a database that is down "
        "is answered 503 DATABASE_UNAVAILABLE after this, not after the OS's minutes.",
    )
    database_pool_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=2.0,
        description="Longest a request waits for a free pooled database connection.",
    )
    database_statement_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="Longest a statement of `gateway serve` or `gateway consume` waits for "
        "the database: one that stops answering (hung, or a network that drops packets) "
        "is answered 503 DATABASE_UNAVAILABLE after this and the connection is discarded. "
        "The ping each request's checkout makes is bounded by the connect timeout, so a "
        "hung database costs a new request that long, not this. Long enough for the "
        "heaviest legitimate statement (an erasure or unmerge of a customer with a "
        "million events); the CLI's batch commands have no such limit.",
    )
    keep_alive_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=75.0,
        description="How long the server keeps an idle keep-alive connection open. Longer "
        "than the clients' and load balancers' own idle timeouts (httpx 5 s, AWS ALB 60 s), "
        "so the client, never the server, closes an idle connection: a server closing one "
        "while the client sends on it fails that request (uvicorn's default is 5 s).",
    )
    unavailable_retry_after_s: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=5,
        description="Retry-After of a 503 answered because the database or the cache is "
        "unreachable.",
    )
    db_retry_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=5,
        description="Most times a write transaction runs (the first included) when the "
        "database aborts it for a deadlock or serialization failure, or SQLite stays locked.",
    )
    db_retry_base_s: Annotated[float, Field(gt=0, le=10)] = Field(
        default=0.02,
        description="Longest wait before the first retry of such a transaction; it doubles "
        "for each further retry (each wait a random time up to it: full jitter).",
    )
    db_retry_cap_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="Longest wait between two attempts of such a transaction."
    )
    log_repeat_interval_s: Annotated[float, Field(ge=0)] = Field(
        default=10.0,
        description="A warning or error logged again and again (same logger, message and "
        "exception site) is written once with its traceback, then counted: one line with "
        "the count per this many seconds; 0 writes every one.",
    )
    readyz_timeout_s: Annotated[float, Field(gt=0, le=5)] = Field(
        default=0.1,
        description="How long /readyz waits for each dependency (probed concurrently) "
        "before reporting it as timed out.",
    )
    circuit_publish_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=2.0,
        description="How often each worker publishes its circuit breakers' states to Redis "
        "(also at every change); they expire after three intervals without one.",
    )

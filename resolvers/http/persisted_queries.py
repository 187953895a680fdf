"""Automatic persisted queries (Apollo's protocol): a client sends the SHA-256 of a
document instead of the document; the gateway remembers documents it has run.

A document is remembered only once it has parsed and validated (``remember``, called
by the HTTP view after execution began), never merely because a client sent it with
its hash: otherwise anyone could fill the store with megabytes of junk. What is kept
is bounded three ways: a document's size, the number kept (least recently used go
first) and their age. Each process keeps the documents it uses in memory; with Redis
they are also shared, so every instance knows a document once any has run it: one
hash of documents and one sorted set of their last use, trimmed by age and count on
every registration (one round trip, in a script). Documents are addressed by their
hash, which is checked again when one is read back from Redis, so an entry written
there by someone else cannot stand in for another document. While Redis is down or
slow, each process serves from its own store; a document it does not hold answers
PERSISTED_QUERY_NOT_FOUND, and the client sends it again.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError
from gateway.upstreams.redis_client import RedisGuard

_DOCUMENTS = "gw:apq:v2:documents"  # hash: digest -> document
_USED = "gw:apq:v2:used"  # sorted set: digest scored by its last registration or read
_REMEMBER = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3] - ARGV[4])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  for _, digest in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    table.insert(stale, digest)
  end
end
for _, digest in ipairs(stale) do
  redis.call('HDEL', KEYS[1], digest)
  redis.call('ZREM', KEYS[2], digest)
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return #stale
"""


class PersistedQueryNotFound(GatewayError):
    code = "PERSISTED_QUERY_NOT_FOUND"


class PersistedQueryMismatch(GatewayError):
    code = "PERSISTED_QUERY_HASH_MISMATCH"


class PersistedQueryTooLarge(GatewayError):
    code = "PERSISTED_QUERY_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class Resolved:
    """The document to run, and the hash to remember it under once it validates
    (None when there is nothing to register)."""

    query: str | None
    register: str | None = None


def digest_of(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


class PersistedQueries:
    def __init__(
        self, redis: RedisGuard | None, *, max_bytes: int, max_count: int, ttl_s: float
    ) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.ttl_s = ttl_s
        self._redis = redis
        self._remember_script: Any = None
        # digest -> (document, when it stops being served); least recently used first.
        self._local: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def resolve(self, query: str | None, extensions: dict[str, Any] | None) -> Resolved:
        """The document to run: the one given (to be remembered under its hash once it
        validates), or the one remembered for the hash given."""
        persisted = (extensions or {}).get("persistedQuery")
        if not isinstance(persisted, dict):
            return Resolved(query)
        digest = str(persisted.get("sha256Hash") or "").lower()
        if query is not None:
            size = len(query.encode())
            if size > self.max_bytes:
                raise PersistedQueryTooLarge(
                    f"A persisted query has at most {self.max_bytes} bytes; this one has "
                    f"{size}. Send it without extensions.persistedQuery."
                )
            if digest_of(query) != digest:
                raise PersistedQueryMismatch("provided sha256Hash does not match the query")
            return Resolved(query, digest)
        stored = await self._find(digest)
        if stored is None:
            raise PersistedQueryNotFound("PersistedQueryNotFound")
        return Resolved(stored)

    async def remember(self, digest: str, query: str) -> None:
        """Keep a document that has parsed and validated. Best effort: a failure to
        share it costs the client one more registration, not its answer."""
        self._keep(digest, query)
        if self._redis is None:
            return
        if self._remember_script is None:
            self._remember_script = self._redis.client.register_script(_REMEMBER)
        script = self._remember_script
        args = [digest, query, time.time(), int(self.ttl_s), self.max_count]
        await self._redis.call(
            "apq.remember", lambda: script(keys=[_DOCUMENTS, _USED], args=args), None
        )

    async def _find(self, digest: str) -> str | None:
        found = self._local.get(digest)
        if found is not None:
            query, expires = found
            if expires > time.monotonic():
                self._local.move_to_end(digest)
                return query
            del self._local[digest]
        if self._redis is None:
            return None
        pipe = self._redis.client.pipeline(transaction=False)
        pipe.hget(_DOCUMENTS, digest)
        pipe.zadd(_USED, {digest: time.time()}, xx=True)
        raw, _ = await self._redis.call("apq.find", pipe.execute, [None, None])
        if not isinstance(raw, bytes) or len(raw) > self.max_bytes:
            return None
        query = raw.decode(errors="replace")
        if digest_of(query) != digest:  # not what this gateway wrote under that hash
            return None
        self._keep(digest, query)
        return query

    def _keep(self, digest: str, query: str) -> None:
        self._local[digest] = (query, time.monotonic() + self.ttl_s)
        self._local.move_to_end(digest)
        while len(self._local) > self.max_count:
            self._local.popitem(last=False)

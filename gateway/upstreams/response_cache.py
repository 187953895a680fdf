"""Whole answers of persisted queries, tagged with the customers they hold, dropped on
every instance by any write to one of them.

The edge (resolvers/http/response_cache.py) stores an answer's bytes under a key of its
own choosing (the persisted query's hash, its variables and the key's scopes) with the
tags of what it read: every customer id and (hashed) e-mail looked up while it ran,
recorded in a ``ResponseTrace`` that ``CachedCustomers`` fills through a context
variable. Writes reach it through the two places every write path already calls after
its commit: ``Federation.invalidate`` / ``invalidate_many`` (a customer's upstream
answers) and ``CachedCustomers.forget`` / ``forget_many`` (stored profiles), so
mutations, webhooks, stream events, merges, erasure, consent, retention, ``gateway
import`` and ``gateway sync`` (gateway/ingest/committed.py) all drop it without knowing it.

Invalidation is a sequence, not a search for entries: each one takes the next number of
a global counter and writes it on the tags it touches. An answer remembers the counter
as it was *before* it ran (``Ticket``): it is not stored if any of its tags was touched
since, and not served once any is touched after. So an answer built while a write
committed can neither be stored nor outlive it, whichever came first. With Redis, the
lookup, the store and the invalidation are one script each (one round trip), so every
instance sees the same counter. A Redis that is down reads as a miss and stores
nothing; an invalidation that cannot reach it deletes the cache's epoch instead, which
the guard owes and replays when Redis answers again: every answer stored before then
is dropped at once (and this process serves none meanwhile).

A read that finds a write overtook it (its cached copy read before the write, set after
the write's delete) ``retract``s the answers built on that copy: a second sequence with
markers of its own, which the stored answers' checks read and readers' ``touched_since``
does not. Were it an invalidation, every read on any instance whose ticket predates it
would see it as a write, drop its own copy and invalidate in turn, without end.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from gateway.upstreams.byte_memo import ByteMemo
from gateway.upstreams.redis_client import RedisGuard

VERSION = 1
_PREFIX = f"gw:rc:v{VERSION}:"
_EPOCH = _PREFIX + "epoch"  # a token: entries of another epoch are never served
_SEQ = _PREFIX + "seq"  # the invalidation counter
_TAG = _PREFIX + "tag:"  # tag -> counter value of its last invalidation
_ENTRY = _PREFIX + "entry:"
_DROPS = _PREFIX + "drops"  # the retraction counter (never a reader's ``touched_since``)
_DROP = _PREFIX + "drop:"  # tag -> retraction counter value of its last retraction


def _epoch_lua(key: str) -> str:
    """Lua reading the cache's epoch into ``epoch``, set to ARGV[1] if Redis lost it."""
    return f"""
local epoch = redis.call('GET', {key})
if not epoch then
  redis.call('SET', {key}, ARGV[1], 'NX')
  epoch = redis.call('GET', {key})
end
"""


_LOOKUP = (
    _epoch_lua("KEYS[2]")
    + """local seq = redis.call('GET', KEYS[3]) or '0'
local drops = redis.call('GET', KEYS[4]) or '0'
local e = redis.call('HMGET', KEYS[1], 'p', 't', 's', 'ep', 'r')
if e[1] and e[4] == epoch then
  local s, r = tonumber(e[3]), tonumber(e[5] or '0')
  for tag in string.gmatch(e[2], '%S+') do
    local v = redis.call('GET', ARGV[2] .. tag)
    if v and tonumber(v) > s then return {0, epoch, seq, drops} end
    v = redis.call('GET', ARGV[3] .. tag)
    if v and tonumber(v) > r then return {0, epoch, seq, drops} end
  end
  return {1, e[1], redis.call('PTTL', KEYS[1])}
end
return {0, epoch, seq, drops}
"""
)
_STORE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local s, r = tonumber(ARGV[2]), tonumber(ARGV[7])
for tag in string.gmatch(ARGV[6], '%S+') do
  local v = redis.call('GET', ARGV[5] .. tag)
  if v and tonumber(v) > s then return 0 end
  v = redis.call('GET', ARGV[8] .. tag)
  if v and tonumber(v) > r then return 0 end
end
redis.call('HSET', KEYS[1], 'p', ARGV[3], 't', ARGV[6], 's', ARGV[2], 'ep', ARGV[1], 'r', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
# A read's ticket: the counter with the epoch it belongs to (set here if Redis lost it),
# so that a Redis restarted while the read ran (its counter back at 0, every tag gone)
# cannot pass for one no write touched.
_TICKET = _epoch_lua("KEYS[1]") + "return {epoch, redis.call('GET', KEYS[2]) or '0'}"
_INVALIDATE = """
local s = redis.call('INCR', KEYS[1])
for i = 3, #ARGV do
  redis.call('SET', ARGV[1] .. ARGV[i], s, 'EX', ARGV[2])
end
return s
"""


@dataclass(slots=True)
class ResponseTrace:
    """What one answer read, as it runs: its tags, and whether it read anything a tag
    cannot stand for (then it is not stored)."""

    tags: set[str] = field(default_factory=set)
    untagged: bool = False
    # Reads to audit again whenever the stored answer is served: (action, operation, ids).
    reads: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    # Wall clock: when the first cached copy it read (a stored profile) expires. The
    # answer must not outlive it, or a write that copy's expiry stands for (an import
    # elsewhere) would be hidden longer than the copy itself would hide it.
    expires_at: float = float("inf")


# The trace of the answer being built in this task, if it may be stored. A context
# variable, not a parameter: the reads happen deep in the services, under GraphQL.
TRACE: ContextVar[ResponseTrace | None] = ContextVar("gateway_response_trace", default=None)


# Tags are hashed: they are Redis keys, which outlive an erasure by up to an hour and
# must name nobody (tests/privacy/test_erasure.py looks for ids and e-mails in keys).
def id_tag(customer_id: object) -> str:
    return "i:" + hashlib.sha256(str(customer_id).encode()).hexdigest()[:32]


def email_tag(email: str) -> str:
    return "e:" + hashlib.sha256(email.encode()).hexdigest()[:32]


def trace_ids(ids: Iterable[object]) -> None:
    trace = TRACE.get()
    if trace is not None:
        trace.tags.update(id_tag(i) for i in ids)


def trace_emails(emails: Iterable[str]) -> None:
    trace = TRACE.get()
    if trace is not None:
        trace.tags.update(email_tag(e) for e in emails)


def trace_expiry(expires_at: float) -> None:
    """This answer read a cached copy that expires at ``expires_at`` (wall clock)."""
    trace = TRACE.get()
    if trace is not None and expires_at < trace.expires_at:
        trace.expires_at = expires_at


def trace_untagged() -> None:
    """This answer read something no write invalidates by tag: never store it."""
    trace = TRACE.get()
    if trace is not None:
        trace.untagged = True


@dataclass(frozen=True, slots=True)
class Ticket:
    """The invalidation counter as it stood before an answer was built."""

    epoch: str
    seq: int
    drops: int = 0  # the retraction counter (``retract``), for an answer's ticket


@dataclass(frozen=True, slots=True)
class Hit:
    payload: bytes
    ttl_s: float  # what is left of its life


@dataclass(frozen=True, slots=True)
class Lookup:
    hit: Hit | None
    ticket: Ticket | None  # None: the cache cannot take an answer now (Redis down)


_MISS = Lookup(None, None)


class ResponseCache:
    """Answers by key, in this process or (with the process's guard) in Redis."""

    def __init__(
        self,
        guard: RedisGuard | None,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        tag_ttl_s: float = 3600,
    ) -> None:
        self._guard = guard
        self.max_entries = max_entries
        self.tag_ttl_s = tag_ttl_s  # longer than any entry lives: see store()
        self._scripts: dict[str, Any] = {}
        # In memory: key -> (payload, tags, ticket, expires on the monotonic clock), their
        # payloads ``max_bytes`` at most: 10,000 answers of 256 KiB would be gigabytes.
        self._entries: ByteMemo[str, tuple[bytes, frozenset[str], Ticket, float]] = ByteMemo(
            lambda key, entry: len(key) + len(entry[0]),
            max_entries=max_entries,
            max_bytes=max_bytes,
        )
        self._tags: dict[str, int] = {}
        self._seq = 0
        self._drops: dict[str, int] = {}  # as ``_tags``, for retractions
        self._dseq = 0
        self._epoch = uuid.uuid4().hex

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None and self._guard is not None:
            script = self._scripts[name] = self._guard.client.register_script(source)
        return script

    async def lookup(self, key: str) -> Lookup:
        """The stored answer, if nothing it holds was written since; else the ticket to
        store the answer about to be built under."""
        guard = self._guard
        if guard is None:
            return self._lookup_here(key)
        if guard.owed(_EPOCH):  # an invalidation has not reached Redis yet
            return _MISS
        script = self._script("lookup", _LOOKUP)
        args = [uuid.uuid4().hex, _TAG, _DROP]
        found = await guard.call(
            "response.lookup",
            lambda: script(keys=[_ENTRY + key, _EPOCH, _SEQ, _DROPS], args=args),
            None,
        )
        if not isinstance(found, list) or len(found) not in (3, 4):
            return _MISS
        if found[0] == 1:
            return Lookup(Hit(bytes(found[1]), max(0, int(found[2])) / 1000), None)
        if len(found) != 4:
            return _MISS
        return Lookup(None, Ticket(_text(found[1]), int(found[2]), int(found[3])))

    def _stale_here(self, tags: Iterable[str], ticket: Ticket) -> bool:
        return ticket.epoch != self._epoch or any(
            self._tags.get(t, 0) > ticket.seq or self._drops.get(t, 0) > ticket.drops for t in tags
        )

    def _lookup_here(self, key: str) -> Lookup:
        ticket = Ticket(self._epoch, self._seq, self._dseq)
        if key not in self._entries:
            return Lookup(None, ticket)
        payload, tags, stored, expires = self._entries.get(key)
        left = expires - time.monotonic()
        if left <= 0 or self._stale_here(tags, stored):
            self._entries.pop(key)
            return Lookup(None, ticket)
        return Lookup(Hit(payload, left), None)

    async def store(
        self, key: str, ticket: Ticket, payload: bytes, tags: Iterable[str], ttl_s: float
    ) -> bool:
        """Keep an answer for ``ttl_s`` unless a tag of it was written since ``ticket``."""
        ttl_s = min(ttl_s, self.tag_ttl_s)
        tagged = frozenset(tags)
        if ttl_s <= 0 or not tagged:
            return False
        guard = self._guard
        if guard is None:
            if self._stale_here(tagged, ticket):
                return False
            self._entries.put(key, (payload, tagged, ticket, time.monotonic() + ttl_s))
            return key in self._entries  # not when larger than the whole budget
        script = self._script("store", _STORE)
        args = [ticket.epoch, ticket.seq, payload, int(ttl_s * 1000), _TAG, " ".join(tagged)]
        args += [ticket.drops, _DROP]
        stored = await guard.call(
            "response.store", lambda: script(keys=[_ENTRY + key, _EPOCH], args=args), 0
        )
        return stored == 1

    async def invalidate(self, tags: Iterable[str]) -> None:
        """Drop every answer holding any of ``tags``, on every instance sharing Redis."""
        await self._mark(tags, retract=False)

    async def retract(self, tags: Iterable[str]) -> None:
        """Drop every answer holding any of ``tags`` without counting as a write: for a
        read that finds a write overtook its cached copy, whose answers built on that
        copy must go, while other readers' ``touched_since`` must not see a write."""
        await self._mark(tags, retract=True)

    async def _mark(self, tags: Iterable[str], *, retract: bool) -> None:
        touched = list(dict.fromkeys(tags))
        if not touched:
            return
        guard = self._guard
        if guard is None:
            marks = self._drops if retract else self._tags
            if len(marks) + len(touched) > 10 * self.max_entries:
                # Bounded: forgetting old invalidations means forgetting entries too,
                # and every ticket taken before: an answer built on one may hold a
                # customer whose invalidation is forgotten now, so a new epoch
                # refuses it (as Redis's does when its epoch goes).
                marks.clear()
                self._entries.clear()
                self._epoch = uuid.uuid4().hex
            if retract:
                self._dseq += 1
            else:
                self._seq += 1
            marks.update(dict.fromkeys(touched, self._dseq if retract else self._seq))
            return
        script = self._script("invalidate", _INVALIDATE)
        counter, prefix = (_DROPS, _DROP) if retract else (_SEQ, _TAG)
        args: list[Any] = [prefix, int(self.tag_ttl_s), *touched]
        name = "response.retract" if retract else "response.invalidate"
        done = await guard.call(name, lambda: script(keys=[counter], args=args), None)
        if done is None:
            # Not reached: every stored answer goes instead, as soon as Redis is back.
            await guard.delete([_EPOCH])

    async def invalidate_customers(
        self, customer_ids: Iterable[object], emails: Iterable[str] = ()
    ) -> None:
        await self.invalidate([*(id_tag(c) for c in customer_ids), *(email_tag(e) for e in emails)])

    async def ticket(self) -> Ticket | None:
        """The invalidation counter now and its epoch, for a read about to start (None:
        unknown, Redis not answering): ``touched_since`` later says which of its tags a
        write touched meanwhile, on any instance."""
        guard = self._guard
        if guard is None:
            return Ticket(self._epoch, self._seq)
        if guard.owed(_EPOCH):
            return None
        script = self._script("ticket", _TICKET)
        found: Any = await guard.call(
            "response.ticket",
            lambda: script(keys=[_EPOCH, _SEQ], args=[uuid.uuid4().hex]),
            None,
            optional=True,
        )
        if not isinstance(found, list) or len(found) != 2:
            return None
        return Ticket(_text(found[0]), int(found[1]))

    async def touched_since(self, ticket: Ticket, tags: Iterable[str]) -> set[str]:
        """Which of ``tags`` an invalidation touched after ``ticket`` was taken (all of
        them when that cannot be known: Redis not answering, or its epoch not the
        ticket's, as after a restart that lost the counter and the tags)."""
        wanted = list(dict.fromkeys(tags))
        guard = self._guard
        if guard is None:
            if ticket.epoch != self._epoch:
                return set(wanted)
            return {t for t in wanted if self._tags.get(t, 0) > ticket.seq}
        if not wanted:
            return set()
        keys = [_EPOCH, *(_TAG + t for t in wanted)]
        found = await guard.call(
            "response.touched", lambda: guard.client.mget(keys), None, optional=True
        )
        if not isinstance(found, list) or len(found) != len(keys):
            return set(wanted)
        if found[0] is None or _text(found[0]) != ticket.epoch:
            return set(wanted)
        return {
            t
            for t, v in zip(wanted, found[1:], strict=True)
            if v is not None and int(v) > ticket.seq
        }


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "TRACE",
    "Hit",
    "Lookup",
    "ResponseCache",
    "ResponseTrace",
    "Ticket",
    "email_tag",
    "id_tag",
    "trace_emails",
    "trace_expiry",
    "trace_ids",
    "trace_untagged",
]

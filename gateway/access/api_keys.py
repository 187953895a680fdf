"""API keys: how a client proves who it is, and what it may do.

A key is ``gwk_`` + 43 random URL-safe characters (256 bits), shown once when
created. Only its SHA-256 is stored: a key is random, not a password, so a fast
hash is as strong as a slow one and lets a lookup be one indexed read.

Verified keys are remembered in the process for ``cache_ttl_s`` (default 1 s), so
a busy client costs one database read per second per worker, not one per request;
a revocation therefore takes effect within that time on every instance, and at
once on the instance that revoked it. Concurrent requests with the same unverified
key share one read, and a key in use is re-read in the background once half its
time is up: under steady traffic no request waits for the database, and the
answer in use is never older than ``cache_ttl_s``.

While the database is unreachable, keys this process verified within
``outage_grace_s`` are still accepted, and keys known revoked are still refused
(gateway/access/api_key_grace.py); any other key is answered ``DatabaseUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.access.api_key_grace import OutageGrace
from gateway.db.access_models import ApiKey
from gateway.db.models import utcnow
from gateway.errors import Conflict, DatabaseUnavailable, InvalidInput

logger = logging.getLogger("gateway.api_keys")

PREFIX = "gwk_"
_CACHE_MAX = 10_000

# The demo's admin key, fixed so the README's examples work as written, and therefore
# public: a server accepts it only when started for the demo (`gateway demo`, or
# `gateway serve --insecure-demo`), and `serve` refuses to start while it is active.
DEMO_API_KEY = "gwk_demo_local_only_never_use_in_production"
DEMO_KEY_NAME = "demo"


class Scope(StrEnum):
    PROFILES_READ = "profiles:read"
    PROFILES_WRITE = "profiles:write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    rate_limit_per_minute: int | None  # None: the gateway's default

    def allows(self, scope: Scope) -> bool:
        # An admin key may do everything a narrower key may.
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed to operators: never its secret."""

    id: str
    name: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None


def parse_scopes(raw: Iterable[str]) -> frozenset[Scope]:
    """Scopes from user input; an unknown one is an error naming it and the known ones."""
    found = set()
    for item in raw:
        name = item.strip()
        if not name:
            continue
        try:
            found.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise InvalidInput(f"Unknown scope {name!r}; use {known}", field="scopes") from None
    if not found:
        raise InvalidInput("Give at least one scope", field="scopes")
    return frozenset(found)


_KNOWN_SCOPES = frozenset(s.value for s in Scope)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Create, list, revoke and verify keys; each call is one short transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache_ttl_s: float = 1.0,
        *,
        accept_demo_key: bool = False,
        outage_grace_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._sessions = sessions
        self._ttl = cache_ttl_s
        self._clock = clock  # ages the cache and the grace period (tests pass their own)
        self._grace = OutageGrace(outage_grace_s, cache_ttl_s, self._still_active, clock=clock)
        # Refused outright unless this is the demo: even written into the database
        # after start-up (`gateway demo --database-url …`), the public key opens nothing.
        self._refused = frozenset() if accept_demo_key else frozenset({digest(DEMO_API_KEY)})
        # digest -> (principal or None for "no such key", expiry on the monotonic clock)
        self._verified: dict[str, tuple[Principal | None, float]] = {}
        # Bumped by each revocation: a lookup that started before one does not cache.
        self._revocations = 0
        self._outage = False  # the last read found the database unreachable
        # digest -> the database read under way for it, shared by every caller.
        self._reading: dict[str, asyncio.Task[Principal | None]] = {}
        self._tasks: set[asyncio.Task[Principal | None]] = set()  # every read not yet done

    async def create(
        self,
        name: str,
        scopes: Iterable[Scope],
        rate_limit_per_minute: int | None = None,
        *,
        secret: str | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key: returns the secret (the only time it exists in clear) and its info.

        ``secret`` fixes the key's value; only the demo does that, so its README works.
        """
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput("A key's name is 1 to 100 characters", field="name")
        if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
            raise InvalidInput("The rate limit is at least 1 request a minute", field="rateLimit")
        key = secret or PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            id=secrets.token_hex(8),
            name=name,
            secret_hash=digest(key),
            scopes=sorted(s.value for s in scopes),
            rate_limit_per_minute=rate_limit_per_minute,
            created_at=utcnow(),
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict(f"A key named {name!r} already exists", field="name") from None
        return key, _info(row)

    async def list(self) -> Sequence[KeyInfo]:
        async with self._sessions() as session:
            rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name))
            return [_info(row) for row in rows]

    async def revoke(self, name_or_id: str) -> KeyInfo | None:
        """Revoke a key by name or id; None when there is no such key."""
        async with self._sessions.begin() as session:
            row = await session.scalar(
                select(ApiKey).where((ApiKey.name == name_or_id) | (ApiKey.id == name_or_id))
            )
            if row is None:
                return None
            if row.revoked_at is None:
                await session.execute(
                    update(ApiKey).where(ApiKey.id == row.id).values(revoked_at=utcnow())
                )
                await session.refresh(row)
            info = _info(row)
        # Evicted after the commit, and lookups already under way do not cache their
        # (possibly pre-revocation) answer: the key is refused from now on.
        self._revocations += 1
        self._reading = {}  # reads under way began before the revocation: not shared
        self._verified = {
            h: entry
            for h, entry in self._verified.items()
            if entry[0] is None or entry[0].key_id != info.id
        }
        self._grace.revoked_key(lambda principal: principal.key_id == info.id)
        return info

    async def authenticate(self, key: str) -> Principal | None:
        """The caller a presented key stands for; None if unknown or revoked."""
        return await self.authenticate_digest(digest(key))

    async def authenticate_digest(self, hashed: str) -> Principal | None:
        """As ``authenticate``, from the key's SHA-256 (hex): what a console session
        keeps, so the key itself is posted once and never held after sign-in."""
        if hashed in self._refused:
            return None
        now = self._clock()
        cached = self._verified.get(hashed)
        if cached is not None and cached[1] > now:
            if cached[1] - now < self._ttl / 2 and hashed not in self._reading:
                self._read(hashed)  # refresh ahead; this request keeps the fresh answer
            return cached[0]
        if self._outage:
            # The last read found the database unreachable: answer from the grace period
            # at once, and let one read in the background find it back, rather than make
            # every request wait out the connect timeout (2 s) each time an entry lapses.
            with contextlib.suppress(DatabaseUnavailable):
                principal = self._grace.during_outage(hashed, now)
                if hashed not in self._reading:
                    self._read(hashed)
                return principal
        reading = self._reading.get(hashed) or self._read(hashed)
        try:
            return await asyncio.shield(reading)  # one caller's cancellation spares the others
        except DatabaseUnavailable:
            self._outage = True
            principal = self._grace.during_outage(hashed, now)  # or raises
            if self._ttl > 0:
                # Answered for a while without a read each: the next read, in the
                # background, finds the database back (or not).
                self._verified[hashed] = (principal, now + self._ttl)
            return principal

    async def known_revoked(self, key: str) -> bool:
        """Whether this process knows ``key`` revoked, so refuses it even while the
        database is unreachable."""
        return self._grace.refuses(digest(key))

    async def _still_active(self, hashes: Collection[str]) -> set[str]:
        """Which of these digests are stored and not revoked (one read)."""
        async with self._sessions() as session:
            found = await session.scalars(
                select(ApiKey.secret_hash).where(
                    ApiKey.secret_hash.in_(list(hashes)), ApiKey.revoked_at.is_(None)
                )
            )
            return set(found)

    def _read(self, hashed: str) -> asyncio.Task[Principal | None]:
        task = asyncio.create_task(self._lookup(hashed), name="api-key-lookup")
        self._reading[hashed] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(hashed, done))
        return task

    def _finished(self, hashed: str, task: asyncio.Task[Principal | None]) -> None:
        self._tasks.discard(task)
        if self._reading.get(hashed) is task:  # a revocation may have replaced it
            del self._reading[hashed]
        # A refresh ahead has no caller to raise to: log its failure here (the cached
        # answer stands until it expires; then a caller's own read raises). An outage
        # is said once by whoever answers it, not once a key a second.
        if (
            not task.cancelled()
            and (error := task.exception()) is not None
            and not isinstance(error, DatabaseUnavailable)
        ):
            logger.warning("API key lookup failed: %s", type(error).__name__)

    async def is_active(self, key: str) -> bool:
        """Whether ``key`` is stored and not revoked (read now, not from the cache)."""
        async with self._sessions() as session:
            found = await session.scalar(
                select(ApiKey.id).where(
                    ApiKey.secret_hash == digest(key), ApiKey.revoked_at.is_(None)
                )
            )
        return found is not None

    async def enable_demo_key(self) -> None:
        """The demo's key, created, or active again if an earlier demo's was revoked.

        Only `gateway demo` calls this; a server not started for the demo refuses the key.
        """
        async with self._sessions.begin() as session:
            row = await session.scalar(
                select(ApiKey).where(ApiKey.secret_hash == digest(DEMO_API_KEY))
            )
            if row is not None:
                row.revoked_at = None
                return
        await self.create(DEMO_KEY_NAME, {Scope.ADMIN}, secret=DEMO_API_KEY)

    async def _lookup(self, hashed: str) -> Principal | None:
        started = self._clock()
        revocations = self._revocations
        async with self._sessions() as session:
            row = await session.scalar(
                select(ApiKey).where(ApiKey.secret_hash == hashed, ApiKey.revoked_at.is_(None))
            )
        self._outage = False
        principal = (
            Principal(
                key_id=row.id,
                name=row.name,
                scopes=frozenset(Scope(s) for s in row.scopes if s in _KNOWN_SCOPES),
                rate_limit_per_minute=row.rate_limit_per_minute,
            )
            if row is not None
            else None
        )
        if revocations == self._revocations:
            self._grace.verified(hashed, principal, started)
        if self._ttl > 0 and revocations == self._revocations:
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()  # bounded: random bad keys cannot grow it forever
            # Aged from when the read started: no answer outlives the TTL.
            self._verified[hashed] = (principal, started + self._ttl)
        return principal

    async def aclose(self) -> None:
        """Wait out reads under way (revocations included), so none outlives the engine."""
        await self._grace.aclose()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        scopes=tuple(row.scopes),
        rate_limit_per_minute=row.rate_limit_per_minute,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )

"""What a process may still believe about API keys while the database is unreachable.

Keys are verified against the database (gateway/access/api_keys.py). When that read fails
because the database cannot be reached (``DatabaseUnavailable``, and nothing else), a
key this process verified within ``grace_s`` is accepted as it was then; every other
key is refused. A revocation made before the outage still holds:

- on the instance that made it, at once (``revoked``);
- on every other instance, within ``recheck_s``: the keys held here are re-read
  together in the background every ``recheck_s``, and one found revoked (or gone) is
  dropped and remembered as refused. Re-reading does not make a key "recently
  verified": only a request's own verification does, so a key nobody used for
  ``grace_s`` does not outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

from gateway.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from gateway.access.api_keys import Principal

logger = logging.getLogger("gateway.api_keys")
_MAX_KEYS = 1_000  # keys held per process; more and the oldest verified go first
_MAX_REFUSED = 10_000

# digests -> the subset still stored and not revoked
Recheck = Callable[[Collection[str]], Awaitable[set[str]]]


class OutageGrace:
    def __init__(
        self,
        grace_s: float,
        recheck_s: float,
        recheck: Recheck,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self._recheck_s = max(recheck_s, 1.0)
        self._recheck = recheck
        # digest -> (principal, monotonic start of its last successful verification)
        self._held: dict[str, tuple[Principal, float]] = {}
        self._refused: set[str] = set()  # digests known revoked
        self._task: asyncio.Task[None] | None = None

    def verified(self, hashed: str, principal: Principal | None, started: float) -> None:
        """A request's read of the key began at ``started`` and found ``principal``."""
        if self.grace_s <= 0:
            return
        if principal is None:
            if self._held.pop(hashed, None) is not None:
                self._refuse(hashed)  # held before, gone now: revoked
            return
        self._refused.discard(hashed)
        if len(self._held) >= _MAX_KEYS and hashed not in self._held:
            oldest = min(self._held, key=lambda h: self._held[h][1])
            del self._held[oldest]
        self._held[hashed] = (principal, started)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._recheck_forever(), name="api-key-recheck")

    def revoked(self, hashes: Collection[str]) -> None:
        for hashed in hashes:
            self._held.pop(hashed, None)
            self._refuse(hashed)

    def revoked_key(self, matches: Callable[[Principal], bool]) -> None:
        """Drop every held key whose principal ``matches`` (a revocation by id)."""
        self.revoked([h for h, (principal, _) in self._held.items() if matches(principal)])

    def refuses(self, hashed: str) -> bool:
        return hashed in self._refused

    def during_outage(self, hashed: str, now: float) -> Principal | None:
        """The principal to accept while the database is down; None for a key known
        revoked; raises ``DatabaseUnavailable`` for a key this process cannot vouch for
        (unknown here, or verified too long ago)."""
        if hashed in self._refused:
            return None
        held = self._held.get(hashed)
        if held is not None and now - held[1] <= self.grace_s:
            return held[0]
        raise DatabaseUnavailable("The database is unreachable and this key was not verified "
                                  "recently; try again shortly.")  # fmt: skip

    def _refuse(self, hashed: str) -> None:
        if len(self._refused) >= _MAX_REFUSED:
            self._refused.clear()
        self._refused.add(hashed)

    async def _recheck_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self._recheck_s)
            now = self._clock()
            # Keys in use are re-read by their requests; the others are checked here.
            idle = [h for h, (_, at) in self._held.items() if now - at > self._recheck_s]
            expired = [h for h in idle if now - self._held[h][1] > self.grace_s]
            for hashed in expired:
                del self._held[hashed]
            idle = [h for h in idle if h in self._held]
            if not idle:
                continue
            try:
                active = await self._recheck(idle)
            except DatabaseUnavailable:
                continue  # an outage: what is held stands, until its grace runs out
            except Exception:
                logger.warning("API keys not re-checked", exc_info=True)
                continue
            self.revoked([h for h in idle if h not in active and h in self._held])

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

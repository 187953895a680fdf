"""Console sessions signed out before they expired, shared by every instance through the
database: a signed cookie cannot be taken back from a browser, so the server keeps the
sessions that ended and refuses them (``SignOuts.ended``) until they would have expired.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.access_models import ConsoleSignOut
from gateway.db.models import utcnow


def session_digest(token: str) -> str:
    """How a session is named here: the digest of its own random token."""
    return hashlib.sha256(token.encode()).hexdigest()


class SignOuts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_s: int) -> None:
        self._sessions = sessions
        self._ttl = timedelta(seconds=ttl_s)

    async def end(self, token: str) -> None:
        """Sign the session out everywhere; sessions past their time are forgotten."""
        now = utcnow()
        async with self._sessions() as session:
            await session.execute(delete(ConsoleSignOut).where(ConsoleSignOut.expires_at < now))
            session.add(
                ConsoleSignOut(session_digest=session_digest(token), expires_at=now + self._ttl)
            )
            try:
                await session.commit()
            except IntegrityError:  # signed out twice (two tabs): once is enough
                await session.rollback()

    async def ended(self, token: str) -> bool:
        async with self._sessions() as session:
            found = await session.scalar(
                select(ConsoleSignOut.session_digest).where(
                    ConsoleSignOut.session_digest == session_digest(token)
                )
            )
        return found is not None

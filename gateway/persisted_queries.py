"""Automatic persisted queries (Apollo's protocol): a client sends the SHA-256 of a
document instead of the document; the gateway remembers documents it has seen.

Stored in the shared cache, so every instance knows a document once any has, and an
ESP can put a short, cacheable GET URL in a send.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiocache.base import BaseCache

from gateway.errors import GatewayError

_TTL_S = 30 * 86_400  # clients re-register on a miss; bound what unused hashes cost


class PersistedQueryNotFound(GatewayError):
    code = "PERSISTED_QUERY_NOT_FOUND"


class PersistedQueryMismatch(GatewayError):
    code = "PERSISTED_QUERY_HASH_MISMATCH"


class PersistedQueries:
    def __init__(self, backend: BaseCache) -> None:
        self._backend = backend

    @staticmethod
    def _key(digest: str) -> str:
        return f"apq:v1:{digest}"

    async def resolve(self, query: str | None, extensions: dict[str, Any] | None) -> str | None:
        """The document to run: the one given (remembered under its hash), or the one
        remembered for the hash given."""
        persisted = (extensions or {}).get("persistedQuery")
        if not isinstance(persisted, dict):
            return query
        digest = str(persisted.get("sha256Hash") or "").lower()
        if query is not None:
            if hashlib.sha256(query.encode()).hexdigest() != digest:
                raise PersistedQueryMismatch("provided sha256Hash does not match the query")
            await self._backend.set(self._key(digest), query, ttl=_TTL_S)
            return query
        stored = await self._backend.get(self._key(digest))
        if not isinstance(stored, str):
            raise PersistedQueryNotFound("PersistedQueryNotFound")
        return stored

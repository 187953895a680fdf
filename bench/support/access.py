"""The benchmarks' API key: admin, on a throwaway database, with a rate limit no run
reaches (a benchmark measures serving, not the limiter's refusals)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.access.api_keys import ApiKeys, Scope

BENCH_KEY = "gwk_bench_only_key_of_a_throwaway_database"
AUTH = {"Authorization": f"Bearer {BENCH_KEY}"}


async def create_bench_key(sessions: async_sessionmaker[AsyncSession]) -> None:
    await ApiKeys(sessions).create("bench", {Scope.ADMIN}, 10**9, secret=BENCH_KEY)

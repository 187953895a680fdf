"""The database the stream consumer's tests write to: the test Postgres, migrated once
per test module, and one engine per module. Imported by the modules that use it (not a
conftest), so no other stream test's fixtures change."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade


@pytest.fixture(scope="module")
def migrated(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture(scope="module")
async def engine(migrated: str) -> AsyncIterator[AsyncEngine]:
    database = create_engine(migrated)
    yield database
    await database.dispose()

"""The long-lived parts of a running gateway, opened and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.customers import CustomerStore
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.settings import Settings


@dataclass(slots=True)
class Services:
    """Everything a request handler may use; built once per process, never per request."""

    settings: Settings
    engine: AsyncEngine
    customers: CustomerStore

    @classmethod
    def open(cls, settings: Settings) -> Services:
        engine = create_engine(settings.database_url)
        sessions = create_sessionmaker(engine)
        return cls(settings=settings, engine=engine, customers=CustomerStore(sessions))

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def database_ready(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means "not ready", reported, not raised
            return False
        return True

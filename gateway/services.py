"""The long-lived parts of a running gateway, opened and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.config import UpstreamsConfig
from adapters.registry import aclose_adapters, build_adapters
from gateway.cache import UpstreamCache, build_cache
from gateway.customers import CustomerStore
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.federation import Federation
from gateway.notifications import Notifications, build_notifications
from gateway.persisted_queries import PersistedQueries
from gateway.profile_cache import CachedCustomers
from gateway.recommendations.serving import Recommender, open_recommender
from gateway.settings import Settings
from gateway.templates import TemplateStore, open_templates
from gateway.webhooks import WebhookIngest, Webhooks


@dataclass(slots=True)
class Services:
    """Everything a request handler may use; built once per process, never per request."""

    settings: Settings
    engine: AsyncEngine
    customers: CachedCustomers
    federation: Federation
    persisted_queries: PersistedQueries
    templates: TemplateStore
    notifications: Notifications
    webhooks: Webhooks
    recommendations: Recommender

    @classmethod
    def open(cls, settings: Settings, upstreams: UpstreamsConfig | None = None) -> Services:
        """Open pools and clients; the SOAP WSDL is parsed here, once, not per request."""
        config = upstreams if upstreams is not None else settings.load_upstreams()
        engine = create_engine(settings.database_url)
        sessions = create_sessionmaker(engine)
        cache = UpstreamCache(build_cache(settings.cache_url))
        federation = Federation(
            build_adapters(config),
            cache,
            {upstream.name: upstream.cache for upstream in config.enabled()},
        )
        customers = CachedCustomers(
            CustomerStore(sessions), cache.backend, settings.profile_cache_ttl_s
        )
        notifications = build_notifications(settings.cache_url)
        webhooks = Webhooks(
            WebhookIngest(engine, federation, customers, notifications), settings.webhook_secrets
        )
        return cls(
            settings=settings,
            engine=engine,
            customers=customers,
            federation=federation,
            persisted_queries=PersistedQueries(cache.backend),
            templates=open_templates(sessions),
            notifications=notifications,
            webhooks=webhooks,
            recommendations=open_recommender(sessions, federation, settings),
        )

    async def aclose(self) -> None:
        await self.notifications.aclose()
        await aclose_adapters(self.federation.adapters)
        await self.federation.cache.close()
        await self.engine.dispose()

    async def database_ready(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

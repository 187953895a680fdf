"""The long-lived parts of a running gateway, opened and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.breaker import CircuitBreaker
from adapters.config import UpstreamsConfig
from adapters.registry import aclose_adapters, build_adapters
from gateway.api_keys import ApiKeys, Principal
from gateway.audit import AuditLog
from gateway.cache import UpstreamCache, build_cache
from gateway.consent import ConsentStore
from gateway.customers import CustomerStore
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.erasure import Erasure, Tombstones
from gateway.federation import Federation
from gateway.identity.source_ids import SourceIds
from gateway.notifications import Notifications, build_notifications
from gateway.persisted_queries import PersistedQueries
from gateway.profile_cache import CachedCustomers
from gateway.rate_limit import RateLimiter
from gateway.recommendations.serving import Recommender, open_recommender
from gateway.render import Budgets, Renderer
from gateway.render_pool import RenderPool
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
    renderer: Renderer
    templates: TemplateStore
    notifications: Notifications
    webhooks: Webhooks
    api_keys: ApiKeys
    audit: AuditLog
    consents: ConsentStore
    erasure: Erasure
    rate_limiter: RateLimiter
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
        tombstones = Tombstones.from_settings(settings)
        source_ids = SourceIds.from_upstreams(config)
        customers = CachedCustomers(
            CustomerStore(sessions, tombstones, source_ids),
            cache.backend,
            settings.profile_cache_ttl_s,
        )
        notifications = build_notifications(settings.cache_url)
        renderer = Renderer(RenderPool(settings.render_workers), render_budgets(settings))
        webhooks = Webhooks(
            WebhookIngest(
                engine, federation, customers, notifications, tombstones, source_ids=source_ids
            ),
            settings.webhook_secrets,
        )
        return cls(
            settings=settings,
            engine=engine,
            customers=customers,
            federation=federation,
            persisted_queries=PersistedQueries(
                cache.backend,
                max_bytes=settings.persisted_query_max_bytes,
                max_count=settings.persisted_queries_max,
                ttl_s=settings.persisted_query_ttl_s,
            ),
            renderer=renderer,
            templates=open_templates(sessions, renderer),
            notifications=notifications,
            webhooks=webhooks,
            api_keys=ApiKeys(
                sessions, settings.api_key_cache_ttl_s, accept_demo_key=settings.insecure_demo
            ),
            audit=AuditLog(sessions, settings.audit_flush_interval_s),
            consents=ConsentStore(sessions),
            erasure=Erasure(sessions, tombstones),
            rate_limiter=RateLimiter(settings.cache_url),
            recommendations=open_recommender(sessions, federation, settings),
        )

    async def aclose(self) -> None:
        await self.customers.aclose()
        await self.renderer.aclose()
        await self.audit.aclose()
        await self.api_keys.aclose()
        await self.rate_limiter.aclose()
        await self.notifications.aclose()
        await aclose_adapters(self.federation.adapters)
        await self.federation.cache.close()
        await self.engine.dispose()

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every circuit breaker of this process, by name, for /readyz."""
        return {name: adapter.breaker for name, adapter in self.federation.adapters.items()}

    def rate_limit_of(self, principal: Principal) -> int:
        """Requests a minute this key may make."""
        return principal.rate_limit_per_minute or self.settings.rate_limit_per_minute

    async def rate_limit(self, principal: Principal, requests: int = 1) -> float | None:
        """None when this key may make ``requests`` more requests now, else seconds to
        wait (an operation counts as several by its cost)."""
        return await self.rate_limiter.acquire(
            principal.key_id, self.rate_limit_of(principal), cost=requests, name=principal.name
        )

    async def database_ready(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True


def render_budgets(settings: Settings) -> Budgets:
    return Budgets(
        steps=settings.render_max_steps,
        output=settings.render_max_output_bytes,
        seconds=settings.render_timeout_s,
        request_steps=settings.render_request_max_steps,
        request_output=settings.render_request_max_output_bytes,
        request_seconds=settings.render_request_timeout_s,
    )

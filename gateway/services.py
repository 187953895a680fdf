"""The long-lived parts of a running gateway, opened and closed by the app's lifespan."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from opentelemetry.sdk.trace.export import SpanExporter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.base import ClientBackedAdapter
from adapters.config import UpstreamsConfig
from adapters.protocols import Adapter
from adapters.registry import aclose_adapters, build_adapters
from adapters.transport.breaker import CircuitBreaker
from gateway.access.api_keys import ApiKeys, Principal
from gateway.access.rate_limit import RateLimiter
from gateway.access.sign_outs import SignOuts
from gateway.db.engine import create_sessionmaker, engine_for
from gateway.db.retries import RetryPolicy
from gateway.experiments.campaigns import Campaigns
from gateway.experiments.impressions import ImpressionLog
from gateway.experiments.results import ExperimentResults
from gateway.experiments.running import Experiments
from gateway.experiments.served import ServedRecommendations
from gateway.experiments.store import ExperimentStore
from gateway.experiments.tracking import Tracker
from gateway.export.runs import Runs
from gateway.identity.reviews import ReviewQueue, review_queue
from gateway.identity.source_ids import SourceIds
from gateway.ingest.notifications import Notifications, build_notifications
from gateway.ingest.webhook_receiver import Webhooks
from gateway.ingest.webhooks import WebhookIngest
from gateway.observability.overview import Overview
from gateway.observability.tracing import Tracing
from gateway.observability.upstream_telemetry import UpstreamTelemetry
from gateway.privacy.audit import AuditLog
from gateway.privacy.consent import ConsentStore
from gateway.privacy.erasure import Erasure
from gateway.privacy.forgetting import Forgetting
from gateway.privacy.tombstones import Tombstones
from gateway.profiles.customers import CustomerStore
from gateway.profiles.profile_cache import CachedCustomers
from gateway.recommendations.serving import Recommender, open_recommender
from gateway.row_buffer import Lull
from gateway.scores.store import ScoreStore
from gateway.segments.store import SegmentStore
from gateway.settings import Settings
from gateway.templates.render import Budgets, Renderer
from gateway.templates.render_pool import RenderPool
from gateway.templates.store import TemplateStore, open_templates
from gateway.upstreams.cache import UpstreamCache, build_cache
from gateway.upstreams.event_store import EventStore
from gateway.upstreams.federation import Federation
from gateway.upstreams.redis_client import RedisGuard, open_client
from gateway.upstreams.stored_behaviour import StoredBehaviour


@dataclass(slots=True)
class Services:
    """Everything a request handler may use; built once per process, never per request."""

    settings: Settings
    engine: AsyncEngine
    customers: CachedCustomers
    federation: Federation
    # The behavioural fields configured to be read from the stored events.
    stored_behaviour: StoredBehaviour
    renderer: Renderer
    templates: TemplateStore
    notifications: Notifications
    webhooks: Webhooks
    api_keys: ApiKeys
    sign_outs: SignOuts
    audit: AuditLog
    consents: ConsentStore
    erasure: Erasure
    # The erasure and the dropping of every cached copy, as one step.
    forgetting: Forgetting
    rate_limiter: RateLimiter
    recommendations: Recommender
    # Lists served through the running experiment, tracked and recorded as impressions.
    served: ServedRecommendations
    experiments: Experiments
    impressions: ImpressionLog
    experiment_results: ExperimentResults
    campaigns: Campaigns
    # Exports and retention runs started by the API or the schedule, one at a time.
    runs: Runs
    scores: ScoreStore
    # The stored events, read by the behaviour fields and by the console's timeline.
    events: EventStore
    # The identity review queue (the same one per engine as the GraphQL resolvers').
    reviews: ReviewQueue
    # The operator's figures: metrics, sync runs, the last export (the console's health).
    overview: Overview
    segments: SegmentStore
    # The process's one Redis client behind its guard (None: memory:// cache).
    redis: RedisGuard | None = None
    # This app's part in tracing (off unless an OTLP endpoint is set).
    tracing: Tracing | None = None

    @classmethod
    def open(
        cls,
        settings: Settings,
        upstreams: UpstreamsConfig | None = None,
        span_exporter: SpanExporter | None = None,
    ) -> Services:
        """Open pools and clients; the SOAP WSDL is parsed here, once, not per request.
        ``span_exporter`` (tests) turns tracing on with that exporter."""
        config = upstreams if upstreams is not None else settings.load_upstreams()
        engine = engine_for(settings)
        sessions = create_sessionmaker(engine)
        redis = open_redis(settings)
        cache = UpstreamCache(build_cache(settings.cache_url, redis))
        federation = Federation(
            # Redis shares a cost-limited shop's bucket and the call pacers between instances.
            build_adapters(config, redis=redis, telemetry=UpstreamTelemetry()),
            cache,
            {upstream.name: upstream.cache for upstream in config.enabled()},
        )
        tracing = Tracing.open(settings, span_exporter)
        tracing.instrument(
            engine=engine,
            redis=redis.client if redis is not None else None,
            http=http_clients(federation.adapters.values()),
        )
        tombstones = Tombstones.from_settings(settings)
        source_ids = SourceIds.from_upstreams(config)
        retry = RetryPolicy.of(settings)
        customers = CachedCustomers(
            CustomerStore(sessions, tombstones, source_ids, retry),
            cache.backend,
            settings.profile_cache_ttl_s,
            cache.responses,
        )
        notifications = build_notifications(redis, settings)
        renderer = Renderer(RenderPool(settings.render_workers), render_budgets(settings))
        erasure = Erasure(sessions, tombstones, retry=retry)
        recommendations = open_recommender(sessions, federation, settings)
        forgetting = Forgetting(erasure, customers, federation, recommendations)
        audit = AuditLog(sessions, settings.audit_flush_interval_s)
        events = EventStore(engine)
        tracker = Tracker(settings.tracking_hmac_key())
        experiments = Experiments(ExperimentStore(sessions), settings.experiments_ttl_s)
        impressions = ImpressionLog(
            sessions,
            settings.impression_flush_interval_s,
            enabled=settings.recs_impressions,
            lull=Lull(settings.impression_busy_lists_per_s, settings.impression_max_delay_s)
            if settings.impression_busy_lists_per_s > 0
            else None,
        )
        webhooks = Webhooks(
            WebhookIngest(
                engine,
                federation,
                customers,
                notifications,
                tombstones,
                source_ids=source_ids,
                retry=retry,
                tracker=tracker,
            ),
            settings.webhook_secrets,
            mandrill_max_age_s=settings.mandrill_max_age_s(),
        )
        return cls(
            settings=settings,
            engine=engine,
            customers=customers,
            federation=federation,
            stored_behaviour=StoredBehaviour(events, config.fields),
            renderer=renderer,
            templates=open_templates(sessions, renderer),
            notifications=notifications,
            webhooks=webhooks,
            api_keys=ApiKeys(
                sessions,
                settings.api_key_cache_ttl_s,
                accept_demo_key=settings.insecure_demo,
                outage_grace_s=settings.api_key_outage_grace_s,
            ),
            sign_outs=SignOuts(sessions, settings.console_session_ttl_s),
            audit=audit,
            consents=ConsentStore(sessions),
            erasure=erasure,
            forgetting=forgetting,
            rate_limiter=RateLimiter(redis),
            recommendations=recommendations,
            served=ServedRecommendations(recommendations, experiments, impressions, tracker),
            experiments=experiments,
            impressions=impressions,
            experiment_results=ExperimentResults(
                engine, impressions, settings.conversion_window_hours
            ),
            campaigns=Campaigns(engine, settings.conversion_window_hours),
            runs=Runs(settings, engine, forgetting, audit),
            # Serving reads scores only: no model is loaded, so no key is held.
            scores=ScoreStore(sessions, None),
            events=events,
            reviews=review_queue(engine),
            overview=Overview(
                sessions,
                export_dir=settings.export_dir,
                multiprocess_dir=settings.metrics_multiprocess_dir,
            ),
            segments=SegmentStore(sessions),
            redis=redis,
            tracing=tracing,
        )

    async def aclose(self) -> None:
        await self.runs.aclose()  # first: a run under way uses the rest
        await self.customers.aclose()
        await self.renderer.aclose()
        await self.audit.aclose()
        await self.impressions.aclose()
        await self.api_keys.aclose()
        await self.rate_limiter.aclose()
        await self.notifications.aclose()
        await aclose_adapters(self.federation.adapters)
        await self.federation.cache.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        if self.tracing is not None:
            self.tracing.close()  # last: the closing above is traced too

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every circuit breaker of this process, by name, for /readyz."""
        breakers = {name: adapter.breaker for name, adapter in self.federation.adapters.items()}
        if self.redis is not None:
            # The shared cache's own circuit: "redis: open in worker N" on /readyz.
            breakers["redis"] = self.redis.breaker
        return breakers

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
        except Exception:  # noqa: BLE001 - readiness: any failure means "not ready"
            return False
        return True


def http_clients(adapters: Iterable[Adapter]) -> list[httpx.AsyncClient]:
    """The upstreams' HTTP clients, for tracing to instrument."""
    return [
        client
        for adapter in adapters
        if isinstance(adapter, ClientBackedAdapter)
        for client in adapter.http_clients()
    ]


def open_redis(settings: Settings) -> RedisGuard | None:
    """The process's Redis client behind its guard, when the cache is Redis."""
    if not settings.cache_url.startswith(("redis://", "rediss://")):
        return None
    client = open_client(
        settings.cache_url,
        timeout_s=settings.redis_timeout_s,
        retries=settings.redis_retries,
        health_check_interval_s=settings.redis_health_check_interval_s,
    )
    return RedisGuard(
        client,
        timeout_s=settings.redis_op_timeout_s,
        failure_threshold=settings.redis_breaker_failures,
        reset_timeout_s=settings.redis_breaker_reset_s,
    )


def render_budgets(settings: Settings) -> Budgets:
    return Budgets(
        steps=settings.render_max_steps,
        output=settings.render_max_output_bytes,
        seconds=settings.render_timeout_s,
        request_steps=settings.render_request_max_steps,
        request_output=settings.render_request_max_output_bytes,
        request_seconds=settings.render_request_timeout_s,
    )

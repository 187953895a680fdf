"""Building a consumer from the settings: its transport, its store, its after-commit
work, for ``gateway consume`` and for a consumer inside ``gateway serve``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.config import UpstreamsConfig
from adapters.registry import aclose_adapters, build_adapters
from gateway.db.engine import create_sessionmaker, engine_for
from gateway.db.retries import RetryPolicy
from gateway.identity.source_ids import SourceIds
from gateway.ingest.notifications import Notifications, build_notifications
from gateway.ingest.streams.consumer import StreamConsumer
from gateway.ingest.streams.customer_updates import CustomerUpdates
from gateway.ingest.streams.event_batches import EventBatches
from gateway.ingest.streams.transport import Transport
from gateway.privacy.tombstones import Tombstones
from gateway.profiles.customers import CustomerStore
from gateway.profiles.profile_cache import CachedCustomers
from gateway.services import Services, open_redis
from gateway.settings import Settings, SettingsError
from gateway.upstreams.cache import UpstreamCache, build_cache
from gateway.upstreams.federation import Federation
from gateway.upstreams.redis_client import RedisGuard


@dataclass(slots=True)
class ConsumerParts:
    """What ``gateway consume`` opens of ``Services``: the database, and the caches and
    notifications it invalidates and publishes after each commit (no render pool, no
    recommender: a consumer process needs neither). ``gateway retention run`` opens the
    same to drop the caches of the customers it erases."""

    settings: Settings
    engine: AsyncEngine
    redis: RedisGuard | None
    cache: UpstreamCache
    federation: Federation
    customers: CachedCustomers
    notifications: Notifications
    source_ids: SourceIds

    @classmethod
    def open(
        cls, settings: Settings, upstreams: UpstreamsConfig, *, batch: bool = False
    ) -> ConsumerParts:
        """The parts, on an engine whose statements are bounded unless ``batch`` (the
        CLI's imports, syncs and retention runs: ``engine_for``)."""
        engine = engine_for(settings, batch=batch)  # the timeouts ``Services`` uses
        # The cache's timeouts bound a request's wait for Redis; this process's calls
        # are a batch's bulk invalidations, timed on a loop that parses the next batch
        # meanwhile (and, on a loaded machine, waits for a CPU): held to the requests'
        # half second they timed out often enough in a row to open the circuit, and
        # the circuit open costs notifications and every stored answer's epoch.
        patience = max(settings.stream_cache_timeout_s, settings.redis_op_timeout_s)
        redis = open_redis(
            settings.model_copy(
                update={
                    "redis_timeout_s": max(patience, settings.redis_timeout_s),
                    "redis_op_timeout_s": patience,
                }
            )
        )
        cache = UpstreamCache(build_cache(settings.cache_url, redis))
        federation = Federation(
            build_adapters(upstreams),
            cache,
            {upstream.name: upstream.cache for upstream in upstreams.enabled()},
        )
        source_ids = SourceIds.from_upstreams(upstreams)
        retry = RetryPolicy.of(settings)
        store = CustomerStore(
            create_sessionmaker(engine), Tombstones.from_settings(settings), source_ids, retry
        )
        customers = CachedCustomers(
            store, cache.backend, settings.profile_cache_ttl_s, cache.responses
        )
        notifications = build_notifications(redis, settings)
        return cls(settings, engine, redis, cache, federation, customers, notifications, source_ids)

    def consumer(self, transport: Transport | None = None) -> StreamConsumer:
        return open_consumer(
            self.settings,
            self.engine,
            self.federation,
            self.customers,
            self.notifications,
            self.source_ids,
            transport,
        )

    async def aclose(self) -> None:
        await self.customers.aclose()
        await self.notifications.aclose()
        await aclose_adapters(self.federation.adapters)
        await self.cache.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def open_transport(settings: Settings) -> Transport:
    """The configured engine's transport (not connected yet: ``open`` does)."""
    if settings.stream_transport == "nats":
        from gateway.ingest.streams.jetstream import JetStream

        return JetStream(
            settings.stream_nats_url,
            stream=settings.stream_name,
            subject=settings.stream_subject,
            durable=settings.stream_group,
            ack_wait_s=settings.stream_claim_idle_s,
            max_attempts=settings.stream_max_attempts,
            dead_letter_max=settings.stream_dead_letter_maxlen,
        )
    from gateway.ingest.streams.redis_streams import RedisStreams

    url = settings.stream_redis_url or settings.cache_url
    if not url.startswith(("redis://", "rediss://")):
        raise SettingsError(
            "GATEWAY_STREAM_REDIS_URL: the redis transport needs a Redis URL "
            "(or GATEWAY_CACHE_URL set to one)"
        )
    return RedisStreams.from_url(
        url,
        settings.stream_name,
        settings.stream_group,
        settings.stream_consumer,
        claim_idle_s=settings.stream_claim_idle_s,
        dead_letter_maxlen=settings.stream_dead_letter_maxlen,
    )


def serving_consumer(
    services: Services, upstreams: UpstreamsConfig | None = None
) -> StreamConsumer:
    """A consumer on the running gateway's own engine, caches and notifications (a
    consumer inside ``gateway serve``)."""
    settings = services.settings
    return open_consumer(
        settings,
        services.engine,
        services.federation,
        services.customers,
        services.notifications,
        SourceIds.from_upstreams(upstreams or settings.load_upstreams()),
    )


def open_consumer(
    settings: Settings,
    engine: AsyncEngine,
    federation: Federation,
    customers: CachedCustomers,
    notifications: Notifications,
    source_ids: SourceIds,
    transport: Transport | None = None,
) -> StreamConsumer:
    batches = EventBatches(
        engine,
        Tombstones.from_settings(settings),
        source_ids=source_ids,
        retry=RetryPolicy.of(settings),
    )
    return StreamConsumer(
        transport if transport is not None else open_transport(settings),
        batches,
        CustomerUpdates(federation, customers, notifications),
        batch_size=settings.stream_batch_size,
        wait_s=settings.stream_wait_s,
        max_attempts=settings.stream_max_attempts,
    )

"""Build the adapters the configuration enables, one per upstream, and close them.

The app calls ``build_adapters`` in its lifespan (it opens connection pools and, for
SOAP, parses the WSDL), keeps the answer for the life of the process and calls
``aclose_adapters`` on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from .config import (
    HubSpotConfig,
    SegmentConfig,
    ShopifyConfig,
    SoapCrmConfig,
    UpstreamsConfig,
)
from .hubspot import HubSpotAdapter
from .protocols import (
    Adapter,
    AnalyticsAdapter,
    BatchOrdersAdapter,
    CommerceAdapter,
    CrmAdapter,
)
from .segment import SegmentAdapter
from .shopify import ShopifyAdapter
from .shopify_graphql import ShopifyGraphQLAdapter
from .soap_crm import SoapCrmAdapter
from .transport.telemetry import NO_TELEMETRY, Telemetry

__all__ = [
    "aclose_adapters",
    "analytics_adapters",
    "build_adapter",
    "build_adapters",
    "commerce_adapters",
    "crm_adapters",
]

logger = logging.getLogger(__name__)


def build_adapter(
    config: HubSpotConfig | SoapCrmConfig | ShopifyConfig | SegmentConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    redis: Any | None = None,
    telemetry: Telemetry = NO_TELEMETRY,
) -> Adapter:
    """The adapter for one upstream's configuration (by its ``kind``, and for a shop its
    ``api``); ``clock`` times its breaker and token refresh; ``redis`` (the gateway's
    guarded Redis, ``cost_bucket.GuardedRedis``) shares a cost-limited upstream's bucket
    and a rate-limited one's call pacer between instances; ``telemetry`` hears of
    quotas, Retry-After and schema drift."""
    if isinstance(config, HubSpotConfig):
        return HubSpotAdapter(config, clock=clock, telemetry=telemetry, redis=redis)
    if isinstance(config, SoapCrmConfig):
        return SoapCrmAdapter(config, clock=clock, telemetry=telemetry)
    if isinstance(config, ShopifyConfig):
        if config.api == "graphql":
            return ShopifyGraphQLAdapter(config, clock=clock, redis=redis, telemetry=telemetry)
        return ShopifyAdapter(config, clock=clock, telemetry=telemetry)
    return SegmentAdapter(config, clock=clock, telemetry=telemetry, redis=redis)


def build_adapters(
    config: UpstreamsConfig, *, redis: Any | None = None, telemetry: Telemetry = NO_TELEMETRY
) -> dict[str, Adapter]:
    """One adapter per enabled upstream, keyed by upstream name."""
    built: dict[str, Adapter] = {}
    try:
        for upstream in config.enabled():
            built[upstream.name] = build_adapter(upstream, redis=redis, telemetry=telemetry)
            logger.info("adapter ready", extra={"upstream": upstream.name, "kind": upstream.kind})
    except BaseException:
        # Do not leak the pools of the ones already built.
        for adapter in built.values():
            _close_soon(adapter)
        raise
    return built


def _close_soon(adapter: Adapter) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(adapter.aclose())
    else:
        task = loop.create_task(adapter.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


async def aclose_adapters(adapters: Mapping[str, Adapter]) -> None:
    """Close every adapter, even when some fail to close."""
    results = await asyncio.gather(
        *(adapter.aclose() for adapter in adapters.values()), return_exceptions=True
    )
    for name, result in zip(adapters, results, strict=True):
        if isinstance(result, BaseException):
            logger.warning(
                "adapter did not close cleanly",
                extra={"upstream": name, "error": type(result).__name__},
            )


def crm_adapters(adapters: Mapping[str, Adapter]) -> list[CrmAdapter]:
    return [cast(CrmAdapter, a) for a in adapters.values() if a.kind == "crm"]


def commerce_adapters(adapters: Mapping[str, Adapter]) -> list[CommerceAdapter]:
    return [cast(CommerceAdapter, a) for a in adapters.values() if a.kind == "commerce"]


def analytics_adapters(adapters: Mapping[str, Adapter]) -> list[AnalyticsAdapter]:
    return [cast(AnalyticsAdapter, a) for a in adapters.values() if a.kind == "analytics"]


if TYPE_CHECKING:
    # mypy proves here that each adapter satisfies its protocol.
    def _conforms(
        hubspot: HubSpotAdapter,
        soap: SoapCrmAdapter,
        shop: ShopifyAdapter,
        graph: ShopifyGraphQLAdapter,
        seg: SegmentAdapter,
    ) -> tuple[CrmAdapter, CrmAdapter, CommerceAdapter, BatchOrdersAdapter, AnalyticsAdapter]:
        return hubspot, soap, shop, graph, seg

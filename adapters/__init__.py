"""The upstream adapters: CRM, commerce and analytics behind one typed border.

The gateway imports from here only: the protocols it codes against, the records it
receives, the errors it maps, the configuration loader and the factory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.transport.breaker import BreakerState, CircuitBreaker

from .config import UpstreamsConfig, UpstreamsConfigError, load_upstreams, load_upstreams_file
from .errors import (
    CircuitOpen,
    InvalidExternalId,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .protocols import Adapter, AnalyticsAdapter, CommerceAdapter, CrmAdapter, Kind
from .records import (
    AnalyticsEvent,
    AnalyticsTraits,
    CommerceCustomer,
    Consents,
    CrmContact,
    ExternalId,
    InventoryLevel,
    LineItem,
    Money,
    Order,
    Product,
    normalise_email,
)

if TYPE_CHECKING:
    from .registry import (
        aclose_adapters,
        analytics_adapters,
        build_adapter,
        build_adapters,
        commerce_adapters,
        crm_adapters,
    )

# The factory pulls in httpx, zeep and tenacity: imported on first use, so that
# `import demo.upstreams` (and anything else wanting only records or errors) stays light.
_REGISTRY = frozenset(
    {
        "aclose_adapters",
        "analytics_adapters",
        "build_adapter",
        "build_adapters",
        "commerce_adapters",
        "crm_adapters",
    }
)


def __getattr__(name: str) -> Any:
    if name in _REGISTRY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Adapter",
    "AnalyticsAdapter",
    "AnalyticsEvent",
    "AnalyticsTraits",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "CommerceAdapter",
    "CommerceCustomer",
    "Consents",
    "CrmAdapter",
    "CrmContact",
    "ExternalId",
    "InvalidExternalId",
    "InventoryLevel",
    "Kind",
    "LineItem",
    "Money",
    "Order",
    "Product",
    "UpstreamAuthError",
    "UpstreamBadResponse",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "UpstreamsConfig",
    "UpstreamsConfigError",
    "aclose_adapters",
    "analytics_adapters",
    "build_adapter",
    "build_adapters",
    "commerce_adapters",
    "crm_adapters",
    "load_upstreams",
    "load_upstreams_file",
    "normalise_email",
]

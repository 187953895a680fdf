"""The upstream adapters: CRM, commerce and analytics behind one typed border.

The gateway imports from here only: the protocols it codes against, the records it
receives, the errors it maps, the configuration loader and the factory.
"""

from __future__ import annotations

from .breaker import BreakerState, CircuitBreaker
from .config import UpstreamsConfig, UpstreamsConfigError, load_upstreams, load_upstreams_file
from .errors import (
    CircuitOpen,
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
from .registry import (
    aclose_adapters,
    analytics_adapters,
    build_adapter,
    build_adapters,
    commerce_adapters,
    crm_adapters,
)

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

"""What the adapters tell the operator about an upstream, beyond success and failure.

Adapters never import the gateway, so they report through this small interface, given
to them when they are built (``build_adapters(..., telemetry=...)``); the gateway's
implementation turns the reports into metrics and logs (gateway/observability/). The
default, ``NO_TELEMETRY``, drops them.

- ``quota``: the rate-limit headroom an answer announced: Shopify's
  ``X-Shopify-Shop-Api-Call-Limit: 32/40`` (calls used of the leaky bucket), the
  GraphQL ``throttleStatus`` (points available of the maximum), HubSpot's
  ``X-HubSpot-RateLimit-Remaining`` / ``-Max`` (per interval) and ``-Daily`` /
  ``-Daily-Remaining``.
- ``retry_after``: a ``Retry-After`` the upstream sent (on a 429 or a 503).
- ``drift``: a payload whose shape differs from what the adapter expects, by field path
  and kind (``missing``, ``type``, ``unknown``); never the value (adapters/payload.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["NO_TELEMETRY", "Quota", "Telemetry", "quotas_in"]


@dataclass(frozen=True, slots=True)
class Quota:
    """One announced limit: ``remaining`` of ``limit`` (calls or points)."""

    name: str  # "calls" (Shopify REST), "points" (GraphQL cost), "interval", "daily"
    remaining: float
    limit: float


class Telemetry(Protocol):
    def quota(self, upstream: str, quota: Quota) -> None: ...

    def retry_after(self, upstream: str, seconds: float) -> None: ...

    def drift(self, upstream: str, path: str, kind: str) -> None: ...


class _Silent:
    def quota(self, upstream: str, quota: Quota) -> None:
        return None

    def retry_after(self, upstream: str, seconds: float) -> None:
        return None

    def drift(self, upstream: str, path: str, kind: str) -> None:
        return None


NO_TELEMETRY: Telemetry = _Silent()


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def quotas_in(headers: Mapping[str, str]) -> Iterator[Quota]:
    """The limits an answer's headers announce (case-insensitive names, as httpx's)."""
    call_limit = headers.get("x-shopify-shop-api-call-limit")
    if call_limit:
        used, _, size = call_limit.partition("/")
        used_n, size_n = _number(used), _number(size)
        if used_n is not None and size_n:
            yield Quota("calls", max(0.0, size_n - used_n), size_n)
    for name, remaining_header, limit_header in (
        ("interval", "x-hubspot-ratelimit-remaining", "x-hubspot-ratelimit-max"),
        ("daily", "x-hubspot-ratelimit-daily-remaining", "x-hubspot-ratelimit-daily"),
    ):
        remaining, limit = (
            _number(headers.get(remaining_header)),
            _number(headers.get(limit_header)),
        )
        if remaining is not None and limit:
            yield Quota(name, min(remaining, limit), limit)

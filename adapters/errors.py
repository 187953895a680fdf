"""Errors an adapter raises; everything an upstream can do wrong becomes one of these.

```
UpstreamError                      (code varies; never raised itself)
 ├── UpstreamTimeout               UPSTREAM_TIMEOUT       no answer within the budget
 ├── UpstreamUnavailable           UPSTREAM_UNAVAILABLE   refused/reset, 5xx after retries
 │    ├── CircuitOpen              UPSTREAM_UNAVAILABLE   refused locally, upstream not called
 │    └── UpstreamAuthError        UPSTREAM_UNAVAILABLE   our credentials were refused (401/403)
 ├── UpstreamRateLimited           UPSTREAM_RATE_LIMITED  429 whose Retry-After exceeds the budget
 ├── UpstreamBadResponse           UPSTREAM_BAD_RESPONSE  malformed body, changed schema, odd status
 └── InvalidExternalId             INVALID_EXTERNAL_ID    an id the upstream cannot have: refused
                                                          before any request (external_ids.py)
```

Not found is not an error: adapters answer ``None`` or an empty collection.

``UpstreamAuthError`` keeps the public code ``UPSTREAM_UNAVAILABLE``: a caller of the
gateway can do nothing about the gateway's own credentials and should not learn how
the gateway is wired; to that caller the source is simply unavailable. Operators see
the distinct type in logs and metrics, and ``except UpstreamUnavailable`` handles it
along with every other "this source cannot answer now" case.

Messages carry the upstream name, the operation or route template, status codes and
upstream correlation ids. They never carry tokens, passwords, URLs with query strings,
e-mail addresses or other customer data, so they are safe to log and to surface.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CircuitOpen",
    "InvalidExternalId",
    "UpstreamAuthError",
    "UpstreamBadResponse",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class UpstreamError(Exception):
    """Base of every adapter error; ``upstream`` is the configured upstream name."""

    code: ClassVar[str] = "UPSTREAM_ERROR"

    def __init__(self, upstream: str, message: str, *, status_code: int | None = None) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream
        self.status_code = status_code


class UpstreamTimeout(UpstreamError):
    code: ClassVar[str] = "UPSTREAM_TIMEOUT"


class UpstreamUnavailable(UpstreamError):
    code: ClassVar[str] = "UPSTREAM_UNAVAILABLE"


class CircuitOpen(UpstreamUnavailable):
    """The breaker refused the call without contacting the upstream."""

    def __init__(self, upstream: str, retry_in_s: float) -> None:
        super().__init__(upstream, f"circuit open, next probe in {retry_in_s:.1f}s")
        self.retry_in_s = retry_in_s


class UpstreamAuthError(UpstreamUnavailable):
    """The upstream refused the gateway's credentials (or the token endpoint did)."""


class UpstreamRateLimited(UpstreamError):
    code: ClassVar[str] = "UPSTREAM_RATE_LIMITED"

    def __init__(
        self,
        upstream: str,
        message: str,
        *,
        retry_after_s: float | None,
        status_code: int | None = 429,
    ) -> None:
        super().__init__(upstream, message, status_code=status_code)
        self.retry_after_s = retry_after_s


class UpstreamBadResponse(UpstreamError):
    code: ClassVar[str] = "UPSTREAM_BAD_RESPONSE"


class InvalidExternalId(UpstreamError):
    """An id the upstream cannot have (``external_ids``): nothing was sent for it.

    The message says what an id of that upstream looks like, never the id itself.
    """

    code: ClassVar[str] = "INVALID_EXTERNAL_ID"

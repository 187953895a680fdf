"""Domain errors: what a service tells its caller went wrong, in the caller's terms.

    GatewayError              code: INTERNAL (never shown as such; masked)
     ├── InvalidInput         code: BAD_USER_INPUT, names the field
     ├── Conflict             code: CONFLICT, names the field
     ├── NotFound             code: NOT_FOUND, names the argument
     ├── Erased               code: ERASED: the customer was forgotten; not re-created
     └── Unavailable          code: UNAVAILABLE: a dependency is down; retry later (503)
          ├── DatabaseUnavailable   code: DATABASE_UNAVAILABLE
          └── CacheUnavailable      code: CACHE_UNAVAILABLE

Adapter errors (``adapters.errors.UpstreamError``) keep their own codes; the
GraphQL layer turns both into error ``extensions`` on the field that failed.
"""

from __future__ import annotations


class GatewayError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidInput(GatewayError):
    code = "BAD_USER_INPUT"


class Conflict(GatewayError):
    code = "CONFLICT"


class NotFound(GatewayError):
    code = "NOT_FOUND"


class Erased(GatewayError):
    code = "ERASED"


class Unavailable(GatewayError):
    """A dependency of the gateway cannot be reached: nothing the client did wrong, and
    worth retrying after ``retry_after_s`` (the edge answers 503 with ``Retry-After``)."""

    code = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DatabaseUnavailable(Unavailable):
    code = "DATABASE_UNAVAILABLE"


class CacheUnavailable(Unavailable):
    code = "CACHE_UNAVAILABLE"

"""Domain errors: what a service tells its caller went wrong, in the caller's terms.

    GatewayError              code: INTERNAL (never shown as such; masked)
     ├── InvalidInput         code: BAD_USER_INPUT, names the field
     ├── Conflict             code: CONFLICT, names the field
     ├── NotFound             code: NOT_FOUND, names the argument
     └── Erased               code: ERASED: the customer was forgotten; not re-created

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

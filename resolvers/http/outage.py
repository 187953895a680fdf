"""How the edge says that a dependency is down: a 503 JSON answer with its code and
``Retry-After``, and a note on answers served from caches meanwhile."""

from __future__ import annotations

from starlette.responses import Response

from gateway.db.connectivity import reachability
from gateway.services import Services
from resolvers.http.error_boundary import error_body

# On an answer served while the database is unreachable: the stored profiles in it
# came from the cache, as they were when cached (upstream data says so per source).
DEGRADED = {"database": "UNAVAILABLE", "servedFrom": "cache"}


def degraded(services: Services) -> dict[str, str] | None:
    """The note for an answer built now, or None while the database answers."""
    return None if reachability(services.engine).reachable else DEGRADED


def unavailable_response(services: Services, code: str, message: str) -> Response:
    retry_after = services.settings.unavailable_retry_after_s
    return Response(
        error_body(code, message),
        status_code=503,
        media_type="application/json",
        headers={"Retry-After": str(retry_after), "Cache-Control": "no-store"},
    )

"""One signed-in request to the console, and the wrapper every page goes through.

``page(handler, needs=...)`` turns a handler of a ``Visit`` into a Starlette endpoint:
it reads the session cookie (none, forged, expired or signed out: to the sign-in page),
verifies
the key again (revoked: signed out), charges the key's rate limit (over it: 429),
checks every POST's CSRF token and origin (403), and refuses a key without the scope
the handler needs (403, before the handler runs). The page then queries the schema
as that key, so its scopes and the audit log apply exactly as they do to the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.access.api_keys import Principal, Scope
from gateway.access.rate_limit import retry_after_seconds
from gateway.privacy.audit import Action
from gateway.services import Services
from resolvers.console import csrf
from resolvers.console.pages import secure
from resolvers.console.parts import ConsoleParts
from resolvers.console.session import COOKIE, Session, clear_cookie
from resolvers.http.authentication import PRINCIPAL
from resolvers.state import state_of


@dataclass(frozen=True, slots=True)
class Visit:
    request: Request
    principal: Principal
    session: Session
    parts: ConsoleParts
    services: Services

    @property
    def can_read(self) -> bool:
        return self.principal.allows(Scope.PROFILES_READ)

    @property
    def can_write(self) -> bool:
        return self.principal.allows(Scope.PROFILES_WRITE)

    @property
    def is_admin(self) -> bool:
        return self.principal.allows(Scope.ADMIN)

    def render(
        self, name: str, context: Mapping[str, Any] | None = None, status_code: int = 200
    ) -> Response:
        return self.parts.pages.render(
            self.request, name, {"visit": self, **(context or {})}, status_code
        )

    def refuse(self, status_code: int, message: str) -> Response:
        return self.render("error.html", {"message": message}, status_code)

    def audit(self, action: Action, operation: str, customer_ids: list[uuid.UUID | None]) -> None:
        """Record a console action under the signed-in key (ids only, never data; None:
        an action on no one customer, such as saving a template)."""
        self.services.audit.record(
            actor=self.principal.name,
            key_id=self.principal.key_id,
            action=action,
            operation=operation,
            customer_ids=customer_ids,
        )


Handler = Callable[[Visit], Awaitable[Response]]


def redirect(path: str) -> Response:
    """See other: after a POST, the page to show (so a reload does not post again)."""
    return secure(RedirectResponse(path, status_code=303))


def _to_sign_in(request: Request, note: str | None = None) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = f"?next={quote(target, safe='')}" if request.method == "GET" else ""
    if note:
        query += ("&" if query else "?") + f"note={note}"
    response = redirect(f"/console/sign-in{query}")
    if note:
        clear_cookie(response, request, COOKIE)
    return response


def page(handler: Handler, *needs: Scope) -> Callable[[Request], Awaitable[Response]]:
    """The console page ``handler``, for a signed-in key holding every scope ``needs``."""

    async def endpoint(request: Request) -> Response:
        state = state_of(request)
        parts: ConsoleParts = state["console"]
        services = state["services"]
        session = parts.sessions.read(request.cookies.get(COOKIE))
        if session is None:
            return _to_sign_in(request, "expired" if COOKIE in request.cookies else None)
        if await services.sign_outs.ended(session.csrf):  # a copy of a signed-out cookie
            return _to_sign_in(request, "signed-out")
        principal = await services.api_keys.authenticate_digest(session.key_digest)
        if principal is None:
            return _to_sign_in(request, "revoked")
        visit = Visit(request, principal, session, parts, services)
        retry_after = await services.rate_limit(principal)
        if retry_after is not None:
            seconds = retry_after_seconds(retry_after)
            response = visit.refuse(429, f"This key is over its rate limit; retry in {seconds} s.")
            response.headers["Retry-After"] = str(seconds)
            return response
        request.scope[PRINCIPAL] = principal  # the schema's context reads it there
        if request.method == "POST" and not await csrf.verified(request, session.csrf):
            return visit.refuse(403, "This form is stale or did not come from the console.")
        for need in needs:
            if not principal.allows(need):
                return visit.refuse(
                    403, f"The key {principal.name!r} lacks the {need.value!r} scope this needs."
                )
        return await handler(visit)

    return endpoint

"""Persisted GETs answered from the response cache before Starlette's router runs.

An ESP's send is the same few thousand persisted GET URLs, most of them answered from
the response cache (resolvers/http/response_cache.py). This middleware sits innermost,
after authentication and the rate limit (and the request id, the body limit and the
error boundary around them), and serves such a stored answer itself: the router, the
view's request objects and Strawberry's machinery are then skipped, and nothing else
is. A GET it cannot serve goes on to the view with its lookup done (or with the
verdict that it names no storable query), so that the URL is parsed once and the
answer built there can be stored under the ticket taken before it ran.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from resolvers.http.authentication import principal_of
from resolvers.http.response_cache import PersistedRequests, header_of, served
from resolvers.http.view import PLAN, negotiate
from resolvers.state import services_in


class StoredAnswers:
    def __init__(self, app: ASGIApp, path: str = "/graphql") -> None:
        self.app = app
        self.path = path
        self.persisted = PersistedRequests()  # what each persisted GET URL names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["path"] != self.path
            or not scope.get("query_string")
            or principal_of(scope) is None
        ):
            await self.app(scope, receive, send)
            return
        services = services_in(scope)
        if not services.settings.response_cache_ttl_s:
            await self.app(scope, receive, send)
            return
        plan = await self.persisted.of(Request(scope))
        if plan is None:
            scope[PLAN] = None  # looked at: the view need not parse the URL again
            await self.app(scope, receive, send)
            return
        found = await services.federation.cache.responses.lookup(plan.key)
        media_type = negotiate(header_of(scope, b"accept"))
        # Served only by the hash alone: a document sent with it must be checked
        # against it (the view does), or any document could be answered as another's.
        if found.hit is not None and plan.hash_only and media_type is not None:
            messages = await served(services, scope, found.hit, media_type)
            if messages is not None:
                for message in messages:
                    await send(message)
                return
        plan.ticket = found.ticket
        scope[PLAN] = plan  # the view runs it, and stores the answer under this ticket
        await self.app(scope, receive, send)

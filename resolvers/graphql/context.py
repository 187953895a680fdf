"""The per-request GraphQL context: the process's services plus this request and caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from gateway.access.api_keys import Principal
from gateway.services import Services
from gateway.templates.render import RequestBudget
from resolvers.graphql.loaders import Loaders
from resolvers.http.authentication import principal_of
from resolvers.state import services_of


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    services: Services
    loaders: Loaders
    principal: Principal | None = None
    # Set by Strawberry from a WebSocket's connection_init payload.
    connection_params: dict[str, Any] = field(default_factory=dict)
    _render_budget: RequestBudget | None = None

    def render_budget(self) -> RequestBudget:
        """What this request's renders may still use, shared by all of them."""
        if self._render_budget is None:
            self._render_budget = self.services.renderer.request_budget()
        return self._render_budget

    @classmethod
    def of(
        cls, request: Request | WebSocket, response: Response | WebSocket | None = None
    ) -> Context:
        services = services_of(request)
        return cls(
            request=request,
            response=response,
            services=services,
            loaders=Loaders(services.federation, services.stored_behaviour),
            principal=principal_of(request.scope),
        )

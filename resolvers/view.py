"""GraphQL over HTTP, as the GraphQL-over-HTTP specification asks.

Strawberry's Starlette view answers everything as ``200 application/json``. This
subclass negotiates ``application/graphql-response+json``, answers requests that
fail before execution (bad JSON, parse or validation errors) with 4xx and no
``data``, refuses a mutation over GET with 405, and writes errors as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any

import mimeparse
import orjson
from cross_web import HTTPException, StarletteRequestAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.unset import UNSET, UnsetType

from gateway.api_keys import Principal
from gateway.authentication import presented_key
from gateway.errors import GatewayError
from gateway.services import Services
from resolvers.context import Context
from resolvers.graphiql import graphiql_html

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
_SUPPORTED = [JSON, GRAPHQL_RESPONSE]  # mimeparse prefers the last of equal matches
_MEDIA_TYPE = "gateway.media_type"
_REGISTER = "gateway.persisted_query"  # (digest, document) to remember once it validates


@lru_cache(maxsize=256)  # clients send a handful of distinct Accept headers
def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header, or None when nothing fits.

    No Accept header means a legacy client: answer application/json, as the spec says.
    """
    if not accept:
        return JSON
    return mimeparse.best_match(_SUPPORTED, accept) or None


class RequestError(HTTPException):
    """A request refused before execution, with a machine-readable code."""

    def __init__(self, status_code: int, reason: str, code: str) -> None:
        super().__init__(status_code, reason)
        self.code = code


class _TextWebSocketAdapter(ASGIWebSocketAdapter):
    async def send_json(self, message: Mapping[str, object]) -> None:
        # graphql-ws clients in browsers read text frames only; encode_json gives bytes.
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class _RequestAdapter(StarletteRequestAdapter):
    """Strawberry's adapter, keeping the Starlette request within reach (for app state)."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.request = request


class GatewayGraphQL(GraphQL[Context, None]):
    request_adapter_class = _RequestAdapter
    websocket_adapter_class = _TextWebSocketAdapter

    def __init__(
        self,
        schema: Any,
        *,
        graphiql: bool,
        example_email: str | None = None,
        example_key: str | None = None,
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql else None)
        self._ide_html = graphiql_html("/graphql", example_email, example_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        try:
            response = await self.run(request)
        except RequestError as exc:
            response = self._error_response(request, exc.status_code, exc.reason, exc.code)
        except HTTPException as exc:
            response = self._error_response(request, exc.status_code, exc.reason)
        await response(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return Context.of(request, response)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """A browser cannot set headers on a WebSocket: it sends its key in connection_init."""
        if context.principal is None:
            key = presented_key(context.connection_params or {})
            if key is not None:
                principal: Principal | None = await context.services.api_keys.authenticate(key)
                context.principal = principal
            if context.principal is None:
                raise ConnectionRejectionError({"reason": "An API key is required"})
        unset: UnsetType = UNSET
        return unset

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        media_type = negotiate(request.headers.get("accept"))
        if (
            media_type is None
            and isinstance(request, Request)
            and not self.should_render_graphql_ide(self.request_adapter_class(request))
        ):
            raise HTTPException(406, f"Accept one of: {', '.join(reversed(_SUPPORTED))}")
        request.scope[_MEDIA_TYPE] = sub_response.media_type = media_type or JSON
        return sub_response

    async def parse_http_body(  # type: ignore[override]
        self, request: _RequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        data = await super().parse_http_body(request)
        if isinstance(data, list):
            return data
        services: Services = request.request.app.state.services
        try:
            resolved = await services.persisted_queries.resolve(data.query, data.extensions)
        except GatewayError as exc:
            raise RequestError(400, str(exc), exc.code) from exc
        if resolved.register is not None and resolved.query is not None:
            request.request.scope[_REGISTER] = (resolved.register, resolved.query)
        return data if resolved.query is data.query else replace(data, query=resolved.query)

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(self._ide_html)

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        try:
            return await super().execute_single(*args, **kwargs)
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError):
                raise HTTPException(405, "Mutations are only allowed over POST") from exc
            raise

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        if isinstance(result, PreExecutionError):
            # Nothing ran: the spec's "request error" has no data entry at all.
            response.pop("data", None)
        elif _REGISTER in request.scope:
            # It parsed, validated and passed the limits: only now is it worth keeping.
            services: Services = request.app.state.services
            await services.persisted_queries.remember(*request.scope[_REGISTER])
        return response

    def decode_json(self, data: str | bytes) -> object:
        # orjson's error subclasses json.JSONDecodeError, which the base view maps to 400.
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        request_failed = isinstance(response_data, dict) and "data" not in response_data
        response = Response(
            self.encode_json(response_data),
            status_code=sub_response.status_code or (400 if request_failed else 200),
            media_type=sub_response.media_type or JSON,
        )
        response.headers.raw.extend(sub_response.headers.raw)
        response.background = sub_response.background
        return response

    def _error_response(
        self, request: Request, status: int, reason: str, code: str | None = None
    ) -> Response:
        headers = {"Allow": "POST"} if status == 405 and request.method == "GET" else {}
        if status == 405 and request.method not in {"GET", "POST"}:
            headers = {"Allow": "GET, POST"}
        media_type = (
            request.scope.get(_MEDIA_TYPE) or negotiate(request.headers.get("accept")) or JSON
        )
        error: dict[str, Any] = {"message": reason}
        if code:
            error["extensions"] = {"code": code}
        body = orjson.dumps({"errors": [error]})
        return Response(body, status_code=status, media_type=media_type, headers=headers)

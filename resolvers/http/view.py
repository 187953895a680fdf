"""GraphQL over HTTP, as the GraphQL-over-HTTP specification asks.

Strawberry's Starlette view answers everything as ``200 application/json``. This
subclass negotiates the media type (``application/graphql-response+json`` when the
client names it, ``application/json`` otherwise), answers a request that is not
well-formed (bad JSON, parameters of the wrong type) with 400, and one that fails
before execution (parse, validation or variable errors) without ``data``: 400 under
``application/graphql-response+json``, 200 under ``application/json`` as the spec
asks of legacy clients. A mutation over GET is 405; every answer says how it may be
cached; errors are JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any

import mimeparse
import orjson
from cross_web import HTTPException, StarletteRequestAdapter
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.unset import UNSET, UnsetType

from gateway.access.api_keys import Principal
from gateway.errors import GatewayError
from gateway.upstreams.response_cache import TRACE
from resolvers.graphql.context import Context
from resolvers.graphql.errors import UNEXPECTED_MESSAGE, is_unexpected, unserved
from resolvers.http.authentication import presented_key
from resolvers.http.graphiql import graphiql_headers, graphiql_html
from resolvers.http.outage import degraded
from resolvers.http.response_cache import (
    FRESH_FOR,
    VARY,
    PersistedRequest,
    PersistedRequests,
    lifetime,
    not_modified,
    served,
    store,
)
from resolvers.http.websocket import KeyCheckingTransportWS
from resolvers.state import services_of, state_of

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
HTML = "text/html"
# Scope keys: what the answer's status and headers depend on, found along the way.
_MEDIA_TYPE = "gateway.media_type"
_PERSISTED_GET = "gateway.persisted_get"
_FAILED = "gateway.failed"
_UNSERVED = "gateway.unserved"  # a dependency's outage left nothing to answer: 503
_LOADERS = "gateway.loaders"
_REGISTER = "gateway.persisted_query"  # (digest, document) to remember once it validates
_DOCUMENT = "gateway.document"  # the document run (a persisted one, resolved)
PLAN = "gateway.response_plan"  # a persisted GET looked up in the response cache
_STORABLE = "gateway.storable"  # ran without errors, not degraded: may be stored


def _ranges(accept: str) -> list[tuple[str, str, dict[str, str]]]:
    """The media ranges of an Accept header; a malformed one matches nothing."""
    ranges = []
    for part in accept.split(","):
        try:
            ranges.append(mimeparse.parse_media_range(part))
        except (mimeparse.MimeTypeParseException, ValueError):
            continue
    return ranges


def _preference(media_type: str, ranges: list[tuple[str, str, dict[str, str]]]) -> float:
    """The quality the client gives a media type (0: unacceptable)."""
    quality, fitness = mimeparse.quality_and_fitness_parsed(media_type, ranges)
    return quality if fitness >= 0 else 0.0


@lru_cache(maxsize=256)  # clients send a handful of distinct Accept headers
def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header, or None when nothing fits.

    ``application/graphql-response+json`` only when the client prefers it by name; a
    wildcard (``*/*``: curl, fetch, httpx, requests) or no Accept header at all is a
    client that may predate it: ``application/json``, as the spec asks.
    """
    if not accept:
        return JSON
    ranges = _ranges(accept)
    json, graphql_response = _preference(JSON, ranges), _preference(GRAPHQL_RESPONSE, ranges)
    named = any(f"{kind}/{sub}" == GRAPHQL_RESPONSE for kind, sub, _ in ranges)
    if graphql_response > json or (named and graphql_response == json > 0):
        return GRAPHQL_RESPONSE
    return JSON if json > 0 else None


@lru_cache(maxsize=256)
def prefers_html(accept: str | None) -> bool:
    """A browser navigating to the URL: it asks for HTML above JSON (a wildcard alone
    does not: every HTTP library sends ``*/*``)."""
    ranges = _ranges(accept or "")
    html = _preference(HTML, ranges)
    return html > 0 and html > max(_preference(JSON, ranges), _preference(GRAPHQL_RESPONSE, ranges))


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
    graphql_transport_ws_handler_class = KeyCheckingTransportWS

    def __init__(
        self,
        schema: Any,
        *,
        graphiql: bool,
        example_email: str | None = None,
        example_key: str | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            # Only graphql-transport-ws, whose handler re-checks the key on every subscribe
            # and result (resolvers/http/websocket.py); the legacy graphql-ws would skip that.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self._ide_html = graphiql_html("/graphql", example_email, example_key)
        self._ide_headers = graphiql_headers(self._ide_html)
        self._persisted = PersistedRequests()  # what each persisted GET URL names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        services = services_of(request)
        cache = services.federation.cache.responses
        # A GET comes with its lookup done (resolvers/http/stored_answers.py), or with
        # None when its URL names no query that may be stored: not parsed again here.
        looked_up = PLAN in scope
        plan: PersistedRequest | None = scope.pop(PLAN, None)
        if not looked_up and services.settings.response_cache_ttl_s:
            plan = await self._persisted.of(request)
            found = await cache.lookup(plan.key) if plan is not None else None
        else:
            found = None
        if plan is not None and found is not None:
            media_type = negotiate(request.headers.get("accept"))
            if found.hit is not None and plan.hash_only and media_type is not None:
                messages = await served(services, scope, found.hit, media_type)
                if messages is not None:
                    for message in messages:
                        await send(message)
                    return
            plan.ticket = found.ticket
        # The reads of an answer that may be stored are traced as it runs.
        tracing = TRACE.set(plan.trace) if plan is not None and plan.ticket else None
        try:
            response = await self.run(request)
        except RequestError as exc:
            response = self._error_response(request, exc.status_code, exc.reason, exc.code)
        except HTTPException as exc:
            response = self._error_response(request, exc.status_code, exc.reason)
        finally:
            if tracing is not None:
                TRACE.reset(tracing)
        if plan is not None and response.status_code == 200 and scope.get(_STORABLE):
            plan.document = scope.get(_DOCUMENT)
            ttl_s = lifetime(services, scope.get(_LOADERS), plan.trace)
            limit = services.settings.response_cache_max_answer_bytes
            await store(cache, plan, request, response, ttl_s, limit)
        if scope.get(_FAILED):
            response.status_code = 500  # a bug before execution, masked: not the client's
        elif scope.get(_UNSERVED):
            response.status_code = 503
            response.headers["Retry-After"] = str(services.settings.unavailable_retry_after_s)
        response.headers["Cache-Control"] = _cache_control(scope, response.status_code)
        if response.headers["Cache-Control"].startswith("private"):
            response.headers["Vary"] = VARY  # the answer is the key's, in its media type
        etag = response.headers.get("etag")
        if etag is not None and not_modified(request, etag):
            response = Response(status_code=304, headers=dict(response.headers))
        await response(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context.of(request, response)
        # The loaders, not the context: the context holds the request, which holds this.
        request.scope[_LOADERS] = context.loaders
        return context

    def should_render_graphql_ide(self, request: Any) -> bool:
        """GraphiQL for a browser's navigation only: a GET without an operation (no
        ``query``, no persisted-query ``extensions``) from a client preferring HTML."""
        params = request.query_params
        return (
            request.method == "GET"
            and params.get("query") is None
            and params.get("extensions") is None
            and prefers_html(request.headers.get("accept"))
        )

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
            raise HTTPException(406, f"Accept one of: {GRAPHQL_RESPONSE}, {JSON}")
        request.scope[_MEDIA_TYPE] = sub_response.media_type = media_type or JSON
        return sub_response

    async def parse_http_body(  # type: ignore[override]
        self, request: _RequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        body = await super().parse_http_body(request)
        for data in body if isinstance(body, list) else [body]:
            if not isinstance(data.operation_name, str | None):
                raise RequestError(
                    400,
                    "The GraphQL operation's `operationName` must be a string or null, "
                    "if provided.",
                    "BAD_REQUEST",
                )
        if isinstance(body, list):
            return body
        data = body
        if request.method == "GET" and isinstance(
            (data.extensions or {}).get("persistedQuery"), dict
        ):
            request.request.scope[_PERSISTED_GET] = True
        try:
            resolved = await state_of(request.request)["persisted_queries"].resolve(
                data.query, data.extensions
            )
        except GatewayError as exc:
            raise RequestError(400, str(exc), exc.code) from exc
        request.request.scope[_DOCUMENT] = resolved.query
        if resolved.register is not None and resolved.query is not None:
            request.request.scope[_REGISTER] = (resolved.register, resolved.query)
        return data if resolved.query is data.query else replace(data, query=resolved.query)

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(self._ide_html, headers=self._ide_headers)

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        try:
            return await super().execute_single(*args, **kwargs)
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError):
                raise HTTPException(405, "Mutations are only allowed over POST") from exc
            if isinstance(exc.__cause__, CannotGetOperationTypeError):
                # An unknown operationName: a request error like any other (its status
                # then follows the media type).
                return PreExecutionError(data=None, errors=[GraphQLError(exc.reason)])
            raise

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        # A request error: it failed before any field ran (parse, validation, variables
        # that do not fit their types, an unknown operation). Errors of fields that ran
        # always have a path, even when they nulled the whole answer.
        errors = result.errors or []
        request_error = isinstance(result, PreExecutionError) or (
            result.data is None and bool(errors) and all(not e.path for e in errors)
        )
        if request_error and any(map(is_unexpected, errors)):
            # A bug on the way in (logged with its traceback): never its raw text.
            request.scope[_FAILED] = True
            result.errors = [
                GraphQLError(UNEXPECTED_MESSAGE) if is_unexpected(e) else e for e in errors
            ]
        response = await super().process_result(request, result)
        if request_error:
            # Nothing ran: the spec's "request error" has no data entry at all.
            response.pop("data", None)
        elif errors and unserved(result.data, errors):
            request.scope[_UNSERVED] = True
        else:
            note = degraded(services_of(request))
            if note is not None:
                response["extensions"] = {**(response.get("extensions") or {}), "degraded": note}
            if _REGISTER in request.scope:
                # It parsed, validated and passed the limits: only now is it worth keeping.
                await state_of(request)["persisted_queries"].remember(*request.scope[_REGISTER])
            if not result.errors and note is None:
                request.scope[_STORABLE] = True
            # A degraded answer may not be cached by its caller: it is no-store.
            if request.scope.get(_PERSISTED_GET) and not result.errors and note is None:
                loaders = request.scope.get(_LOADERS)
                request.scope[FRESH_FOR] = loaders.fresh_for() if loaders else 0
        return response

    def decode_json(self, data: str | bytes) -> object:
        # orjson's error subclasses json.JSONDecodeError, which the base view maps to 400.
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        media_type = sub_response.media_type or JSON
        # Under application/json a request error is still 200 (the spec's SHOULD: legacy
        # clients read the body whatever the status); under its own media type, 400.
        request_failed = isinstance(response_data, dict) and "data" not in response_data
        status = 400 if request_failed and media_type == GRAPHQL_RESPONSE else 200
        response = Response(
            self.encode_json(response_data),
            status_code=sub_response.status_code or status,
            media_type=media_type,
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


def _cache_control(scope: Scope, status: int) -> str:
    """A persisted query's GET URL may be cached by its caller as long as the data it
    read stays fresh (``private``: the answer is the key's); nothing else may be."""
    fresh_for = scope.get(FRESH_FOR)
    if status == 200 and fresh_for is not None:
        return f"private, max-age={fresh_for}"
    return "no-store"

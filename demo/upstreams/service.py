"""What every sample service shares: the control surface, the fault gate, counters.

A service subclasses ``SampleService``, lists its upstream routes and says how
its API words a rate limit, a failure and a missing resource. The gate in front
of the Starlette app counts each upstream request by route template and applies
the fault knobs at the ASGI level, so what a client sees (a held connection, a
truncated body, a 429) is what travels on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import threading
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, ClassVar

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demo.people.population import Person
from demo.upstreams.calls import CallCounter
from demo.upstreams.drift import drift_fields, drift_json, truncate
from demo.upstreams.faults import Decision, Faults
from demo.upstreams.quota import Admission, RateLimit, RollingWindow

JSON_TYPE = "application/json; charset=utf-8"
CONTROL_PREFIX = "/_sample/"
# How often held or delayed requests look whether the server is stopping.
_POLL_S = 0.05


def json_response(
    data: Any, status: int = 200, headers: MutableMapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, headers=dict(headers or {}), media_type=JSON_TYPE
    )


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


async def json_body(request: Request) -> Any:
    """The request's JSON document; raises ValueError when it is not JSON."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ValueError("request body is not valid JSON") from exc


class SampleService:
    """Base of the four sample upstreams; ``app`` is the ASGI app to serve."""

    name: ClassVar[str] = "sample"
    counts_operations: ClassVar[bool] = False
    # The rolling-window rate limit the real service keeps (None: it has none, or a
    # bucket of its own like the shop's GraphQL cost).
    rate_limit: ClassVar[RateLimit | None] = None

    def __init__(self, people: Sequence[Person], *, seed: int = 0) -> None:
        self.people = people
        self.faults = Faults(seed)
        self.calls = CallCounter(operations=self.counts_operations)
        self.window = RollingWindow(self.rate_limit) if self.rate_limit else None
        self._stopping = threading.Event()
        # Requests the hang knob holds right now; tests read it to see a client's
        # give-up reach the server.
        self.held = 0
        # The W3C trace context of the latest requests, for tests of its propagation.
        self.traceparents: deque[str] = deque(maxlen=100)
        self._upstream_routes = self.routes()
        control: list[BaseRoute] = [
            Route("/_sample/calls", self._calls_endpoint, methods=["GET", "DELETE"]),
            Route("/_sample/faults", self._faults_endpoint, methods=["GET", "PUT", "DELETE"]),
            Route("/_sample/rate_limit", self._limit_endpoint, methods=["GET", "PUT", "DELETE"]),
            *self.control_routes(),
        ]
        handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
            404: self._not_found_handler,
            405: self._not_found_handler,
        }
        starlette = Starlette(routes=control + self._upstream_routes, exception_handlers=handlers)
        self.app: ASGIApp = _FaultGate(self, starlette)

    # What a subclass provides -------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def control_routes(self) -> list[BaseRoute]:
        """Sample-only routes under ``/_sample/``: never counted, never faulted."""
        return []

    def rate_limited_response(self, retry_after_s: float) -> Response:
        return json_response(
            {"error": "rate limited"}, 429, {"Retry-After": seconds_header(retry_after_s)}
        )

    def error_response(self, status: int) -> Response:
        return json_response({"error": "upstream failure"}, status)

    def not_found_response(self) -> Response:
        return json_response({"error": "not found"}, 404)

    def soap_fault_response(self) -> Response | None:
        """A SOAP server fault; None for services that do not speak SOAP."""
        return None

    def fault_headers(self, decision: Decision) -> list[tuple[str, str]]:
        """Headers on every upstream answer (Shopify's call-limit header)."""
        return []

    def limit_headers(self, admission: Admission) -> list[tuple[str, str]]:
        """Headers announcing the rolling window (HubSpot's ``X-HubSpot-RateLimit-*``)."""
        return []

    def drift(self, body: bytes) -> bytes:
        return drift_json(body)

    def operation_of(self, scope: Scope) -> str | None:
        """The operation a request calls, for services that count them (SOAP)."""
        return None

    # Lifecycle, called by the runner from its own thread -----------------------
    def rearm(self) -> None:
        self._stopping.clear()

    def release(self) -> None:
        """The server is stopping: held and delayed requests end now."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # Internals -----------------------------------------------------------------
    def endpoint_of(self, scope: Scope) -> str:
        for route in self._upstream_routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return f"{scope['method']} {getattr(route, 'path', scope['path'])}"
        return f"{scope['method']} {scope['path']}"

    async def _not_found_handler(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return json_response({"error": "method not allowed"}, 405)
        return self.not_found_response()

    async def _calls_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.calls.reset()
        return json_response(self.calls.snapshot())

    async def _faults_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.reset()
        elif request.method == "PUT":
            try:
                changes = await json_body(request)
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object of knobs")
                self.faults.update(**changes)
            except ValueError as exc:
                return json_response({"error": str(exc)}, 400)
        return json_response(self.faults.snapshot())

    async def _limit_endpoint(self, request: Request) -> Response:
        """The rolling-window limit: GET it (with the requests it refused), PUT
        ``{"calls", "per_s", "enforced"}`` (any of them), DELETE to empty the window."""
        window = self.window
        if window is None:
            return json_response({"error": "this service has no rolling-window limit"}, 404)
        if request.method == "DELETE":
            window.reset()
        elif request.method == "PUT":
            try:
                body = await json_body(request)
                calls = int(body.get("calls", window.limit.calls))
                per_s = float(body.get("per_s", window.limit.per_s))
                enforced = body.get("enforced", window.enforced)
                if calls < 1 or per_s <= 0 or not isinstance(enforced, bool):
                    raise ValueError("calls >= 1, per_s > 0 and enforced a boolean")
            except (ValueError, TypeError, AttributeError) as exc:
                return json_response({"error": str(exc)}, 400)
            window.configure(limit=RateLimit(calls, per_s), enforced=enforced)
        return json_response(
            {
                "calls": window.limit.calls,
                "per_s": window.limit.per_s,
                "enforced": window.enforced,
                "refused": window.refused,
            }
        )

    async def pause(self, seconds: float) -> None:
        """Sleep, cut short when the server stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # Polling, because the stop signal is a threading.Event set from another
        # thread: an asyncio.Event is bound to one loop and not thread-safe.
        while not self.stopping and (left := deadline - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(left, _POLL_S))

    async def hold(self, receive: Receive) -> bool:
        """Hold a request unanswered; True when the client gave up, False when the
        server is stopping."""
        more = True
        # Read the request to its end, so that the next receive() is the disconnect.
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return True
            more = message.get("more_body", False)
        waiter = asyncio.ensure_future(receive())
        self.held += 1
        try:
            while not self.stopping:
                done, _ = await asyncio.wait({waiter}, timeout=_POLL_S)
                if done:
                    return True
            return False
        finally:
            self.held -= 1
            waiter.cancel()


def _raw_path(scope: Scope) -> str:
    """``METHOD /path`` as the request line carried it: still percent-encoded, so a
    test sees ``%2F`` where the routing (which decodes) sees ``/``."""
    raw = scope.get("raw_path") or scope["path"].encode()
    return f"{scope['method']} {raw.decode('latin-1')}"


def seconds_header(value: float) -> str:
    """Seconds as a Retry-After value: whole numbers without a fraction."""
    return str(int(value)) if float(value).is_integer() else str(value)


class _FaultGate:
    """ASGI middleware: count, then apply the knobs a request drew."""

    def __init__(self, service: SampleService, app: ASGIApp) -> None:
        self.service = service
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(scope, receive, send)
        except ClientDisconnect:
            # The client gave up (its timeout) before its body arrived: as a real
            # upstream would, drop the request without logging an application error.
            return

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        service = self.service
        service.calls.record(service.endpoint_of(scope), _raw_path(scope))
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                service.traceparents.append(value.decode("latin-1"))
        if (operation := service.operation_of(scope)) is not None:
            service.calls.record_operation(operation)
        decision = service.faults.decide()
        # Counted on arrival, as the real services count, before any fault or latency.
        admission = (
            service.window.admit(service.faults.settings.quota_limit) if service.window else None
        )
        if admission is not None and not admission.admitted:
            refusal = service.rate_limited_response(admission.retry_after_s)
            refusal.raw_headers.extend(
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in service.limit_headers(admission)
            )
            await refusal(scope, receive, send)
            return
        if decision.hang:
            if not await service.hold(receive):
                closing = json_response(
                    {"error": "sample server stopping"}, 503, {"Connection": "close"}
                )
                await closing(scope, receive, send)
            return
        if decision.latency_s:
            await service.pause(decision.latency_s)
        announced = service.limit_headers(admission) if admission is not None else []
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in [*service.fault_headers(decision), *announced]
        ]
        canned: Response | None = None
        if decision.rate_limited:
            canned = service.rate_limited_response(decision.retry_after_s)
        elif decision.error_status is not None:
            canned = service.error_response(decision.error_status)
        elif decision.soap_fault:
            canned = service.soap_fault_response()
        if canned is not None:
            canned.raw_headers.extend(extra)
            await canned(scope, receive, send)
        elif decision.malformed or decision.schema_change or decision.drifted:
            await self.app(scope, receive, self._rewriting(send, decision, extra))
        else:
            await self.app(scope, receive, self._adding(send, extra))

    @staticmethod
    def _adding(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
        if not extra:
            return send

        async def sender(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return sender

    def _rewriting(self, send: Send, decision: Decision, extra: list[tuple[bytes, bytes]]) -> Send:
        # Buffer the whole answer, then damage successful bodies only: an error
        # answer keeps telling the client what went wrong.
        start: Message = {}
        chunks: list[bytes] = []

        async def sender(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if 200 <= start["status"] < 300 and body:
                if decision.malformed:
                    body = truncate(body)
                elif decision.schema_change:
                    body = self.service.drift(body)
                else:
                    renames, retypes = decision.rename_fields, decision.retype_fields
                    body = drift_fields(body, renames, retypes)
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers += [(b"content-length", str(len(body)).encode()), *extra]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return sender

"""The REST base: one pooled ``httpx.AsyncClient`` per upstream, behind the call policy.

Adapters call ``RestClient.get``/``post`` with a route *template* and path values:
the template names the call in logs and errors (``GET /customers/{id}/orders.json``)
so that ids and e-mail addresses never reach either, and every value becomes exactly
one percent-encoded path segment (``external_ids.expand_path``), so no value can
change the route. Every answer goes through one error table, read top to bottom like
airbyte's and meltano's: a status or exception selects an action (succeed, not found,
retry, rate-limited, fail) and an error type.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from adapters.config import HubSpotConfig, SegmentConfig, ShopifyConfig, SoapCrmConfig
from adapters.errors import (
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from adapters.external_ids import expand_path
from adapters.payload import parse_json
from adapters.transport.breaker import CircuitBreaker
from adapters.transport.call_pacer import CallPacer, Pacing
from adapters.transport.cost_bucket import GuardedRedis
from adapters.transport.retry import CallPolicy, parse_retry_after
from adapters.transport.telemetry import NO_TELEMETRY, Telemetry, quotas_in

__all__ = [
    "Action",
    "ErrorRule",
    "Reply",
    "RestClient",
    "create_http_client",
    "observe",
    "policy_for",
    "rule_for_exception",
    "rule_for_status",
]

M = TypeVar("M", bound=BaseModel)
AnyUpstreamConfig = HubSpotConfig | SoapCrmConfig | ShopifyConfig | SegmentConfig
Params = Mapping[str, str | int]
logger = logging.getLogger(__name__)
USER_AGENT = "personalization-gateway/0.1"


class Action(StrEnum):
    SUCCEED = "succeed"
    NOT_FOUND = "not_found"  # not an error: the caller gets None
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class ErrorRule:
    action: Action
    error: type[UpstreamError] | None
    description: str


_OK = ErrorRule(Action.SUCCEED, None, "ok")
STATUS_RULES: Mapping[int, ErrorRule] = {
    401: ErrorRule(Action.FAIL, UpstreamAuthError, "credentials refused"),
    403: ErrorRule(Action.FAIL, UpstreamAuthError, "access forbidden"),
    404: ErrorRule(Action.NOT_FOUND, None, "not found"),
    408: ErrorRule(Action.RETRY, UpstreamTimeout, "upstream timed out"),
    429: ErrorRule(Action.RATE_LIMITED, UpstreamRateLimited, "rate limited"),
}
_SERVER_ERROR = ErrorRule(Action.RETRY, UpstreamUnavailable, "server error")
_UNEXPECTED = ErrorRule(Action.FAIL, UpstreamBadResponse, "unexpected status")
# First match wins: the order goes from specific to general (httpx's own hierarchy).
EXCEPTION_RULES: tuple[tuple[type[Exception], ErrorRule], ...] = (
    (httpx.TimeoutException, ErrorRule(Action.RETRY, UpstreamTimeout, "timed out")),
    (httpx.DecodingError, ErrorRule(Action.FAIL, UpstreamBadResponse, "undecodable body")),
    (httpx.TooManyRedirects, ErrorRule(Action.FAIL, UpstreamBadResponse, "redirect loop")),
    (httpx.TransportError, ErrorRule(Action.RETRY, UpstreamUnavailable, "connection failed")),
)


def rule_for_status(status: int) -> ErrorRule:
    if 200 <= status < 300:
        return _OK
    if status in STATUS_RULES:
        return STATUS_RULES[status]
    return _SERVER_ERROR if status >= 500 else _UNEXPECTED


def rule_for_exception(exc: Exception) -> ErrorRule | None:
    for kind, rule in EXCEPTION_RULES:
        if isinstance(exc, kind):
            return rule
    return None


_EMAILISH = re.compile(r"[^/]*(?:@|%40)[^/]*", re.IGNORECASE)


class _RedactUrls(logging.Filter):
    """httpx logs every request's URL at INFO; ours carry e-mails in paths and
    queries, so the filter drops the query and masks e-mail-like path segments."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2 and isinstance(args[1], httpx.URL):
            url = args[1]
            path = _EMAILISH.sub("<redacted>", url.path)
            record.args = (args[0], f"{url.scheme}://{url.netloc.decode()}{path}", *args[2:])
        return True


_REDACTOR = _RedactUrls()


def _quiet_httpx_urls() -> None:
    httpx_logger = logging.getLogger("httpx")
    if _REDACTOR not in httpx_logger.filters:
        httpx_logger.addFilter(_REDACTOR)


def create_http_client(
    config: AnyUpstreamConfig,
    *,
    auth: httpx.Auth | None,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """The one client of an upstream for the life of the app (closed by ``aclose``)."""
    _quiet_httpx_urls()
    return httpx.AsyncClient(
        base_url=config.base,
        auth=auth,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
        timeout=httpx.Timeout(config.timeout_s),
        limits=httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        ),
        follow_redirects=False,
        # Only gateway/settings.py reads the environment: no proxies or netrc from it.
        trust_env=False,
    )


def policy_for(
    config: AnyUpstreamConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    redis: GuardedRedis | None = None,
) -> CallPolicy:
    """The call policy of an upstream; ``clock`` times its breaker's cool-down (tests
    pass a hand-driven one); with a ``rate_limit``, its calls are paced under it (shared
    between instances through ``redis``)."""
    limit = config.rate_limit
    pacer = (
        CallPacer(
            config.name,
            Pacing.under(limit.calls, limit.per_s),
            redis=redis,
            key=f"gateway:v1:pacer:{config.name}:{config.base}",
        )
        if limit
        else None
    )
    breaker = CircuitBreaker(
        config.name,
        failure_threshold=config.breaker.failure_threshold,
        reset_timeout_s=config.breaker.reset_timeout_s,
        clock=clock,
    )
    return CallPolicy(
        config.name,
        timeout_s=config.timeout_s,
        deadline_s=config.deadline_s,
        retries=config.retries,
        backoff_base_s=config.backoff_base_s,
        backoff_max_s=config.backoff_max_s,
        breaker=breaker,
        concurrency=config.max_connections,
        pacer=pacer,
    )


@dataclass(frozen=True, slots=True)
class Reply(Generic[M]):
    body: M
    next_url: str | None  # the Link header's rel="next", when there is one


def observe(upstream: str, telemetry: Telemetry, headers: httpx.Headers) -> None:
    """Report the rate-limit headroom and any ``Retry-After`` an answer carries."""
    if telemetry is NO_TELEMETRY:
        return
    for quota in quotas_in(headers):
        telemetry.quota(upstream, quota)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if retry_after is not None:
        telemetry.retry_after(upstream, retry_after)


class RestClient:
    """JSON over HTTP for one upstream; read-only calls, hence always retryable."""

    def __init__(
        self,
        config: AnyUpstreamConfig,
        *,
        auth: httpx.Auth | None,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry = NO_TELEMETRY,
        redis: GuardedRedis | None = None,
    ) -> None:
        self.name = config.name
        self.http = create_http_client(config, auth=auth, headers=headers)
        self.policy = policy_for(config, clock=clock, redis=redis)
        self.telemetry = telemetry
        self._origin = httpx.URL(config.base)

    @property
    def breaker(self) -> CircuitBreaker:
        return self.policy.breaker

    async def aclose(self) -> None:
        await self.http.aclose()

    async def get(
        self,
        route: str,
        model: type[M],
        *,
        path: Mapping[str, str] | None = None,
        params: Params | None = None,
    ) -> Reply[M] | None:
        return await self.request("GET", route, model, path=path, params=params)

    async def post(
        self,
        route: str,
        model: type[M],
        *,
        json: Any,
        path: Mapping[str, str] | None = None,
        budget_s: float | None = None,
    ) -> Reply[M] | None:
        """A POST that only reads (HubSpot's batch/read and search, a GraphQL query), so
        retrying is safe."""
        return await self.request("POST", route, model, path=path, json=json, budget_s=budget_s)

    async def request(
        self,
        method: str,
        route: str,
        model: type[M],
        *,
        path: Mapping[str, str] | None = None,
        params: Params | None = None,
        json: Any = None,
        url: str | None = None,
        budget_s: float | None = None,
    ) -> Reply[M] | None:
        """One logical call; None when the upstream says the resource does not exist.

        ``url`` (an absolute next-page URL) replaces the route, which then only names
        the call; ``budget_s`` narrows the call's budget.
        """
        operation = f"{method} {route}"
        # Encoded (or refused) before the call policy runs: a refused id sends nothing
        # and counts nowhere, not even against the breaker.
        target = url if url is not None else expand_path(self.name, route, path or {})

        async def attempt(slice_s: float) -> Reply[M] | None:
            try:
                response = await self.http.request(
                    method,
                    target,
                    params=None if url else params,
                    json=json,
                    timeout=httpx.Timeout(slice_s),
                )
            except httpx.HTTPError as exc:
                rule = rule_for_exception(exc)
                if rule is None or rule.error is None:
                    raise
                raise rule.error(self.name, f"{operation}: {rule.description}") from exc
            return self._answer(operation, response, model)

        return await self.policy.run(operation, attempt, budget_s=budget_s)

    def _answer(self, operation: str, response: httpx.Response, model: type[M]) -> Reply[M] | None:
        status = response.status_code
        observe(self.name, self.telemetry, response.headers)
        rule = rule_for_status(status)
        if rule.action is Action.SUCCEED:
            body = parse_json(self.name, operation, model, response.content, self.telemetry)
            return Reply(body, self._next_url(operation, response))
        if rule.action is Action.NOT_FOUND:
            return None
        if rule.action is Action.RATE_LIMITED:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise UpstreamRateLimited(
                self.name,
                f"{operation}: rate limited (Retry-After {retry_after}s)",
                retry_after_s=retry_after,
            )
        error = rule.error or UpstreamBadResponse
        raise error(self.name, f"{operation}: {rule.description} ({status})", status_code=status)

    def _next_url(self, operation: str, response: httpx.Response) -> str | None:
        link = response.links.get("next")
        if not link or not link.get("url"):
            return None
        url = httpx.URL(link["url"])
        if url.is_relative_url:
            return str(response.url.join(url))
        # Never follow a link off the configured origin: the credentials would go along.
        if (url.scheme, url.host, url.port) != (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        ):
            raise UpstreamBadResponse(self.name, f"{operation}: next-page link leaves the origin")
        return str(url)

    async def link_pages(
        self,
        route: str,
        model: type[M],
        *,
        path: Mapping[str, str] | None = None,
        params: Params | None = None,
    ) -> AsyncIterator[M]:
        """Every page of a listing paginated through ``Link: <…>; rel="next"`` (Shopify)."""
        reply = await self.get(route, model, path=path, params=params)
        while reply is not None:
            yield reply.body
            if reply.next_url is None:
                return
            reply = await self.request("GET", route, model, url=reply.next_url)

    async def cursor_pages(
        self,
        route: str,
        model: type[M],
        next_cursor: Callable[[M], str | None],
        *,
        path: Mapping[str, str] | None = None,
        params: Params | None = None,
        cursor_param: str = "next",
        max_pages: int | None = None,
    ) -> AsyncIterator[M]:
        """Every page of a listing whose body names the next cursor (Segment's
        ``cursor.next``, sent back as ``next=``); ``max_pages`` stops early."""
        query: dict[str, str | int] = dict(params or {})
        pages = 0
        while True:
            reply = await self.get(route, model, path=path, params=query)
            if reply is None:
                return
            yield reply.body
            pages += 1
            cursor = next_cursor(reply.body)
            if not cursor or (max_pages is not None and pages >= max_pages):
                return
            query[cursor_param] = cursor

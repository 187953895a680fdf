"""Credentials as ``httpx.Auth`` flows, so the client adds them and nothing else sees them.

Secrets arrive as ``SecretStr`` and are unwrapped only while building a header. The
OAuth 2 client-credentials flow is a small ``httpx.Auth`` rather than authlib's
``AsyncOAuth2Client``: authlib would replace our shared ``httpx.AsyncClient`` with its
own subclass, refreshes only on its own expiry arithmetic and has no notion of
HubSpot's ``401 EXPIRED_AUTHENTICATION``; the flow below is about eighty lines, runs
inside the very client (and connection pool) the adapter already owns, and its token
request travels through the same retry, timeout and breaker policy as the call it
serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Generator

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from adapters.config import (
    BasicAuthConfig,
    BearerAuthConfig,
    OAuth2ClientCredentialsConfig,
    ShopifyTokenAuthConfig,
)
from adapters.errors import (
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from adapters.transport.retry import parse_retry_after

__all__ = [
    "BearerToken",
    "HeaderToken",
    "OAuth2ClientCredentials",
    "basic_auth",
    "build_auth",
]

logger = logging.getLogger(__name__)


class HeaderToken(httpx.Auth):
    """A static token in a header of the upstream's choosing."""

    def __init__(self, header: str, token: SecretStr, *, prefix: str = "") -> None:
        self._header = header
        self._token = token
        self._prefix = prefix

    def __repr__(self) -> str:
        return f"<{type(self).__name__} header={self._header}>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = f"{self._prefix}{self._token.get_secret_value()}"
        yield request


class BearerToken(HeaderToken):
    def __init__(self, token: SecretStr) -> None:
        super().__init__("Authorization", token, prefix="Bearer ")


def basic_auth(username: SecretStr, password: SecretStr) -> httpx.BasicAuth:
    return httpx.BasicAuth(username.get_secret_value(), password.get_secret_value())


class _TokenAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    access_token: str = Field(min_length=1)
    token_type: str = "bearer"
    expires_in: float = Field(gt=0)


def _expired(response: httpx.Response) -> bool:
    if response.status_code != 401:
        return False
    try:
        return bool(response.json().get("category") == "EXPIRED_AUTHENTICATION")
    except (ValueError, AttributeError):
        return False


class OAuth2ClientCredentials(httpx.Auth):
    """Client-credentials grant with a cached token, refreshed ``refresh_margin_s`` before
    it expires (at most half its lifetime early), and fetched again once when the
    upstream nevertheless answers 401 ``EXPIRED_AUTHENTICATION``.

    One instance belongs to one client; concurrent requests share a single token fetch.
    """

    # We override async_auth_flow itself, so each body is read here explicitly.
    requires_response_body = True

    def __init__(
        self,
        upstream: str,
        *,
        token_url: str,
        client_id: SecretStr,
        client_secret: SecretStr,
        scopes: tuple[str, ...] = (),
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scopes = scopes
        self._margin = refresh_margin_s
        self._clock = clock
        self._token: SecretStr | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0  # observable: how many tokens this instance asked for

    def __repr__(self) -> str:
        return f"<OAuth2ClientCredentials upstream={self.upstream}>"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("OAuth2ClientCredentials works with httpx.AsyncClient only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                response = yield self._token_request(request)
                await response.aread()
                self._store(response)
            token = self._token
        assert token is not None
        request.headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        response = yield request
        await response.aread()
        if not _expired(response):
            return
        logger.info(
            "access token refused as expired; fetching a new one", extra={"upstream": self.upstream}
        )
        async with self._lock:
            # Another request may have refreshed it while we waited.
            if self._token is token:
                response = yield self._token_request(request)
                await response.aread()
                self._store(response)
            token = self._token
        assert token is not None
        request.headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        yield request

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id.get_secret_value(),
            "client_secret": self._client_secret.get_secret_value(),
        }
        if self._scopes:
            form["scope"] = " ".join(self._scopes)
        # The same per-attempt timeout as the request the token is for.
        return httpx.Request(
            "POST",
            self.token_url,
            data=form,
            extensions={
                key: value for key, value in request.extensions.items() if key == "timeout"
            },
        )

    def _store(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 429:
            raise UpstreamRateLimited(
                self.upstream,
                "token endpoint rate limited",
                retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise UpstreamUnavailable(
                self.upstream, f"token endpoint answered {status}", status_code=status
            )
        if status != 200:
            # The body may echo the client id: report the status only.
            raise UpstreamAuthError(
                self.upstream,
                f"token request refused ({status}): check the client credentials",
                status_code=status,
            )
        try:
            answer = _TokenAnswer.model_validate_json(response.content)
        except ValidationError:
            # Not chained: pydantic's error text quotes the input, i.e. the token.
            raise UpstreamBadResponse(self.upstream, "token endpoint answer unreadable") from None
        margin = min(self._margin, answer.expires_in / 2)
        self._token = SecretStr(answer.access_token)
        self._refresh_at = self._clock() + answer.expires_in - margin
        self.fetches += 1
        logger.info(
            "access token fetched",
            extra={"upstream": self.upstream, "expires_in_s": answer.expires_in},
        )


def build_auth(
    upstream: str,
    auth: BearerAuthConfig
    | OAuth2ClientCredentialsConfig
    | BasicAuthConfig
    | ShopifyTokenAuthConfig,
    *,
    token_url: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> httpx.Auth:
    """The ``httpx.Auth`` for an upstream's configured auth mode."""
    if isinstance(auth, BearerAuthConfig):
        return BearerToken(auth.token)
    if isinstance(auth, ShopifyTokenAuthConfig):
        return HeaderToken("X-Shopify-Access-Token", auth.token)
    if isinstance(auth, BasicAuthConfig):
        return basic_auth(auth.username, auth.password)
    if token_url is None:
        raise ValueError("OAuth 2 client credentials need a token URL")
    return OAuth2ClientCredentials(
        upstream,
        token_url=token_url,
        client_id=auth.client_id,
        client_secret=auth.client_secret,
        scopes=auth.scopes,
        refresh_margin_s=auth.refresh_margin_s,
        clock=clock,
    )

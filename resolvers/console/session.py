"""The console's session: an API key posted once, exchanged for a signed cookie.

The cookie holds the key's SHA-256 (never the key itself), a CSRF token and, through
itsdangerous, the time it was issued, signed with a key derived from the gateway's
erasure key (an HMAC under a label of its own), so every worker and every instance
accepts it. The server refuses it once GATEWAY_CONSOLE_SESSION_TTL_S has passed,
whatever the browser kept, and the key is verified again on every page: a revoked key
is signed out at once. HttpOnly (no script reads it), SameSite=Strict (no other site
sends it), Secure when served over HTTPS, and scoped to /console.

Before sign-in, the sign-in form has a CSRF token of its own in a second signed cookie
(login CSRF: no other site can sign a browser in under its own key).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from gateway.settings import Settings

COOKIE = "gw_console"
PRE_COOKIE = "gw_console_signin"
PATH = "/console"
_PRE_TTL_S = 3600
_LABEL = b"personalization-gateway console session v1"


@dataclass(frozen=True, slots=True)
class Session:
    key_digest: str
    csrf: str


class Sessions:
    """Issues and reads session cookies; one per process, in the app's state."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._session = URLSafeTimedSerializer(secret, salt="console-session")
        self._sign_in = URLSafeTimedSerializer(secret, salt="console-sign-in")

    @classmethod
    def from_settings(cls, settings: Settings) -> Sessions:
        # A secret every instance already shares and production already guards; the
        # label keeps the two uses apart (no session value is ever a tombstone's).
        master = settings.erasure_key.get_secret_value().encode()
        return cls(
            hmac.new(master, _LABEL, hashlib.sha256).digest(), settings.console_session_ttl_s
        )

    def issue(self, key_digest: str) -> tuple[str, Session]:
        """A new session for a verified key: the cookie's value and what it holds."""
        session = Session(key_digest, secrets.token_urlsafe(32))
        value = self._session.dumps({"k": session.key_digest, "c": session.csrf})
        return value, session

    def read(self, value: str | None) -> Session | None:
        """The session a cookie holds, or None: absent, forged, or expired."""
        if not value:
            return None
        try:
            data = self._session.loads(value, max_age=self.ttl_s)
        except BadSignature:  # SignatureExpired is one
            return None
        if not isinstance(data, dict) or not isinstance(data.get("k"), str):
            return None
        if not isinstance(data.get("c"), str):
            return None
        return Session(data["k"], data["c"])

    def sign_in_token(self) -> tuple[str, str]:
        """A CSRF token for the sign-in form: (cookie value, token)."""
        token = secrets.token_urlsafe(32)
        return self._sign_in.dumps(token), token

    def read_sign_in_token(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            token = self._sign_in.loads(value, max_age=_PRE_TTL_S)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path=PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )

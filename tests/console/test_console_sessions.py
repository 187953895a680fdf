"""Signing in, sessions and CSRF, over HTTP on Postgres and SQLite: the key is posted once
and never shown, the cookie is HttpOnly, SameSite=Strict, Secure over HTTPS and refused
by the server once expired or tampered with, a revoked key is signed out, and no POST
without the session's token or from another origin is acted on."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner
from starlette.applications import Starlette

from gateway.access.api_keys import Scope, digest
from resolvers.console.session import COOKIE, Sessions
from tests.console.session_client import console_client
from tests.gql_client import gql
from tests.in_process import asgi, services_of


def _cookie(response: httpx.Response, name: str) -> SimpleCookie:
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            return jar
    raise AssertionError(f"no {name} cookie set: {response.headers}")


async def test_the_key_becomes_a_strict_http_only_cookie_and_is_never_shown(
    app: Starlette,
) -> None:
    async with console_client(app, Scope.PROFILES_READ) as client:
        # The sign-in answer: the session cookie, and nothing of the key.
        again = await client.sign_in()
        assert again.status_code == 303
        morsel = _cookie(again, COOKIE)[COOKIE]
        assert morsel["httponly"] is True
        assert morsel["samesite"].lower() == "strict"
        assert morsel["path"] == "/console"
        assert not morsel["secure"]  # plain HTTP (loopback): a Secure cookie would be lost
        assert client.key not in morsel.value
        assert digest(client.key) not in again.text
        for path in ("/console/customers", "/console/templates", "/console/health"):
            page = await client.http.get(path)
            assert page.status_code == 200, path
            assert client.key not in page.text
            assert page.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

        # A refused key gets the form back, empty: not echoed.
        wrong = "gwk_" + "x" * 43
        refused = await client.sign_in(wrong)
        assert refused.status_code == 401
        assert wrong not in refused.text
        assert "That key was not accepted." in refused.text

    async with console_client(app, base_url="https://gw") as secure:
        answer = await secure.sign_in()
        assert _cookie(answer, COOKIE)[COOKIE]["secure"] is True


async def test_a_path_a_slash_away_from_a_page_is_redirected_to_it(app: Starlette) -> None:
    async with console_client(app, Scope.PROFILES_READ) as client:
        for path, page in [
            ("/console/customers/", "/console/customers"),
            ("/console/templates/studio/", "/console/templates/studio"),
        ]:
            answer = await client.http.get(path)
            assert answer.status_code == 307, path
            assert httpx.URL(answer.headers["location"]).path == page
            assert answer.headers["x-frame-options"] == "DENY"
            followed = await client.http.get(answer.headers["location"])
            assert followed.status_code == 200, path
        unknown = await client.http.get("/console/no-such-page/")
        assert unknown.status_code == 404
        assert "frame-ancestors 'none'" in unknown.headers["content-security-policy"]


async def test_every_post_needs_the_sessions_token_and_origin(app: Starlette) -> None:
    async with console_client(app, Scope.PROFILES_READ, Scope.PROFILES_WRITE) as client:
        async with httpx.AsyncClient(transport=asgi(app), base_url="http://gw") as admin:
            admin.headers["Authorization"] = f"Bearer {await _admin_key(app)}"
            made = await gql(
                admin,
                "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }",
                e=f"csrf.{time.time_ns()}@example.com",
            )
        target = f"/console/customers/{made['data']['upsertCustomer']['id']}/invalidate"
        missing = await client.http.post(target)
        assert missing.status_code == 403
        forged = await client.http.post(target, data={"csrf_token": "not-the-token"})
        assert forged.status_code == 403
        elsewhere = await client.http.post(
            target, data={"csrf_token": client.csrf}, headers={"Origin": "https://evil.example"}
        )
        assert elsewhere.status_code == 403
        header = await client.http.post(target, headers={"X-CSRF-Token": client.csrf})
        assert header.status_code == 303  # the script's way: the header
        accepted = await client.http.post(
            target, data={"csrf_token": client.csrf}, headers={"Origin": "http://gw"}
        )
        assert accepted.status_code == 303
        assert accepted.headers["location"].endswith("?done=invalidated")
        assert (await client.http.post("/console/sign-out")).status_code == 403

        # The sign-in form has a token of its own: posted without it, nothing happens.
        async with httpx.AsyncClient(transport=asgi(app), base_url="http://gw") as stranger:
            blind = await stranger.post("/console/sign-in", data={"api_key": client.key})
            assert blind.status_code == 403
            assert f"{COOKIE}=" not in blind.headers.get("set-cookie", "")

        copied = client.http.cookies.get(COOKIE)
        assert copied
        out = await client.post("/console/sign-out")
        assert out.status_code == 303
        after = await client.http.get("/console/customers")
        assert after.status_code == 303
        assert after.headers["location"].startswith("/console/sign-in")

        # A copy of the cookie taken before signing out (another browser, a proxy's
        # log) is signed out too: the server refuses the session, not only the browser.
        async with httpx.AsyncClient(
            transport=asgi(app), base_url="http://gw", cookies={COOKIE: copied}
        ) as thief:
            stolen = await thief.get("/console/customers")
            assert stolen.status_code == 303
            assert stolen.headers["location"].startswith("/console/sign-in")


async def _admin_key(app: Starlette) -> str:
    key, _ = await services_of(app).api_keys.create(f"admin-{time.time_ns()}", {Scope.ADMIN}, 10**6)
    return key


async def test_a_revoked_key_is_signed_out_at_once(app: Starlette) -> None:
    async with console_client(app, Scope.PROFILES_READ) as client:
        assert (await client.http.get("/console/customers")).status_code == 200
        await services_of(app).api_keys.revoke(client.name)
        answer = await client.http.get("/console/customers")
        assert answer.status_code == 303
        assert answer.headers["location"].endswith("note=revoked")


async def test_after_sign_in_only_a_console_page_of_this_server(app: Starlette) -> None:
    async with console_client(app) as client:
        for target, expected in [
            ("/console/health", "/console/health"),
            ("//evil.example/console/", "/console/customers"),
            ("https://evil.example/", "/console/customers"),
            ("/console/\\evil.example", "/console/customers"),
        ]:
            form = await client.http.get(f"/console/sign-in?next={target}")
            assert form.status_code == 200
            token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
            answer = await client.http.post(
                "/console/sign-in",
                data={"csrf_token": token, "api_key": client.key, "next": target},
            )
            assert answer.headers["location"] == expected, target


async def test_pages_count_against_the_keys_rate_limit(app: Starlette) -> None:
    async with console_client(app, Scope.PROFILES_READ, rate_limit=4) as client:
        statuses = [(await client.http.get("/console/templates")).status_code for _ in range(6)]
        assert statuses[0] == 200
        assert 429 in statuses
        limited = await client.http.get("/console/templates")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1


SECRET = b"s" * 32


def test_an_expired_session_is_refused_by_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions(SECRET, ttl_s=60)
    now = int(time.time())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now - 61)
    old, _ = sessions.issue("a" * 64)
    monkeypatch.undo()
    assert sessions.read(old) is None
    fresh, session = sessions.issue("a" * 64)
    assert sessions.read(fresh) == session


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0), replacement=st.characters(codec="ascii"))
def test_a_changed_session_cookie_is_refused(position: int, replacement: str) -> None:
    sessions = Sessions(SECRET, ttl_s=3600)
    value, session = sessions.issue("b" * 64)
    index = position % len(value)
    changed = value[:index] + replacement + value[index + 1 :]
    # Refused, or (a change only base64's spare bits hold, or none) the very same session:
    # never another one.
    assert sessions.read(changed) in (None, session)
    assert Sessions(b"t" * 32, ttl_s=3600).read(value) is None  # another gateway's secret

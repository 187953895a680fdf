"""Signing in and out: the API key is posted once and never kept, shown or logged.

The form posts the key with the sign-in form's own CSRF token; a key the gateway
accepts is exchanged for the session cookie (resolvers/console/session.py) and the
browser is sent on to the page it asked for (a console path only: no open redirect).
A refused key gets the form again, empty, with a message that does not say why
(unknown and revoked read alike).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from gateway.access.api_keys import digest
from resolvers.console import csrf
from resolvers.console.parts import ConsoleParts
from resolvers.console.session import COOKIE, PRE_COOKIE, clear_cookie, set_cookie
from resolvers.console.visit import Visit, redirect
from resolvers.state import state_of

_NOTES = {
    "expired": "Your session has expired; sign in again.",
    "revoked": "That key is no longer accepted; sign in with another.",
    "signed-out": "Signed out.",
}
_HOME = "/console/customers"


def _next(raw: object) -> str:
    """Where to go after signing in: a console page of this server, or the home page."""
    if isinstance(raw, str) and raw.startswith("/console/") and not raw.startswith("//"):
        return raw if "\\" not in raw else _HOME
    return _HOME


def _form(
    request: Request,
    parts: ConsoleParts,
    message: str | None,
    next_path: object,
    status_code: int = 200,
) -> Response:
    cookie, token = parts.sessions.sign_in_token()
    response = parts.pages.render(
        request,
        "sign_in.html",
        {
            "visit": None,
            "token": token,
            "message": message,
            "next": _next(next_path),
        },
        status_code,
    )
    set_cookie(response, request, PRE_COOKIE, cookie, 3600)
    return response


async def sign_in_page(request: Request) -> Response:
    parts: ConsoleParts = state_of(request)["console"]
    note = _NOTES.get(request.query_params.get("note", ""))
    return _form(request, parts, note, request.query_params.get("next"))


async def sign_in(request: Request) -> Response:
    state = state_of(request)
    parts: ConsoleParts = state["console"]
    form = await request.form()
    expected = parts.sessions.read_sign_in_token(request.cookies.get(PRE_COOKIE))
    given = form.get(csrf.FIELD)
    if (
        expected is None
        or not isinstance(given, str)
        or not hmac.compare_digest(given.encode(), expected.encode())
        or not csrf.same_origin(request)
    ):
        return _form(request, parts, "The form had expired; try again.", form.get("next"), 403)
    key = form.get("api_key")
    key = key.strip() if isinstance(key, str) else ""
    principal = await state["services"].api_keys.authenticate(key) if key else None
    if principal is None:
        return _form(request, parts, "That key was not accepted.", form.get("next"), 401)
    value, _ = parts.sessions.issue(digest(key))
    response = redirect(_next(form.get("next")))
    set_cookie(response, request, COOKIE, value, parts.sessions.ttl_s)
    clear_cookie(response, request, PRE_COOKIE)
    return response


async def sign_out(visit: Visit) -> Response:
    # Ended on the server too: the browser's cookie is cleared below, but a copy of it
    # (another browser, a proxy's log) would otherwise stay signed in until it expired.
    await visit.services.sign_outs.end(visit.session.csrf)
    response = redirect("/console/sign-in?note=signed-out")
    clear_cookie(response, visit.request, COOKIE)
    return response

"""Cross-site request forgery: every POST of the console carries the session's token.

Synchronizer tokens: the token is made at sign-in, kept in the signed, HttpOnly session
cookie (no page script and no other site can read it) and written into every form the
console renders (a hidden ``csrf_token`` field) and into a ``<meta>`` tag for the few
requests its script sends (header ``X-CSRF-Token``). A POST without the same token is
refused 403 before it reaches a handler. SameSite=Strict on the cookie and a check of
``Origin`` (when the browser sends it) are two more locks on the same door.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import FormData
from starlette.requests import Request

from gateway.templates.render import MAX_SOURCE_CHARS

FIELD = "csrf_token"
HEADER = "x-csrf-token"
# The largest form the studio takes: a template of the most characters a template may
# have, each URL-encoded at its worst (a 4-byte character is 12 bytes: %F0%9F%98%80),
# and room for the form's other fields. Its posts have this body limit (resolvers/app.py)
# rather than GATEWAY_MAX_BODY_BYTES, and any one field may be this large: Starlette
# refuses a field over 1 MiB by default, with a 400 naming no reason a person follows.
STUDIO_MAX_FORM_BYTES = MAX_SOURCE_CHARS * 12 + 64 * 1024
STUDIO_POSTS = ("/console/templates/check", "/console/templates/preview", "/console/templates/save")
STUDIO_TOO_LARGE = (
    f"A template has at most {MAX_SOURCE_CHARS:,} characters: this form is larger than any "
    "template can be, and was not read."
)


async def studio_form(request: Request) -> FormData:
    """A studio post's form, read with the studio's limit a field. Starlette keeps the
    first form read: whichever reads first (the token check, when the token is a field,
    or the handler, when it is the header console.js sends) must use this limit."""
    return await request.form(max_part_size=STUDIO_MAX_FORM_BYTES)


async def presented_token(request: Request) -> str | None:
    """The token a POST carries: its header, else its form field."""
    header = request.headers.get(HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        # Starlette keeps it: the handler reads it again. The body limit bounds the form
        # as a whole (a studio form's larger one only on the studio's paths).
        form = await studio_form(request)
        value = form.get(FIELD)
        return value if isinstance(value, str) else None
    return None


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser, or an old one: the token alone decides
    # "null" (a sandboxed frame, e.g. the studio's preview) is another origin too.
    expected = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    return origin == expected


async def verified(request: Request, expected: str) -> bool:
    """Whether this POST is the session's own: same origin and the session's token."""
    if not same_origin(request):
        return False
    given = await presented_token(request)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())

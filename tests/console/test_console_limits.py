"""The console's forms are bounded like the API's bodies: its sign-in form is open to
anyone, and Starlette's form parser buffers a whole URL-encoded body (up to a thousand
fields of a megabyte each) before the handler sees it."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from gateway.templates.render import MAX_SOURCE_CHARS
from tests.console.session_client import console_client
from tests.in_process import asgi

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def test_a_huge_sign_in_form_is_refused_before_it_is_read(app: Starlette) -> None:
    field = b"f=" + b"x" * 900_000 + b"&"
    async with httpx.AsyncClient(transport=asgi(app), base_url="http://gw") as stranger:
        declared = await stranger.post("/console/sign-in", content=field * 8, headers=FORM)
        assert declared.status_code == 413

        async def chunks() -> object:  # no Content-Length: counted as it is read
            for _ in range(8):
                yield field

        streamed = await stranger.post("/console/sign-in", content=chunks(), headers=FORM)  # type: ignore[arg-type]
        assert streamed.status_code == 413


async def test_the_largest_template_still_fits_the_studio(app: Starlette) -> None:
    # A template of the largest size, in characters that take 9 bytes each once
    # URL-encoded (Starlette refuses any one field over 1 MiB): checked, not refused for
    # its body's size.
    source = "\u20ac" * MAX_SOURCE_CHARS
    async with console_client(app, Scope.PROFILES_READ, Scope.PROFILES_WRITE) as client:
        checked = await client.post("/console/templates/check", source=source, format="TEXT")
        assert checked.status_code == 200, checked.text[:300]
        assert checked.json()["ok"] is True

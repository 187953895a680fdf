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


async def test_the_largest_template_of_four_byte_characters_fits_the_studio(
    app: Starlette,
) -> None:
    """12 bytes a character once URL-encoded: 1.2 MB, over GATEWAY_MAX_BODY_BYTES (1 MiB)
    and over Starlette's 1 MiB a field, yet a template the gateway accepts; one more
    character is the renderer's error, not the body limit's."""
    source = "\U0001f600" * MAX_SOURCE_CHARS
    async with console_client(app, Scope.PROFILES_READ, Scope.PROFILES_WRITE) as client:
        checked = await client.post("/console/templates/check", source=source, format="TEXT")
        assert checked.status_code == 200, checked.text[:300]
        assert checked.json()["ok"] is True
        longer = await client.post("/console/templates/check", source=source + "x", format="TEXT")
        assert longer.status_code == 200, longer.text[:300]
        assert "at most 100000 characters" in longer.json()["error"]
        saved = await client.post(
            "/console/templates/save", name="emoji-wall", source=source, format="TEXT"
        )
        assert saved.status_code == 303, saved.text[:300]


async def test_the_largest_template_fits_the_studio_with_the_token_as_console_js_sends_it(
    app: Starlette,
) -> None:
    """console.js posts the live check with the token in ``X-CSRF-Token``: the form is
    then first read by the handler, which must read it with the studio's limit too."""
    source = "\U0001f600" * MAX_SOURCE_CHARS
    async with console_client(app, Scope.PROFILES_READ, Scope.PROFILES_WRITE) as client:
        header = {"X-CSRF-Token": client.csrf}
        form = {"source": source, "format": "TEXT"}
        checked = await client.http.post("/console/templates/check", data=form, headers=header)
        assert checked.status_code == 200, checked.text[:300]
        assert checked.json()["ok"] is True
        previewed = await client.http.post("/console/templates/preview", data=form, headers=header)
        assert previewed.status_code == 200, previewed.text[:300]
        saved = await client.http.post(
            "/console/templates/save", data={**form, "name": "emoji-header"}, headers=header
        )
        assert saved.status_code == 303, saved.text[:300]


async def test_a_form_larger_than_any_template_is_refused_saying_why(app: Starlette) -> None:
    async with console_client(app, Scope.PROFILES_READ) as client:
        huge = "\U0001f600" * (MAX_SOURCE_CHARS + 10_000)  # 1.32 MB encoded
        refused = await client.post("/console/templates/check", source=huge, format="TEXT")
        assert refused.status_code == 413
        message = refused.json()["errors"][0]["message"]
        assert "A template has at most 100,000 characters" in message
        # Elsewhere in the console the general limit stands.
        other = await client.post("/console/sign-out", filler="x" * 1_100_000)
        assert other.status_code == 413

"""A console client over in-process HTTP: signs in through the form, as a browser does,
and keeps the session cookie; for the tests of sessions, CSRF and scopes without a
browser."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from tests.conftest import issue_key
from tests.in_process import asgi, services_of

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


class ConsoleClient:
    def __init__(self, http: httpx.AsyncClient, key: str, name: str) -> None:
        self.http = http
        self.key = key
        self.name = name  # the key's name: the audit log's actor
        self.csrf = ""

    async def sign_in(self, key: str | None = None) -> httpx.Response:
        form = await self.http.get("/console/sign-in")
        token = _TOKEN.search(form.text)
        assert token, form.text
        answer = await self.http.post(
            "/console/sign-in",
            data={"csrf_token": token.group(1), "api_key": key or self.key},
        )
        if answer.status_code == 303:
            page = await self.http.get("/console/templates")
            found = _META.search(page.text)
            assert found, page.text
            self.csrf = found.group(1)
        return answer

    async def post(self, path: str, **form: str) -> httpx.Response:
        return await self.http.post(path, data={"csrf_token": self.csrf, **form})


@asynccontextmanager
async def console_client(
    app: Starlette, *scopes: Scope, base_url: str = "http://gw", rate_limit: int = 10**6
) -> AsyncIterator[ConsoleClient]:
    """A signed-in console client holding a fresh key with ``scopes``."""
    name = f"console-{uuid.uuid4().hex[:10]}"
    key, _ = await services_of(app).api_keys.create(name, scopes or (Scope.ADMIN,), rate_limit)
    async with httpx.AsyncClient(transport=asgi(app), base_url=base_url) as http:
        client = ConsoleClient(http, key, name)
        answer = await client.sign_in()
        assert answer.status_code == 303, answer.text
        yield client


async def api_key(app: Starlette, *scopes: Scope) -> str:
    return await issue_key(app, *scopes)

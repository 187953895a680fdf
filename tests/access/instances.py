"""Gateway instances of their own, anonymous clients and the checks the access tests share."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import (
    api_client,
    unique_email,
)
from tests.gql_client import gql
from tests.in_process import asgi, lifespan

UPSERT = "mutation($email: String!) { upsertCustomer(input: {email: $email}) { id email } }"


BY_EMAIL = "query($email: String!) { customer(email: $email) { id email } }"


PING = {"query": "{ __typename }"}


@asynccontextmanager
async def running(database_url: str, cache_url: str = "memory://", **settings: Any) -> Any:
    """A gateway instance of its own (its own key cache and rate limiter)."""
    app = create_app(load_settings(database_url=database_url, cache_url=cache_url, **settings))
    async with lifespan(app):
        yield app


def anonymous(app: Starlette, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=asgi(app), base_url="http://gw", headers=headers)


def assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/json")
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in response.json()


async def new_customer(app: Starlette) -> tuple[str, str]:
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        email = unique_email("access")
        body = await gql(writer, UPSERT, email=email)
    return body["data"]["upsertCustomer"]["id"], email

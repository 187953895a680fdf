"""Auth flows against the samples: bearer, Shopify's header, basic, OAuth 2 client
credentials (fetched once, reused, refreshed before expiry, re-fetched once when
refused as expired), and wrong credentials failing clearly without the secret."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.errors import UpstreamAuthError
from adapters.transport.auth import OAuth2ClientCredentials
from demo.upstreams.runner import SampleUpstreams
from tests.fake_clock import FakeClock

Build = Callable[..., Any]
TOKEN = "POST /oauth/v1/token"
CONTACT = "GET /crm/v3/objects/contacts/{id}"
WRONG = "wrong-secret-value-0123456789"


def oauth_of(adapter: Any) -> OAuth2ClientCredentials:
    auth = adapter.rest.http.auth
    assert isinstance(auth, OAuth2ClientCredentials)
    return auth


async def test_bearer_token(build: Build, upstreams: SampleUpstreams) -> None:
    crm = build("hubspot")
    assert await crm.fetch_contact(upstreams.people[0].hubspot_id) is not None


async def test_oauth_token_is_fetched_once_and_reused(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("hubspot_oauth")
    people = upstreams.people[:3]
    await asyncio.gather(*(crm.fetch_contact(p.hubspot_id) for p in people))
    assert await crm.fetch_contacts([p.hubspot_id for p in people])
    assert upstreams.hubspot.calls.count(TOKEN) == 1  # concurrent first calls share it
    assert upstreams.hubspot.calls.count(CONTACT) == 3
    assert oauth_of(crm).fetches == 1


async def test_oauth_token_is_refreshed_before_it_expires(
    build: Build, upstreams: SampleUpstreams
) -> None:
    # Tokens refreshed 60 s before they expire: a call 51 s before gets a fresh one first
    # (the upstream would still take the old one, so nothing is refused or repeated).
    clock = FakeClock()
    crm = build("hubspot_oauth", auth={"refresh_margin_s": 60}, clock=clock)
    person = upstreams.people[0].hubspot_id
    assert await crm.fetch_contact(person) is not None
    assert await crm.fetch_contact(person) is not None
    assert upstreams.hubspot.calls.count(TOKEN) == 1
    clock.advance(upstreams.hubspot.token_ttl_s - 61)
    assert await crm.fetch_contact(person) is not None
    assert upstreams.hubspot.calls.count(TOKEN) == 1  # not yet in the margin
    clock.advance(10)
    assert await crm.fetch_contact(person) is not None
    assert upstreams.hubspot.calls.count(TOKEN) == 2
    assert upstreams.hubspot.calls.count(CONTACT) == 4  # never refused, never repeated


async def test_token_refused_as_expired_is_fetched_again_once(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("hubspot_oauth")
    person = upstreams.people[0].hubspot_id
    assert await crm.fetch_contact(person) is not None
    upstreams.hubspot.expire_tokens()  # the upstream revokes early
    assert await crm.fetch_contact(person) is not None
    assert upstreams.hubspot.calls.count(TOKEN) == 2
    assert upstreams.hubspot.calls.count(CONTACT) == 3  # 1 + (401, then retried once)


async def test_wrong_client_secret_is_a_clear_auth_error(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("hubspot_oauth", env={"HUBSPOT_CLIENT_SECRET": WRONG})
    with pytest.raises(UpstreamAuthError) as caught:
        await crm.fetch_contact(upstreams.people[0].hubspot_id)
    message = str(caught.value)
    assert "token request refused (400)" in message
    assert caught.value.upstream == "hubspot_oauth"
    assert WRONG not in message
    assert upstreams.credentials.hubspot_client_id not in message
    assert upstreams.hubspot.calls.count(TOKEN) == 1  # auth errors are not retried
    assert upstreams.hubspot.calls.count(CONTACT) == 0


def _wrong_credentials() -> list[
    tuple[str, dict[str, str], str, Callable[[Any, SampleUpstreams], Awaitable[Any]]]
]:
    return [
        (
            "hubspot",
            {"HUBSPOT_TOKEN": WRONG},
            "GET /crm/v3/objects/contacts/{id}",
            lambda a, up: a.fetch_contact(up.people[0].hubspot_id),
        ),
        (
            "shopify",
            {"SHOPIFY_TOKEN": WRONG},
            "GET /admin/api/2024-10/customers/search.json",
            lambda a, up: a.find_customers_by_email([up.people[0].email]),
        ),
        (
            "segment",
            {"SEGMENT_TOKEN": WRONG},
            "GET /v1/spaces/{space_id}/collections/{collection}/profiles/{identifier}/traits",
            lambda a, up: a.fetch_traits(user_id=up.people[0].segment_user_id),
        ),
        (
            "soap_crm",
            {"SOAP_CRM_PASSWORD": WRONG},
            "POST /soap/contacts",
            lambda a, up: a.fetch_contact("C-000000"),
        ),
    ]


@pytest.mark.parametrize(
    ("variant", "env", "endpoint", "call"),
    _wrong_credentials(),
    ids=[case[0] for case in _wrong_credentials()],
)
async def test_wrong_credentials_fail_once_without_the_secret(
    build: Build,
    upstreams: SampleUpstreams,
    variant: str,
    env: dict[str, str],
    endpoint: str,
    call: Callable[[Any, SampleUpstreams], Awaitable[Any]],
) -> None:
    adapter = build(variant, env=env)
    with pytest.raises(UpstreamAuthError) as caught:
        await call(adapter, upstreams)
    assert caught.value.code == "UPSTREAM_UNAVAILABLE"
    assert caught.value.status_code == 401
    assert WRONG not in str(caught.value)
    assert upstreams.services[variant].calls.count(endpoint) == 1  # not retried


async def test_credentials_stay_out_of_logs_and_reprs(
    build: Build, upstreams: SampleUpstreams, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    person = upstreams.people[4]
    crm, oauth, shop, segment, soap = (
        build(v) for v in ("hubspot", "hubspot_oauth", "shopify", "segment", "soap_crm")
    )
    assert await crm.fetch_contact_by_email(person.email) is not None
    assert await oauth.fetch_contact(person.hubspot_id) is not None
    assert await shop.find_customers_by_email([person.email])
    assert await segment.fetch_traits(email=person.email) is not None
    assert await soap.fetch_contact_by_email(person.email) is not None
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    secrets = [
        upstreams.credentials.hubspot_token,
        upstreams.credentials.hubspot_client_secret,
        upstreams.credentials.shopify_token,
        upstreams.credentials.segment_token,
        upstreams.credentials.soap_password,
    ]
    for secret in secrets:
        assert secret not in logged
    assert person.email not in logged  # httpx's request log has the e-mail masked
    assert "HTTP Request" in caplog.text  # ... but is still there
    for adapter in (crm, oauth, shop, segment):
        shown = repr(adapter.config) + repr(adapter.rest.http.auth)
        assert not any(secret in shown for secret in secrets)

"""An unsubscribe received by one instance suppresses the customer on another at once:
the second instance's cached profile (in the process and in Redis) is dropped by the
webhook's invalidation, not left to expire. And the ESPs' keys as instances are given
them: from the environment or a file, a wrong key refused at start-up.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr, ValidationError

from gateway.ingest.webhook_receiver import Webhooks
from gateway.settings import Settings, SettingsError, load_settings
from tests.conftest import api_client, clean_redis, redis_database_url, unique_email
from tests.gql_client import gql
from tests.in_process import lifespan
from tests.ingest.test_esp_webhooks import PROFILE, subscribed
from tests.ingest.webhook_requests import (
    BASE,
    SENDGRID_PUBLIC,
    mandrill_event,
    mandrill_request,
    realtime_app,
    sendgrid_event,
    sendgrid_request,
    shopify_request,
)
from tests.resolvers.test_response_cache import hit, persisted_get

REDIS_URL = redis_database_url(10)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


async def _suppressed(client: httpx.AsyncClient, email: str) -> bool:
    body = await gql(client, PROFILE, email=email)
    assert "errors" not in body, body
    suppressed: bool = body["data"]["customer"]["suppressed"]
    return suppressed


@pytest.mark.parametrize("esp", ["sendgrid", "mandrill"])
async def test_an_unsubscribe_on_one_instance_suppresses_on_the_other(
    database_url: str, redis_url: str, esp: str
) -> None:
    settings = load_settings(database_url=database_url, cache_url=redis_url)
    first, second = realtime_app(settings), realtime_app(settings)
    async with (
        lifespan(first),
        lifespan(second),
        api_client(first, base_url=BASE) as one,
        api_client(second, base_url=BASE) as two,
    ):
        email, _ = await subscribed(one)
        # Read twice on the second instance: its copy is cached now.
        assert await _suppressed(two, email) is False
        assert await _suppressed(two, email) is False
        request = (
            sendgrid_request([sendgrid_event(email, "unsubscribe")])
            if esp == "sendgrid"
            else mandrill_request([mandrill_event(email, "unsub")])
        )
        response = await one.post(**request)
        assert response.status_code == 200, response.text
        assert response.json()["events"][0]["status"] == "processed"
        assert await _suppressed(two, email) is True
        assert await _suppressed(one, email) is True


def test_webhook_keys_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "webhook-secrets.json"
    path.write_text(json.dumps({"sendgrid": SENDGRID_PUBLIC, "mandrill": "from-the-file-0123"}))
    monkeypatch.setenv("GATEWAY_WEBHOOK_SECRETS_FILE", str(path))
    monkeypatch.setenv("GATEWAY_WEBHOOK_SECRETS", json.dumps({"mandrill": "from-the-env-01234"}))
    settings = load_settings(database_url="sqlite+aiosqlite://")
    secrets = {name: value.get_secret_value() for name, value in settings.webhook_secrets.items()}
    assert secrets == {"sendgrid": SENDGRID_PUBLIC, "mandrill": "from-the-env-01234"}
    assert SENDGRID_PUBLIC not in repr(settings)


@pytest.mark.parametrize(
    "key",
    [
        "bm90IGEga2V5IGF0IGFsbA==",  # base64, not DER
        "not base64 at all!",
        # A P-384 key: ECDSA, but not the curve SendGrid signs with.
        base64.b64encode(
            ec.generate_private_key(ec.SECP384R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode(),
    ],
)
def test_a_sendgrid_key_that_is_not_p256_stops_the_start_without_quoting_it(key: str) -> None:
    with pytest.raises(SettingsError, match="sendgrid") as refused_at_load:
        load_settings(webhook_secrets={"sendgrid": key})
    assert key not in str(refused_at_load.value)
    with pytest.raises(ValueError, match="sendgrid") as refused:
        Webhooks(cast(Any, None), {"sendgrid": SecretStr(key)})
    assert key not in str(refused.value)


async def test_an_esp_batch_of_megabytes_is_taken_and_other_webhooks_keep_their_limit(
    gateway: httpx.AsyncClient, database_url: str
) -> None:
    """Mandrill posts up to 1,000 events (about 2 MB form-encoded), SendGrid batches
    approach 768 KB: over the 1 MiB of the other webhooks, they were 413 on every retry."""
    email, _ = await subscribed(gateway)
    padding = {"note": "x" * 1800}
    events = [
        mandrill_event(email, "open", url=f"https://shop.example/{n}", msg_metadata=padding)
        for n in range(999)
    ]
    for event in events:
        event["msg"]["metadata"] = event.pop("msg_metadata")
    events.append(mandrill_event(email, "unsub"))
    request = mandrill_request(events)
    assert len(request["content"]) > 2_000_000
    response = await gateway.post(**request)
    assert response.status_code == 200, response.text[:300]
    assert {e["status"] for e in response.json()["events"]} == {"processed"}
    assert await _suppressed(gateway, email) is True
    big = [sendgrid_event(email, "open", padding="x" * 1000) for _ in range(1100)]
    response = await gateway.post(**sendgrid_request(big))
    assert response.status_code == 200, response.text[:300]
    shopify = shopify_request({"id": 1, "note": "x" * (1 << 20)})
    assert (await gateway.post(**shopify)).status_code == 413


async def test_the_esp_limit_is_a_setting_and_counts_undeclared_bodies(database_url: str) -> None:
    settings = load_settings(
        database_url=database_url, cache_url="memory://", esp_webhook_max_body_bytes=1 << 20
    )
    app = realtime_app(settings)
    request = mandrill_request([mandrill_event(unique_email("big"), "open", pad="x" * (1 << 20))])

    async def chunks() -> AsyncIterator[bytes]:
        yield request["content"]

    async with lifespan(app), api_client(app, base_url=BASE) as client:
        declared = await client.post(**request)
        undeclared = await client.post(**dict(request, content=chunks()))
    for response in (declared, undeclared):
        assert response.status_code == 413
        assert "BODY_TOO_LARGE" in response.text


@pytest.mark.parametrize("source", ["hubspot", "shopify", "segment", "mandrill", "sendgrid"])
@pytest.mark.parametrize("secret", ["", "   ", "\t\n", "short-secret-15c"[:15]])
@pytest.mark.parametrize("given", ["env", "file"])
def test_an_empty_or_short_webhook_secret_stops_the_start_naming_only_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, secret: str, given: str
) -> None:
    """A Mandrill key "" verified signatures made with key ""; an empty SendGrid key
    answered every webhook 500 (an assert). Refused as settings load, the value unsaid."""
    if given == "env":
        monkeypatch.setenv("GATEWAY_WEBHOOK_SECRETS", json.dumps({source: secret}))
    else:
        path = tmp_path / "webhook-secrets.json"
        path.write_text(json.dumps({source: secret}))
        monkeypatch.setenv("GATEWAY_WEBHOOK_SECRETS_FILE", str(path))
    with pytest.raises(SettingsError, match=f"GATEWAY_WEBHOOK_SECRETS: the {source} webhook"):
        load_settings(database_url="sqlite+aiosqlite://")
    with pytest.raises(ValueError, match=f"the {source} webhook") as refused:
        Webhooks(cast(Any, None), {source: SecretStr(secret)})
    if secret.strip():
        assert secret not in str(refused.value)
    with pytest.raises(ValidationError) as invalid:
        Settings(webhook_secrets={source: secret})
    assert not secret.strip() or secret not in str(invalid.value)


def test_a_secret_of_16_characters_is_enough() -> None:
    secrets = {"mandrill": "0123456789abcdef", "hubspot": "a uuid-long secret here"}
    loaded = load_settings(webhook_secrets=secrets).webhook_secrets
    assert {name: value.get_secret_value() for name, value in loaded.items()} == secrets


ENGAGEMENT = (
    "query Engagement($email: String!) { customer(email: $email) { id "
    "engagement { emailOpens30d emailClicks30d } } }"
)


async def test_only_opens_and_clicks_drop_a_stored_answer(
    database_url: str, redis_url: str
) -> None:
    """A send's processed, delivered and deferred events and blocked bounces change no
    field: they dropped every stored answer of their recipients in the middle of a send."""
    app = realtime_app(load_settings(database_url=database_url, cache_url=redis_url))
    async with lifespan(app), api_client(app, base_url=BASE) as client:
        email, _ = await subscribed(client)
        assert (await persisted_get(client, ENGAGEMENT, email=email)).status_code == 200
        assert hit(await persisted_get(client, ENGAGEMENT, email=email))
        quiet = [sendgrid_event(email, kind) for kind in ("processed", "delivered", "deferred")]
        quiet.append(sendgrid_event(email, "bounce", type="blocked"))
        response = await client.post(**sendgrid_request(quiet))
        assert [e["status"] for e in response.json()["events"]] == ["processed"] * 4
        sent = [mandrill_event(email, kind) for kind in ("send", "deferral", "soft_bounce")]
        response = await client.post(**mandrill_request(sent))
        assert [e["status"] for e in response.json()["events"]] == ["processed"] * 3
        assert hit(await persisted_get(client, ENGAGEMENT, email=email))
        assert (await client.post(**sendgrid_request([sendgrid_event(email, "open")]))).is_success
        after = await persisted_get(client, ENGAGEMENT, email=email)
        assert not hit(after)
        assert after.json()["data"]["customer"]["engagement"]["emailOpens30d"] == 1


def test_the_mandrill_replay_bound_is_a_setting_within_the_events_retention() -> None:
    assert load_settings().mandrill_max_age_s() == 7 * 86400
    assert load_settings(mandrill_max_event_age_days=2).mandrill_max_age_s() == 2 * 86400
    # Rows kept 3 days: a replay of a 4-day-old event would find none to be a duplicate of.
    assert load_settings(retention_events_days=3).mandrill_max_age_s() == 3 * 86400
    assert load_settings(retention_events_days=30).mandrill_max_age_s() == 7 * 86400

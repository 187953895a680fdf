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
from pydantic import SecretStr

from gateway.ingest.webhook_receiver import Webhooks
from gateway.settings import load_settings
from tests.conftest import api_client, clean_redis, redis_database_url
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
)

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
    path.write_text(json.dumps({"sendgrid": SENDGRID_PUBLIC, "mandrill": "from-the-file"}))
    monkeypatch.setenv("GATEWAY_WEBHOOK_SECRETS_FILE", str(path))
    monkeypatch.setenv("GATEWAY_WEBHOOK_SECRETS", json.dumps({"mandrill": "from-the-env"}))
    settings = load_settings(database_url="sqlite+aiosqlite://")
    secrets = {name: value.get_secret_value() for name, value in settings.webhook_secrets.items()}
    assert secrets == {"sendgrid": SENDGRID_PUBLIC, "mandrill": "from-the-env"}
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
    with pytest.raises(ValueError, match="sendgrid") as refused:
        Webhooks(cast(Any, None), {"sendgrid": SecretStr(key)})
    assert key not in str(refused.value)

"""Every fault knob, on every sample service, as a client on the wire notices it."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from lxml import etree  # type: ignore[import-untyped]
from starlette.types import Message

from demo.upstreams.credentials import (
    DEMO_HUBSPOT_TOKEN,
    DEMO_SEGMENT_SPACE,
    DEMO_SEGMENT_TOKEN,
    DEMO_SHOPIFY_TOKEN,
    DEMO_SOAP_PASSWORD,
    DEMO_SOAP_USER,
)
from demo.upstreams.runner import SERVICE_NAMES, SampleUpstreams

_SOAP_BODY = (
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:c="urn:gateway:sample:contacts:v1"><soap:Body><c:GetContact><c:id>C-000001</c:id>'
    "</c:GetContact></soap:Body></soap:Envelope>"
)


# One client for the module: creating one per request costs ~30 ms (SSL context).
_HTTP = httpx.Client()


def probe(upstreams: SampleUpstreams, name: str, timeout: float = 5) -> httpx.Response:
    """One ordinary, authorised request to the service."""
    base = upstreams.base_urls[name]
    person = upstreams.people[1]
    if name == "hubspot":
        return _HTTP.get(
            f"{base}/crm/v3/objects/contacts/{person.hubspot_id}",
            timeout=timeout,
            headers={"Authorization": f"Bearer {DEMO_HUBSPOT_TOKEN}"},
        )
    if name == "shopify":
        return _HTTP.get(
            f"{base}/admin/api/2024-10/customers/{person.shopify_id}/orders.json",
            params={"status": "any"},
            timeout=timeout,
            headers={"X-Shopify-Access-Token": DEMO_SHOPIFY_TOKEN},
        )
    if name == "segment":
        return _HTTP.get(
            f"{base}/v1/spaces/{DEMO_SEGMENT_SPACE}/collections/users/profiles/"
            f"user_id:{person.segment_user_id}/traits",
            timeout=timeout,
            auth=(DEMO_SEGMENT_TOKEN, ""),
        )
    return _HTTP.post(
        f"{base}/soap/contacts",
        content=_SOAP_BODY,
        timeout=timeout,
        auth=(DEMO_SOAP_USER, DEMO_SOAP_PASSWORD),
        headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"urn:gateway:sample:contacts:v1/GetContact"',
        },
    )


def parse(name: str, answer: httpx.Response) -> Any:
    if name == "soap_crm":
        return etree.fromstring(answer.content)
    return json.loads(answer.content)


@pytest.fixture(params=SERVICE_NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_no_fault_answers_normally(upstreams: SampleUpstreams, name: str) -> None:
    answer = probe(upstreams, name)
    assert answer.status_code == 200
    parse(name, answer)


def test_hang_holds_the_request_until_the_client_gives_up(
    upstreams: SampleUpstreams, name: str
) -> None:
    upstreams.services[name].faults.update(hang=True)
    timeout = 0.5 if name == "hubspot" else 0.15
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        probe(upstreams, name, timeout=timeout)
    assert time.perf_counter() - started >= timeout
    # The server noticed the client leave and let the request go.
    deadline = time.perf_counter() + 1
    while upstreams.services[name].held and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert upstreams.services[name].held == 0
    upstreams.services[name].faults.update(hang=False)
    assert probe(upstreams, name).status_code == 200


def test_latency_delays_the_answer(upstreams: SampleUpstreams, name: str) -> None:
    upstreams.services[name].faults.update(latency_ms=100)
    started = time.perf_counter()
    assert probe(upstreams, name).status_code == 200
    assert time.perf_counter() - started >= 0.1


def test_rate_limit_next_answers_429_with_retry_after(
    upstreams: SampleUpstreams, name: str
) -> None:
    upstreams.services[name].faults.update(rate_limit_next=2, retry_after_s=4)
    first, second, third = (probe(upstreams, name) for _ in range(3))
    assert first.status_code == second.status_code == 429
    assert float(first.headers["Retry-After"]) == 4
    assert third.status_code == 200
    assert upstreams.services[name].faults.snapshot()["rate_limit_next"] == 0


def test_error_rate_is_seeded_and_reproducible(upstreams: SampleUpstreams, name: str) -> None:
    faults = upstreams.services[name].faults
    faults.update(error_rate=0.5)
    first = [probe(upstreams, name).status_code for _ in range(16)]
    faults.update(error_rate=0.5)
    second = [probe(upstreams, name).status_code for _ in range(16)]
    assert first == second
    assert set(first) == {200, 503}


def test_error_status_is_configurable(upstreams: SampleUpstreams, name: str) -> None:
    upstreams.services[name].faults.update(error_rate=1.0, error_status=500)
    assert probe(upstreams, name).status_code == 500


def test_malformed_body_keeps_its_content_type_and_fails_parsing(
    upstreams: SampleUpstreams, name: str
) -> None:
    healthy = probe(upstreams, name)
    upstreams.services[name].faults.update(malformed=True)
    broken = probe(upstreams, name)
    assert broken.status_code == 200
    assert broken.headers["content-type"] == healthy.headers["content-type"]
    assert 0 < len(broken.content) < len(healthy.content)
    with pytest.raises((json.JSONDecodeError, etree.XMLSyntaxError)):
        parse(name, broken)


def test_schema_change_is_well_formed_but_reshaped(upstreams: SampleUpstreams, name: str) -> None:
    healthy = parse(name, probe(upstreams, name))
    upstreams.services[name].faults.update(schema_change=True)
    drifted = parse(name, probe(upstreams, name))
    if name == "soap_crm":
        ns = {"c": "urn:gateway:sample:contacts:v1"}
        assert healthy.find(".//c:contact/c:email", ns) is not None
        assert drifted.find(".//c:contact/c:email", ns) is None
        assert drifted.find(".//c:Contact/c:Email", ns) is not None
    else:
        assert isinstance(drifted, dict)
        assert set(drifted) != set(healthy)
        assert set(drifted) == {key[:1].upper() + key[1:] for key in healthy}


def test_faults_over_http_merge_and_reset(upstreams: SampleUpstreams, name: str) -> None:
    url = f"{upstreams.base_urls[name]}/_sample/faults"
    defaults = _HTTP.get(url).json()
    assert defaults == {
        "latency_ms": 0,
        "error_rate": 0.0,
        "error_status": 503,
        "rate_limit_next": 0,
        "retry_after_s": 1,
        "malformed": False,
        "schema_change": False,
        "hang": False,
        "soap_fault": False,
        "rename_fields": {},
        "retype_fields": [],
        "quota_limit": 0,
    }
    _HTTP.put(url, json={"latency_ms": 5})
    merged = _HTTP.put(url, json={"rate_limit_next": 1}).json()
    assert merged["latency_ms"] == 5
    assert merged["rate_limit_next"] == 1
    assert upstreams.services[name].faults.settings.rate_limit_next == 1
    assert _HTTP.put(url, json={"bogus": 1}).status_code == 400
    assert _HTTP.put(url, json={"error_rate": 2}).status_code == 400
    assert _HTTP.put(url, json={"rename_fields": {"id": ""}}).status_code == 400
    assert _HTTP.put(url, json={"retype_fields": "id"}).status_code == 400
    drifting = _HTTP.put(url, json={"rename_fields": {"id": "Id"}, "quota_limit": 5}).json()
    assert drifting["rename_fields"] == {"id": "Id"}
    assert drifting["quota_limit"] == 5
    assert _HTTP.delete(url).json() == defaults


def test_calls_over_http_skip_control_routes(upstreams: SampleUpstreams, name: str) -> None:
    url = f"{upstreams.base_urls[name]}/_sample/calls"
    probe(upstreams, name)
    probe(upstreams, name)
    _HTTP.get(f"{upstreams.base_urls[name]}/_sample/faults")
    calls = _HTTP.get(url).json()
    assert calls["total"] == 2
    assert len(calls["by_endpoint"]) == 1
    assert next(iter(calls["by_endpoint"])).split(" ")[0] in ("GET", "POST")
    assert _HTTP.delete(url).json()["total"] == 0


_BASIC = base64.b64encode(f"{DEMO_SOAP_USER}:{DEMO_SOAP_PASSWORD}".encode()).decode()


@pytest.mark.parametrize(
    ("name", "path", "authorization"),
    [
        ("hubspot", "/crm/v3/objects/contacts/batch/read", f"Bearer {DEMO_HUBSPOT_TOKEN}"),
        ("soap_crm", "/soap/contacts", f"Basic {_BASIC}"),
        ("hubspot", "/oauth/v1/token", ""),
    ],
    ids=["hubspot-batch-read", "soap", "oauth-token"],
)
async def test_a_client_that_leaves_before_its_body_is_not_an_error(
    upstreams: SampleUpstreams, name: str, path: str, authorization: str
) -> None:
    """A gateway that times out mid-request must not make the sample log an application
    error ("Exception in ASGI application": found by the generated-operations suite)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
            (b"authorization", authorization.encode()),
        ],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    await upstreams.services[name].app(scope, receive, send)  # raised ClientDisconnect


@pytest.mark.parametrize("limited", ["hubspot", "segment"])
def test_the_rolling_window_answers_429_beyond_the_limit(
    upstreams: SampleUpstreams, limited: str
) -> None:
    """HubSpot and Segment enforce their limits as the real services do: the call past
    ``calls`` in ``per_s`` is answered 429 with when to come back, and not counted."""
    window = upstreams.services[limited].window
    assert window is not None
    url = f"{upstreams.base_urls[limited]}/_sample/rate_limit"
    try:
        shown = _HTTP.put(url, json={"calls": 3, "per_s": 30, "enforced": True}).json()
        assert shown == {"calls": 3, "per_s": 30.0, "enforced": True, "refused": 0}
        answers = [probe(upstreams, limited) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert 29 < float(answers[3].headers["Retry-After"]) <= 30
        assert _HTTP.get(url).json()["refused"] == 2
        if limited == "hubspot":
            assert answers[2].headers["X-HubSpot-RateLimit-Max"] == "3"
            assert answers[2].headers["X-HubSpot-RateLimit-Remaining"] == "0"
    finally:
        window.configure(limit=upstreams.services[limited].rate_limit, enforced=False)
        window.reset()

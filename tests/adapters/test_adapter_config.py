"""The upstreams configuration: the shipped example, strict validation, secrets."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from adapters.config import (
    BearerAuthConfig,
    HubSpotConfig,
    OAuth2ClientCredentialsConfig,
    SegmentConfig,
    ShopifyConfig,
    UpstreamsConfigError,
    load_upstreams,
    load_upstreams_file,
)

EXAMPLE = Path(str(files("adapters").joinpath("upstreams.example.toml")))
ENV = {
    "HUBSPOT_TOKEN": "pat-secret-1",
    "SHOPIFY_TOKEN": "shpat-secret-2",
    "SEGMENT_TOKEN": "seg-secret-3",
}
SECRETS = tuple(ENV.values())


def hubspot(**extra: Any) -> dict[str, Any]:
    table = {
        "kind": "hubspot",
        "base_url": "http://127.0.0.1:8101",
        "auth": {"mode": "bearer", "token_env": "HUBSPOT_TOKEN"},
    }
    return {"upstreams": {"hubspot": {**table, **extra}}}


def problems(raw: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(UpstreamsConfigError) as caught:
        load_upstreams(raw, ENV if env is None else env)
    for secret in SECRETS:
        assert secret not in str(caught.value)
    return caught.value.problems


def test_the_example_points_at_the_demo_samples() -> None:
    config = load_upstreams_file(EXAMPLE, ENV)  # soap_crm is disabled: its vars may be absent
    assert [u.name for u in config.enabled()] == ["hubspot", "shopify", "segment"]
    ports = {name: u.base_url.port for name, u in config.upstreams.items()}
    assert ports == {"hubspot": 8101, "soap_crm": 8102, "shopify": 8103, "segment": 8104}
    assert all(u.base_url.host == "127.0.0.1" for u in config.upstreams.values())
    hub, shop, seg = (config.upstreams[n] for n in ("hubspot", "shopify", "segment"))
    assert isinstance(hub, HubSpotConfig)
    assert isinstance(shop, ShopifyConfig)
    assert isinstance(seg, SegmentConfig)
    assert seg.space_id == "spa_gatewayDemo0001"
    assert isinstance(hub.auth, BearerAuthConfig)  # the example uses a private-app token
    assert hub.auth.token.get_secret_value() == "pat-secret-1"


def test_secrets_are_never_shown() -> None:
    config = load_upstreams_file(EXAMPLE, ENV)
    shown = repr(config) + str(config) + str(config.model_dump()) + config.model_dump_json()
    for secret in SECRETS:
        assert secret not in shown


def test_missing_variable_names_upstream_and_variable() -> None:
    found = problems(hubspot(), env={})
    assert found == [
        "upstreams.hubspot: environment variable HUBSPOT_TOKEN (auth.token_env) is not set"
    ]
    assert problems(hubspot(), env={"HUBSPOT_TOKEN": ""})  # empty counts as missing


def test_disabled_upstreams_need_no_secrets() -> None:
    config = load_upstreams(hubspot(enabled=False), {})
    assert list(config.enabled()) == []
    with pytest.raises(RuntimeError, match="disabled upstream"):
        _ = config.upstreams["hubspot"].auth.token  # type: ignore[union-attr]


def test_oauth_resolves_both_variables() -> None:
    raw = hubspot(
        auth={
            "mode": "oauth2_client_credentials",
            "client_id_env": "CID",
            "client_secret_env": "CSECRET",
            "refresh_margin_s": 30,
        }
    )
    config = load_upstreams(raw, {"CID": "id-1", "CSECRET": "secret-2"})
    upstream = config.upstreams["hubspot"]
    assert isinstance(upstream, HubSpotConfig)
    auth = upstream.auth
    assert isinstance(auth, OAuth2ClientCredentialsConfig)
    assert auth.client_secret.get_secret_value() == "secret-2"
    assert upstream.token_url == "http://127.0.0.1:8101/oauth/v1/token"
    assert "secret-2" not in repr(config)


def test_secrets_written_inline_are_refused() -> None:
    found = problems(hubspot(auth={"mode": "bearer", "token": "pat-inline-secret"}))
    assert len(found) == 1
    assert "secrets are never written in the file" in found[0]
    assert "pat-inline-secret" not in found[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"timeout_s": "2"}, "upstreams.hubspot.timeout_s: Input should be a valid number"),
        ({"retries": -1}, "upstreams.hubspot.retries: Input should be greater than or equal to 0"),
        ({"page_size": 500}, "upstreams.hubspot: page_size must be at most 100 for hubspot"),
        ({"colour": "blue"}, "upstreams.hubspot.colour: Extra inputs are not permitted"),
        (
            {"backoff_base_s": 3, "backoff_max_s": 1},
            "upstreams.hubspot: backoff_max_s must not be below backoff_base_s",
        ),
        ({"base_url": "ftp://x"}, "upstreams.hubspot.base_url: URL scheme should be 'http' or"),
        (
            {"breaker": {"failure_threshold": 0}},
            "upstreams.hubspot.breaker.failure_threshold: "
            "Input should be greater than or equal to 1",
        ),
        (
            {"auth": {"mode": "magic"}},
            "upstreams.hubspot.auth: Input tag 'magic' found using 'mode'",
        ),
        ({"kind": "salesforce"}, "upstreams.hubspot: Input tag 'salesforce' found using 'kind'"),
        ({"name": "other"}, "'name' comes from the table key"),
    ],
)
def test_invalid_settings_are_reported_clearly(extra: dict[str, Any], expected: str) -> None:
    found = problems(hubspot(**extra))
    assert any(expected in line for line in found), found


def test_several_problems_are_reported_together() -> None:
    raw = hubspot(timeout_s=0, retries=99)
    raw["upstreams"]["Bad Name"] = {"kind": "segment"}
    found = problems(raw)
    assert len(found) >= 4
    assert any(line.startswith("upstreams.Bad Name") for line in found)
    assert any("space_id: Field required" in line for line in found)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UpstreamsConfigError, match="cannot read"):
        load_upstreams_file(tmp_path / "missing.toml", ENV)
    broken = tmp_path / "broken.toml"
    broken.write_text("[upstreams.hubspot\nkind = ")
    with pytest.raises(UpstreamsConfigError, match="not valid TOML"):
        load_upstreams_file(broken, ENV)


def test_behavioural_fields_are_read_from_the_upstream_unless_configured_store() -> None:
    assert load_upstreams(hubspot(), ENV).fields.stored() == frozenset()
    assert load_upstreams_file(EXAMPLE, ENV).fields.stored() == frozenset()
    config = load_upstreams({**hubspot(), "fields": {"engagement": "store"}}, ENV)
    assert config.fields.stored() == {"engagement"}
    assert problems({**hubspot(), "fields": {"cart": "warehouse"}}) == [
        "fields.cart: Input should be 'upstream' or 'store'"
    ]
    assert problems({**hubspot(), "fields": {"orders": "store"}}) == [
        "fields.orders: Extra inputs are not permitted"
    ]


def test_rate_limits_default_to_the_published_ones_and_false_turns_pacing_off() -> None:
    from adapters.transport.rest import policy_for

    config = load_upstreams(hubspot(), ENV)
    hub = config.upstreams["hubspot"]
    assert hub.rate_limit
    assert (hub.rate_limit.calls, hub.rate_limit.per_s) == (100, 10.0)
    assert policy_for(hub).pacer is not None
    segment = load_upstreams_file(EXAMPLE, ENV).upstreams["segment"]
    assert segment.rate_limit
    assert (segment.rate_limit.calls, segment.rate_limit.per_s) == (100, 1.0)
    unpaced = load_upstreams(hubspot(rate_limit=False), ENV).upstreams["hubspot"]
    assert policy_for(unpaced).pacer is None
    found = problems(hubspot(rate_limit={"calls": 0, "per_s": 10}))
    assert (
        "upstreams.hubspot.rate_limit.RateLimitConfig.calls: "
        "Input should be greater than or equal to 1"
    ) in found

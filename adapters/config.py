"""The upstreams configuration: which upstreams exist, where, how to reach them.

A TOML file (``upstreams.example.toml`` beside this module shows every key) names the
upstreams and the *environment variable names* that hold their secrets; the secrets
themselves are never written in the file. Following the project rule that only
``gateway/settings.py`` reads the process environment, the loaders here are pure:
the caller hands in the environment mapping, and the secrets it resolves become
``SecretStr`` held in private attributes (never in reprs, dumps or error messages).

Validation is strict (unknown keys, wrong types and out-of-range numbers are errors)
and every problem is reported as ``UpstreamsConfigError`` with one line per problem,
naming the upstream and key, never a secret's value.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

__all__ = [
    "BasicAuthConfig",
    "BearerAuthConfig",
    "BehaviourFields",
    "BreakerConfig",
    "HubSpotConfig",
    "OAuth2ClientCredentialsConfig",
    "RateLimitConfig",
    "SegmentConfig",
    "ShopifyConfig",
    "ShopifyGraphQLConfig",
    "ShopifyTokenAuthConfig",
    "SoapCrmConfig",
    "UpstreamConfig",
    "UpstreamsConfig",
    "UpstreamsConfigError",
    "load_upstreams",
    "load_upstreams_file",
]

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
UpstreamName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
PositiveSeconds = Annotated[float, Field(gt=0, le=600)]
Seconds = Annotated[float, Field(ge=0, le=600)]


class UpstreamsConfigError(ValueError):
    """The configuration is invalid; ``problems`` has one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid upstreams configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


def _resolve(environ: Mapping[str, str], key: str, variable: str) -> SecretStr:
    value = environ.get(variable)
    if value is None or value == "":
        # Name the variable, never a value: the message ends up in start-up logs.
        raise ValueError(f"environment variable {variable} (auth.{key}) is not set")
    return SecretStr(value)


_SECRET_KEYS = frozenset(
    {"token", "password", "username", "client_id", "client_secret", "secret", "api_key"}
    | {"access_token"}
)


class _AuthConfig(_Strict):
    """Auth settings name environment variables; ``bind`` reads them from a mapping."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            inline = sorted(key for key in data if key in _SECRET_KEYS)
            if inline:
                # Say which key, never echo its value.
                raise ValueError(
                    f"{', '.join(inline)}: secrets are never written in the file; name the "
                    f'environment variable that holds it instead ({inline[0]}_env = "…")'
                )
        return data

    def bind(self, environ: Mapping[str, str]) -> None:
        raise NotImplementedError

    @staticmethod
    def _bound(secret: SecretStr | None) -> SecretStr:
        if secret is None:
            raise RuntimeError("credentials of a disabled upstream were never resolved")
        return secret


class _TokenAuthConfig(_AuthConfig):
    """One token, read from the environment variable ``token_env`` names."""

    token_env: EnvName
    _token: SecretStr | None = PrivateAttr(default=None)

    def bind(self, environ: Mapping[str, str]) -> None:
        self._token = _resolve(environ, "token_env", self.token_env)

    @property
    def token(self) -> SecretStr:
        return self._bound(self._token)


class BearerAuthConfig(_TokenAuthConfig):
    mode: Literal["bearer"]


class OAuth2ClientCredentialsConfig(_AuthConfig):
    mode: Literal["oauth2_client_credentials"]
    client_id_env: EnvName
    client_secret_env: EnvName
    token_url: AnyHttpUrl | None = Field(
        default=None, description="Defaults to {base_url}/oauth/v1/token."
    )
    scopes: tuple[str, ...] = ()
    refresh_margin_s: Seconds = Field(
        default=60, description="Fetch a new token this long before the old one expires."
    )
    _client_id: SecretStr | None = PrivateAttr(default=None)
    _client_secret: SecretStr | None = PrivateAttr(default=None)

    def bind(self, environ: Mapping[str, str]) -> None:
        self._client_id = _resolve(environ, "client_id_env", self.client_id_env)
        self._client_secret = _resolve(environ, "client_secret_env", self.client_secret_env)

    @property
    def client_id(self) -> SecretStr:
        return self._bound(self._client_id)

    @property
    def client_secret(self) -> SecretStr:
        return self._bound(self._client_secret)


class BasicAuthConfig(_AuthConfig):
    """HTTP basic auth; without ``password_env`` the password is empty (Segment's token
    goes in the username)."""

    mode: Literal["basic"]
    username_env: EnvName
    password_env: EnvName | None = None
    _username: SecretStr | None = PrivateAttr(default=None)
    _password: SecretStr | None = PrivateAttr(default=None)

    def bind(self, environ: Mapping[str, str]) -> None:
        self._username = _resolve(environ, "username_env", self.username_env)
        self._password = (
            _resolve(environ, "password_env", self.password_env)
            if self.password_env
            else SecretStr("")
        )

    @property
    def username(self) -> SecretStr:
        return self._bound(self._username)

    @property
    def password(self) -> SecretStr:
        return self._bound(self._password)


class ShopifyTokenAuthConfig(_TokenAuthConfig):
    mode: Literal["shopify_access_token"] = "shopify_access_token"


class BreakerConfig(_Strict):
    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    reset_timeout_s: PositiveSeconds = 30.0


class CachePolicy(_Strict):
    """How long the gateway may reuse what this upstream answered (the gateway reads it;
    the adapter does not cache). Fresh for ``ttl_s``; kept ``stale_ttl_s`` in all, to be
    served as stale when the upstream fails."""

    ttl_s: Annotated[float, Field(ge=0)] = 300.0
    stale_ttl_s: Annotated[float, Field(ge=0)] = 86_400.0


class RateLimitConfig(_Strict):
    """An upstream's published rate limit (``calls`` per rolling ``per_s``), which the
    gateway's calls are paced under (``transport/call_pacer.py``)."""

    calls: Annotated[int, Field(ge=1)]
    per_s: PositiveSeconds


class _UpstreamBase(_Strict):
    name: UpstreamName  # the table key, filled in by UpstreamsConfig
    enabled: bool = True
    base_url: AnyHttpUrl
    timeout_s: PositiveSeconds = Field(default=2.0, description="Per attempt.")
    deadline_s: PositiveSeconds = Field(
        default=6.0, description="Budget of one call, retries and waits included."
    )
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    backoff_base_s: Seconds = 0.1
    backoff_max_s: Seconds = 2.0
    page_size: Annotated[int, Field(ge=1)] = 100
    max_connections: Annotated[int, Field(ge=1, le=1000)] = 20
    breaker: BreakerConfig = BreakerConfig()
    cache: CachePolicy = CachePolicy()
    # None or false (TOML has no null): the calls are not paced.
    rate_limit: RateLimitConfig | Literal[False] | None = None

    page_size_max: ClassVar[int] = 100

    @property
    def base(self) -> str:
        """The base URL without a trailing slash, for joining paths."""
        return str(self.base_url).rstrip("/")

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Self:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must not be below backoff_base_s")
        if self.page_size > self.page_size_max:
            raise ValueError(f"page_size must be at most {self.page_size_max} for {self.kind}")
        environ = (info.context or {}).get("environ")
        if self.enabled and environ is not None:
            self.auth.bind(environ)
        return self

    # Declared by every subclass; here for the validator's benefit.
    kind: str
    auth: _AuthConfig


class HubSpotConfig(_UpstreamBase):
    kind: Literal["hubspot"]
    auth: Annotated[BearerAuthConfig | OAuth2ClientCredentialsConfig, Field(discriminator="mode")]
    # A private app on the Professional tier (Enterprise: 190 per 10 s).
    rate_limit: RateLimitConfig | Literal[False] | None = RateLimitConfig(calls=100, per_s=10.0)

    @property
    def token_url(self) -> str:
        auth = self.auth
        if isinstance(auth, OAuth2ClientCredentialsConfig) and auth.token_url is not None:
            return str(auth.token_url)
        return f"{self.base}/oauth/v1/token"


class SoapCrmConfig(_UpstreamBase):
    kind: Literal["soap_crm"]
    auth: BasicAuthConfig
    endpoint_path: Annotated[str, Field(pattern=r"^/")] = "/soap/contacts"
    wsdl_path: str | None = Field(
        default=None, description="A WSDL file to use instead of the packaged one."
    )


class ShopifyGraphQLConfig(_Strict):
    """The GraphQL Admin API's batch read and cost bucket (``api = "graphql"``): bucket
    figures are assumed until the shop's first ``throttleStatus`` gives the real ones."""

    orders_first: Annotated[int, Field(ge=1, le=250)] = 5
    # Line items per order when a query selects them; an order with more is re-read.
    line_items_first: Annotated[int, Field(ge=1, le=250)] = 5
    max_query_cost: Annotated[int, Field(ge=10)] = 1000
    bucket_size: Annotated[float, Field(gt=0)] = 1000.0
    restore_rate: Annotated[float, Field(gt=0)] = 100.0


class ShopifyConfig(_UpstreamBase):
    kind: Literal["shopify"]
    auth: ShopifyTokenAuthConfig
    api: Literal["rest", "graphql"] = "rest"
    graphql: ShopifyGraphQLConfig = ShopifyGraphQLConfig()
    api_version: Annotated[str, Field(pattern=r"^\d{4}-\d{2}$")] = "2024-10"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = Field(
        default="USD", description="The shop's currency, for product prices."
    )
    storefront_url: AnyHttpUrl | None = Field(
        default=None,
        description="Public shop URL; product urls are {storefront_url}/products/{handle}.",
    )
    page_size: Annotated[int, Field(ge=1)] = 50
    page_size_max: ClassVar[int] = 250


class SegmentConfig(_UpstreamBase):
    kind: Literal["segment"]
    auth: BasicAuthConfig
    space_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    page_size: Annotated[int, Field(ge=1)] = 50
    rate_limit: RateLimitConfig | Literal[False] | None = RateLimitConfig(calls=100, per_s=1.0)
    page_size_max: ClassVar[int] = 200


UpstreamConfig = Annotated[
    HubSpotConfig | SoapCrmConfig | ShopifyConfig | SegmentConfig, Field(discriminator="kind")
]


FieldSource = Literal["upstream", "store"]


class BehaviourFields(_Strict):
    """Where each behavioural field of a customer is read from: ``upstream`` (the
    analytics upstream, one call per customer at read time) or ``store`` (the events the
    webhooks and the event stream stored, one query for a whole batch)."""

    recent_events: FieldSource = "upstream"
    engagement: FieldSource = "upstream"
    cart: FieldSource = "upstream"

    def stored(self) -> frozenset[str]:
        """The fields served from the store."""
        return frozenset(name for name, source in self.model_dump().items() if source == "store")


class UpstreamsConfig(_Strict):
    upstreams: dict[UpstreamName, UpstreamConfig] = Field(default_factory=dict)
    # Upstream by default: a deployment without stream ingestion changes nothing.
    fields: BehaviourFields = BehaviourFields()

    @model_validator(mode="before")
    @classmethod
    def _name_from_key(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("upstreams"), Mapping):
            return data
        named: dict[str, Any] = {}
        for key, table in data["upstreams"].items():
            if isinstance(table, Mapping):
                if "name" in table:
                    raise ValueError(f"upstream {key!r}: 'name' comes from the table key")
                table = {"name": key, **table}
            named[key] = table
        return {**data, "upstreams": named}

    def enabled(self) -> Iterator[HubSpotConfig | SoapCrmConfig | ShopifyConfig | SegmentConfig]:
        return (upstream for upstream in self.upstreams.values() if upstream.enabled)


def _problem(error: Mapping[str, Any]) -> str:
    # Discriminator tags ("hubspot", "bearer") repeat the table they select: drop
    # them so a location reads like the TOML path.
    loc = [str(part) for part in error["loc"]]
    readable: list[str] = []
    for part in loc:
        if (
            readable
            and part
            in {"hubspot", "soap_crm", "shopify", "segment", "bearer", "oauth2_client_credentials"}
            and readable[-1] != "upstreams"
        ):
            continue
        readable.append(part)
    where = ".".join(readable) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def load_upstreams(raw: Mapping[str, Any], environ: Mapping[str, str]) -> UpstreamsConfig:
    """Validate a parsed configuration and resolve its secrets from ``environ``.

    Secrets of disabled upstreams are not resolved (their variables may be absent).
    Raises ``UpstreamsConfigError``.
    """
    try:
        return UpstreamsConfig.model_validate(raw, context={"environ": environ})
    except ValidationError as exc:
        # Only locations and messages: pydantic's own text would echo input values.
        raise UpstreamsConfigError([_problem(error) for error in exc.errors()]) from None


def load_upstreams_file(path: str | Path, environ: Mapping[str, str]) -> UpstreamsConfig:
    """Read a TOML file and ``load_upstreams`` it."""
    try:
        with Path(path).open("rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise UpstreamsConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise UpstreamsConfigError([f"{path}: not valid TOML ({exc})"]) from exc
    return load_upstreams(raw, environ)

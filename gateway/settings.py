"""Settings, read once from the environment (prefix ``GATEWAY_``) and validated.

This is the only module that reads the process environment; everything else
receives a ``Settings`` instance.
"""

from __future__ import annotations

import ipaddress
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from adapters.config import UpstreamsConfig, UpstreamsConfigError, load_upstreams_file
from gateway.experiment_settings import ExperimentSettings
from gateway.outage_settings import OutageSettings
from gateway.stream_settings import StreamSettings
from gateway.tracing_settings import TracingSettings
from gateway.warehouse_settings import WarehouseSettings
from gateway.webhook_settings import WebhookSettings

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


# Public, as everything in this repository is: a database whose tombstones were made
# with it shows whether a given email was erased. Kept only so the demo runs as is.
BUILTIN_ERASURE_KEY = "personalization-gateway-erasure-v1"
# What an operator is told wherever the built-in erasure key is refused (never the key).
BUILTIN_ERASURE_KEY_PROBLEM = (
    "GATEWAY_ERASURE_KEY is the built-in public value (set a secret of your own in "
    "GATEWAY_ERASURE_KEY or GATEWAY_ERASURE_KEY_FILE)"
)
MIN_ERASURE_KEY_LENGTH = 16


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Settings(
    ExperimentSettings,
    OutageSettings,
    StreamSettings,
    TracingSettings,
    WarehouseSettings,
    WebhookSettings,
):
    """Every knob of the gateway, with production-safe defaults for a single instance."""

    model_config = SettingsConfigDict(
        # hide_input_in_errors: a refused secret is never echoed in a validation error.
        env_prefix="GATEWAY_",
        env_file=None,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///gateway.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///FILE (embedded) or "
        "postgresql+asyncpg://USER@HOST/DB.",
    )
    cache_url: str = Field(
        default="memory://", description="memory:// (per process) or redis://HOST:PORT/DB."
    )
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    log_level: LogLevel = LogLevel.INFO
    graphiql: bool = Field(default=True, description="Serve the GraphiQL explorer on GET /graphql.")
    max_batch_size: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1000, description="Most customers one batch query may ask for."
    )
    max_query_depth: Annotated[int, Field(ge=2, le=100)] = Field(
        default=15,
        description="Deepest nesting of fields a GraphQL operation may have. The deepest "
        "data path (customers.orders.lineItems.price.amount) is 5; introspection queries "
        "nest deeper: GraphiQL's is 13, graphql-core's 15.",
    )
    max_query_cost: Annotated[int, Field(ge=1)] = Field(
        default=100_000,
        description="Most a GraphQL operation may cost: object fields 1 plus their "
        "selection (a render also one per thousand steps of its budget), lists times "
        "their size (ids/emails given, first/limit, else 10). "
        "1,000 customers with profile fields, consent, lifetime value, orders(first: 3) "
        "with totals and the cart cost 20,000; with each order's line items, 80,000.",
    )
    max_query_tokens: Annotated[int, Field(ge=100)] = Field(
        default=5000,
        description="Most lexical tokens a GraphQL document may have (GraphiQL's "
        "introspection query has about 160; 1,000 ids written inline about 1,000); more "
        "is 400 QUERY_TOO_LARGE before it is parsed further. Send long lists as variables.",
    )
    max_query_fields: Annotated[int, Field(ge=10)] = Field(
        default=500,
        description="Most fields an operation may select, each alias and each spread of "
        "a fragment counted where it is used (GraphiQL's introspection query selects "
        "about 220); more is 400 QUERY_TOO_LARGE before validation.",
    )
    max_root_fields: Annotated[int, Field(ge=1)] = Field(
        default=50,
        description="Most root fields (queries or mutations) one operation may have; "
        "more is 400 TOO_MANY_ROOT_FIELDS. Mutations run one after another.",
    )
    max_variable_values: Annotated[int, Field(ge=100)] = Field(
        default=5000,
        description="Most values a request's variables may hold (every list item and "
        "object field counts; never fewer than GATEWAY_MAX_BATCH_SIZE); more is 400 "
        "VARIABLES_TOO_LARGE.",
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=1_048_576,
        description="Largest request body on /graphql, /api/, /webhooks/, /console; more is 413.",
    )
    persisted_query_max_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=32_768,
        description="Largest document a client may register as an automatic persisted "
        "query; larger ones are refused (400 PERSISTED_QUERY_TOO_LARGE) and must be sent "
        "whole.",
    )
    persisted_queries_max: Annotated[int, Field(ge=1)] = Field(
        default=1000,
        description="Most persisted queries kept, per process and in Redis; the least "
        "recently used go first (a client re-registers a document it finds gone).",
    )
    persisted_query_ttl_s: Annotated[float, Field(gt=0)] = Field(
        default=86_400.0,
        description="How long a persisted query is kept after it was last registered or used.",
    )
    response_cache_ttl_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=300.0,
        description="Longest a persisted query's whole answer is served from the response "
        "cache (it lives no longer than the upstream answers and stored profiles it holds, "
        "and any write to a customer in it drops it on every instance); 0 turns it off.",
    )
    response_cache_max_answer_bytes: Annotated[int, Field(ge=0)] = Field(
        default=256 * 1024,
        description="Largest answer the response cache stores; larger ones are run each time.",
    )
    introspection: bool = Field(
        default=True,
        description="Answer __schema and __type queries; turn off in production.",
    )
    render_workers: Annotated[int, Field(ge=1, le=64)] = Field(
        default=2,
        description="Worker processes per gateway process that parse and render Liquid "
        "templates, off the event loop (started on first use).",
    )
    render_max_steps: Annotated[int, Field(ge=100)] = Field(
        default=20_000,
        description="Most work one render may do: loop iterations (all loops together) and "
        "filter work (one step per call, per list item and per 64 characters it is "
        "given). A render costs one per thousand of these in the query-cost model.",
    )
    render_max_output_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=512 * 1024, description="Largest output of one render."
    )
    render_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="Longest one render may take."
    )
    render_request_max_steps: Annotated[int, Field(ge=100)] = Field(
        default=2_000_000, description="Most work all the renders of one request may do."
    )
    render_request_max_output_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=32 * 1024 * 1024, description="Largest output of all the renders of one request."
    )
    render_request_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="Longest all the renders of one request may take, from the first.",
    )
    profile_cache_ttl_s: Annotated[float, Field(ge=0)] = Field(
        default=60.0,
        description="How long a stored profile is served from the cache (writes through "
        "the gateway drop it at once; one read in its last fifth refreshes it in the "
        "background); 0 turns it off.",
    )
    recs_stock_ttl_s: Annotated[float, Field(ge=0)] = Field(
        default=30.0,
        description="How long a product's stock is trusted when filtering recommendations "
        "(a sale changes it; invalidation drops it at once).",
    )
    recs_model_ttl_s: Annotated[float, Field(ge=0)] = Field(
        default=30.0,
        description="How long a process reuses what it read of the stored recommendation "
        "model (a customer's list, popular products); consent is re-read within 5 s.",
    )
    recs_threads: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="BLAS and OpenMP threads a recommendation build or evaluation may use "
        "(threadpoolctl): more is faster, but each one is a core taken from the gateway's "
        "event loops on the same machine.",
    )
    scores_threads: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="BLAS and OpenMP threads `gateway scores build` may fit with "
        "(threadpoolctl): more is faster on idle cores, but OpenMP threads waiting for a "
        "busy core (the gateway's event loops, other jobs) cost more than they save.",
    )
    recs_max_per_category: Annotated[int, Field(ge=0, le=50)] = Field(
        default=0,
        description="At most this many recommendations of one category in a list, unless a "
        "request says otherwise (0: no limit).",
    )
    recs_data_dir: Path = Field(
        default=Path.home() / ".cache" / "personalization-gateway",
        description="Where `gateway recs eval` keeps downloaded public data sets.",
    )
    metrics_multiprocess_dir: str | None = Field(
        default=None,
        validation_alias="PROMETHEUS_MULTIPROC_DIR",
        description="Set by `gateway serve --workers N` so /metrics covers every worker.",
    )
    upstreams_file: Path | None = Field(
        default=None, description="TOML file naming the upstreams; none means no upstreams."
    )
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = Field(
        default=6000,
        description="Requests a minute one API key may make, unless the key sets its own "
        "(`gateway keys create --rate-limit N`); shared by every instance through Redis. "
        "A GraphQL operation counts as one request per started GATEWAY_RATE_LIMIT_COST_UNIT "
        "of its query cost.",
    )
    rate_limit_cost_unit: Annotated[int, Field(ge=1)] = Field(
        default=100,
        description="Query cost one request covers in the rate limit: an operation costing "
        "up to this counts once, a batch costing 20,000 counts as 200 requests.",
    )
    api_key_cache_ttl_s: Annotated[float, Field(ge=0, le=60)] = Field(
        default=1.0,
        description="How long a verified API key is remembered in a process; a revoked key "
        "stops working within this time on every instance.",
    )
    audit_flush_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="How often buffered audit entries are written."
    )
    erasure_key: SecretStr = Field(
        default=SecretStr(BUILTIN_ERASURE_KEY),
        description="HMAC key of the tombstones of erased customers. Set your own secret in "
        "production, once: changing it lets erased identifiers be re-created (and retires "
        "the stored score models, signed with a key derived from it). `serve`, `scores "
        "build` and `scores refresh` refuse the built-in value unless given --insecure-demo.",
    )
    erasure_key_file: Path | None = Field(
        default=None,
        description="A file holding the erasure key (e.g. a Docker or Kubernetes secret), "
        "instead of GATEWAY_ERASURE_KEY.",
    )
    console_session_ttl_s: Annotated[int, Field(ge=60, le=7 * 86400)] = Field(
        default=8 * 3600,
        description="How long a console sign-in lasts (checked by the server; the key is "
        "re-verified on every page, so a revoked key is signed out at once).",
    )
    insecure_demo: bool = Field(
        default=False,
        description="Accept the demo's public API key. Set by `gateway demo` and by "
        "`gateway serve --insecure-demo` for their workers (plain `serve` turns it off).",
    )

    @model_validator(mode="before")
    @classmethod
    def _erasure_key_from_file(cls, data: Any) -> Any:
        """The erasure key read from GATEWAY_ERASURE_KEY_FILE, when that is given."""
        if not isinstance(data, dict) or data.get("erasure_key_file") in (None, ""):
            return data
        if data.get("erasure_key") not in (None, ""):
            raise ValueError(
                "set one of GATEWAY_ERASURE_KEY and GATEWAY_ERASURE_KEY_FILE, not both"
            )
        path = Path(str(data["erasure_key_file"]))
        try:
            secret = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(f"GATEWAY_ERASURE_KEY_FILE: cannot read {path}: {reason}") from None
        if not secret:
            raise ValueError(f"GATEWAY_ERASURE_KEY_FILE: {path} is empty")
        return {**data, "erasure_key": secret}

    @field_validator("erasure_key")
    @classmethod
    def _erasure_key_strength(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_ERASURE_KEY_LENGTH:
            raise ValueError(
                f"at least {MIN_ERASURE_KEY_LENGTH} characters: a random secret, "
                "e.g. from `openssl rand -base64 32`"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _async_database_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in _ASYNC_DRIVERS:
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
                f"(got scheme {scheme!r})"
            )
        # Accept the plain schemes operators paste from elsewhere; always run async drivers.
        return f"{_ASYNC_DRIVERS[scheme]}://{rest}"

    @field_validator("cache_url")
    @classmethod
    def _known_cache(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme not in {"memory", "redis", "rediss"}:
            raise ValueError(f"must be memory:// or redis://HOST:PORT/DB (got scheme {scheme!r})")
        return value

    @property
    def erasure_key_is_builtin(self) -> bool:
        return self.erasure_key.get_secret_value() == BUILTIN_ERASURE_KEY

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def load_upstreams(self) -> UpstreamsConfig:
        """The upstreams file, validated, its secrets resolved from the environment."""
        if self.upstreams_file is None:
            return UpstreamsConfig()
        try:
            return load_upstreams_file(self.upstreams_file, os.environ)
        except (UpstreamsConfigError, OSError) as exc:
            raise SettingsError(f"GATEWAY_UPSTREAMS_FILE: {exc}") from None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class SettingsError(Exception):
    """A setting has a wrong value; ``str()`` is one line naming the variable."""


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (e.g. CLI flags) winning."""
    try:
        # pydantic validates the values; mypy cannot see through **kwargs here.
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            problems.append(f"GATEWAY_{str(error['loc'][0]).upper()}: {message}")
        else:  # a check across settings: its message names them
            problems.append(message)
    return "invalid setting: " + "; ".join(problems)

"""The knobs of tracing and of the operators' files (issue 27).

Fields only: ``Settings`` (gateway/settings.py) inherits them, and stays the one reader
of the environment. Tracing is off unless an OTLP endpoint is set: by
``GATEWAY_OTEL_ENDPOINT`` or OpenTelemetry's own ``OTEL_EXPORTER_OTLP_ENDPOINT``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings


class TracingSettings(BaseSettings):
    """Where spans go, what the service is called, how many traces are kept."""

    otel_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "otel_endpoint", "GATEWAY_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
        description="OTLP/HTTP collector base URL (spans go to {url}/v1/traces); unset: "
        "no tracing at all (no provider, no instrumentation, no cost).",
    )
    otel_service_name: str = Field(
        default="personalization-gateway",
        validation_alias=AliasChoices(
            "otel_service_name", "GATEWAY_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"
        ),
        description="The service.name of every span.",
    )
    otel_sample_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=1.0,
        description="Share of new traces kept; a request with a traceparent follows the "
        "caller's decision.",
    )
    sync_metrics_file: Path | None = Field(
        default=None,
        description="`gateway sync` writes its metrics here (Prometheus textfile "
        "collector format) when set.",
    )

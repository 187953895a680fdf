"""The knobs of the webhooks: each source's signing secret (from the environment or a
file; an empty, blank or short one refused as settings load), how large an ESP's
batch may be, and how old a Mandrill event may be before it is taken for a replay.

Fields only: ``Settings`` (gateway/settings.py) inherits them, and stays the one reader
of the environment (``GATEWAY_*``, the same names as before).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from gateway.ingest.signatures import secret_problem


class WebhookSettings(BaseSettings):
    """Webhook secrets by source, and the ESPs' body limit."""

    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Webhook signing secrets by source, as JSON: {"shopify": "…", '
        '"hubspot": "…", "segment": "…", "mandrill": "webhook key", "sendgrid": "the '
        'verification key as SendGrid shows it (base64 DER)"}; a source without one '
        "answers 404.",
    )
    webhook_secrets_file: Path | None = Field(
        default=None,
        description="A JSON file of webhook secrets in the same shape (e.g. a Docker or "
        "Kubernetes secret); GATEWAY_WEBHOOK_SECRETS wins for a source both name.",
    )
    esp_webhook_max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=8 * 1024 * 1024,
        description="Largest request body on /webhooks/sendgrid and /webhooks/mandrill "
        "(GATEWAY_MAX_BODY_BYTES does not apply there): Mandrill posts up to 1,000 events, "
        "about 2 MB form-encoded, and SendGrid's batches approach 768 KB; more is 413.",
    )

    mandrill_max_event_age_days: Annotated[float, Field(gt=0)] = Field(
        default=7.0,
        description="Mandrill opens and clicks older than this (or than "
        "GATEWAY_RETENTION_EVENTS_DAYS when that is shorter) are acknowledged and not "
        "stored: Mandrill signs no time, so a captured body replayed after retention "
        "deleted its rows would count them again. Unsubscribes and bounces are kept at any "
        "age, at their own time.",
    )

    def mandrill_max_age_s(self) -> float:
        """The replay bound of Mandrill events, in seconds: within the time their rows
        are kept (a replay of a stored event is a duplicate), whichever is shorter."""
        days = self.mandrill_max_event_age_days
        kept = getattr(self, "retention_events_days", None)
        if isinstance(kept, int) and kept < days:
            days = kept
        return days * 86_400.0

    @model_validator(mode="before")
    @classmethod
    def _webhook_secrets_from_file(cls, data: Any) -> Any:
        """Secrets read from GATEWAY_WEBHOOK_SECRETS_FILE, under the ones set directly.
        Errors name the file, never its contents."""
        if not isinstance(data, dict) or data.get("webhook_secrets_file") in (None, ""):
            return data
        path = Path(str(data["webhook_secrets_file"]))
        try:
            found = orjson.loads(path.read_bytes())
        except OSError as exc:
            raise ValueError(
                f"GATEWAY_WEBHOOK_SECRETS_FILE: cannot read {path}: {exc.strerror}"
            ) from None
        except orjson.JSONDecodeError:
            raise ValueError(f"GATEWAY_WEBHOOK_SECRETS_FILE: {path} is not JSON") from None
        if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
            raise ValueError(
                f"GATEWAY_WEBHOOK_SECRETS_FILE: {path} must hold an object of strings by source"
            )
        given = data.get("webhook_secrets") or {}
        if isinstance(given, str):  # straight from the environment, still JSON
            try:
                given = orjson.loads(given)
            except orjson.JSONDecodeError:
                raise ValueError("GATEWAY_WEBHOOK_SECRETS is not JSON") from None
        return {**data, "webhook_secrets": {**found, **dict(given)}}

    @field_validator("webhook_secrets")
    @classmethod
    def _webhook_secrets_strength(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Every HMAC secret at least 16 characters, not blank; SendGrid's key a P-256
        public key. The error names each source, never its value."""
        problems = [
            problem
            for source, secret in sorted(value.items())
            if (problem := secret_problem(source, secret.get_secret_value())) is not None
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return value

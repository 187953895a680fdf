"""The knobs of the warehouse export and of retention (issue 23), and of the runs
scheduled inside ``gateway serve`` (those and the scores', issue 24).

Fields only: ``Settings`` (gateway/settings.py) inherits them, and stays the one reader
of the environment (``GATEWAY_*``).
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings


class EventRetention(StrEnum):
    DELETE = "delete"
    ANONYMISE = "anonymise"


class WarehouseSettings(BaseSettings):
    """Where exports go, how they are pseudonymised, and what retention removes."""

    export_dir: str = Field(
        default="exports",
        description="Folder, or URL of one of pyarrow's filesystems (file://, "
        "s3://bucket/prefix, gs://) or of any fsspec filesystem installed (memory://, "
        "abfs://…), that `gateway export` writes Parquet and manifests into.",
    )
    export_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of the pseudonyms in exports (e-mails, phones, source ids). "
        "Unset: derived from the erasure key. Keep it stable: a new key makes new pseudonyms, "
        "so the warehouse can no longer join old rows with new ones.",
    )
    export_metrics_file: Path | None = Field(
        default=None,
        description="Where `gateway export` and `gateway retention run` write their last "
        "run's Prometheus metrics (text format, for node_exporter's textfile collector).",
    )
    retention_consent_withdrawn_days: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Erase customers (as an erasure does, tombstones included) whose every "
        "stored consent is withdrawn and the last withdrawal is older than this; unset: never.",
    )
    retention_events_days: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Remove events older than this; unset: keep them."
    )
    # Unset by default, as every retention rule: an experiment's results are counted from
    # the lists still stored, so pruning them rewrites the results of older experiments,
    # which an operator must choose. When set, longer than the conversion window: a
    # list's clicks and the orders after them are attributed to it while it is stored.
    retention_impressions_days: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Remove served recommendation lists (impressions) older than this; "
        "longer than GATEWAY_CONVERSION_WINDOW_HOURS (an experiment's results count only "
        "the lists still stored, so older experiments' results change); unset or 0: keep them.",
    )
    retention_events_action: EventRetention = Field(
        default=EventRetention.DELETE,
        description="delete: old events go; anonymise: they are kept unlinked from any "
        "customer and without their properties.",
    )
    retention_interval_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Run retention every this many seconds (`gateway retention run --every` "
        "uses it as its default, and `gateway serve` with GATEWAY_RETENTION_IN_SERVE); "
        "unset: only when run by hand.",
    )
    retention_in_serve: bool = Field(
        default=False,
        description="Apply the retention rules (not a dry run) every "
        "GATEWAY_RETENTION_INTERVAL_S inside `gateway serve`; one instance at a time runs "
        "them (a Postgres advisory lock), a failed run is logged and tried again next time.",
    )
    export_interval_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Export (pseudonymised, into GATEWAY_EXPORT_DIR) every this many seconds "
        "inside `gateway serve`, one instance at a time; unset: only when run by hand or "
        "through the `runExport` mutation.",
    )

    # Unset by default, as the export: a build fits models (tens of seconds of a core on
    # 100,000 customers), which an operator schedules knowingly; cron works as well.
    scores_refresh_interval_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Run `gateway scores refresh` (rescore the customers whose orders or "
        "events changed) every this many seconds inside `gateway serve`, one run at a time "
        "across instances and with the CLI; unset: only when run by hand or by cron.",
    )
    scores_build_interval_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Run `gateway scores build --retrain` (the last build's horizon; the "
        "model serving is kept unless the new one does at least as well on the same "
        "holdout) every this many seconds inside `gateway serve`, one run at a time "
        "across instances and with the CLI; unset: only when run by hand or by cron.",
    )

    scheduled_run_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=3600.0,
        description="A scheduled export, retention or scores run inside `gateway serve` that "
        "takes longer is stopped (and logged): an export resumes at the next interval where "
        "it stopped, retention goes on with what is left, a scores build writes nothing (a "
        "refresh keeps the batches it wrote).",
    )

    @model_validator(mode="after")
    def _retention_schedule(self) -> Self:
        if self.retention_in_serve and self.retention_interval_s is None:
            raise ValueError("GATEWAY_RETENTION_IN_SERVE needs GATEWAY_RETENTION_INTERVAL_S")
        window = getattr(self, "conversion_window_hours", 0.0)
        days = self.retention_impressions_days
        if days and days * 24 <= window:
            # Pruned sooner, a click's list (and an order's attribution) would be gone.
            raise ValueError(
                "GATEWAY_RETENTION_IMPRESSIONS_DAYS must be longer than "
                "GATEWAY_CONVERSION_WINDOW_HOURS"
            )
        return self

    def export_pseudonym_key(self) -> bytes:
        given = self.export_key
        if given is not None:
            return given.get_secret_value().encode()
        erasure = getattr(self, "erasure_key", None)
        secret = erasure.get_secret_value() if isinstance(erasure, SecretStr) else ""
        # A key of its own, derived: a pseudonym is never a tombstone digest.
        return hmac.new(secret.encode(), b"export-pseudonyms-v1", hashlib.sha256).digest()

"""The knobs of recommendation attribution and experiments (issue 25): the key that signs
item links, how long after a click an order still counts, and how impressions are kept.

Fields only: ``Settings`` (gateway/settings.py) inherits them, and stays the one reader
of the environment (``GATEWAY_*``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

MIN_TRACKING_KEY_LENGTH = 16


class ExperimentSettings(BaseSettings):
    """Attribution of served recommendation lists, and experiments over them."""

    tracking_key: SecretStr | None = Field(
        default=None,
        description="Key of the tracking parameter's MAC on recommended items' links (which "
        "list, which position; the AES key is derived from it). Unset: derived from the "
        "erasure key. Every instance needs the same one; a new key leaves links already "
        "sent unattributed.",
    )
    conversion_window_hours: Annotated[float, Field(gt=0, le=24 * 90)] = Field(
        default=168.0,
        description="An order this many hours or fewer after a click on a recommended item "
        "counts as that list's conversion (in experiment results and campaign metrics).",
    )
    recs_impressions: bool = Field(
        default=True,
        description="Record every served recommendation list (its id, strategy and items) "
        "for attribution and experiments; off: lists are served untracked.",
    )
    # Every write is a transaction of its own (on SQLite the table's and both indexes'
    # changed pages appended to the WAL each time): at ~3,000 lists a second, a write a
    # second cost the recommendation endpoint ~14 % more server CPU than no impressions,
    # a write every 5 s ~5 % (bench/impressions.py, same-run turns; noisy at high load).
    # A crash loses at most this long of impressions (while a burst is served, up to
    # impression_max_delay_s); results read on the instance that served flush first,
    # and a click may arrive before its list is written (attribution joins at read time).
    impression_flush_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=5.0, description="How often buffered impressions are written."
    )
    # A write due while lists are served faster than this waits for the lull after the
    # burst (gateway/row_buffer.py's Lull): on two cores, SQLite's work beside a
    # saturated recommendation endpoint slowed it (throughput 0.951 -> 0.964 of untracked).
    impression_busy_lists_per_s: Annotated[float, Field(ge=0)] = Field(
        default=1000.0,
        description="While more lists than this are served a second, a due impressions "
        "write waits for the lull after the burst; 0: never waits.",
    )
    impression_max_delay_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0,
        description="Longest a served list waits to be written while serving stays busy "
        "(also written once 100,000 wait); a crash loses at most this long of impressions. "
        "At or below the flush interval: writes never wait.",
    )
    experiments_ttl_s: Annotated[float, Field(ge=0, le=300)] = Field(
        default=5.0,
        description="How long a process reuses the experiments it read: a saved experiment "
        "takes effect on every instance within this time (at once on the one that saved it).",
    )

    @field_validator("tracking_key")
    @classmethod
    def _tracking_key_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_TRACKING_KEY_LENGTH:
            raise ValueError(
                f"at least {MIN_TRACKING_KEY_LENGTH} characters: a random secret, "
                "e.g. from `openssl rand -base64 32`"
            )
        return value

    def tracking_hmac_key(self) -> bytes:
        given = self.tracking_key
        if given is not None:
            return given.get_secret_value().encode()
        erasure = getattr(self, "erasure_key", None)
        secret = erasure.get_secret_value() if isinstance(erasure, SecretStr) else ""
        # A key of its own, derived: a tracking signature is never a tombstone digest.
        return hmac.new(secret.encode(), b"recommendation-tracking-v1", hashlib.sha256).digest()

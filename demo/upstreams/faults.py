"""The fault knobs every sample service obeys, and the per-request decision.

Settable over HTTP (``/_sample/faults``) and in-process; the server thread reads
them while a test thread writes them, hence the lock. The error-rate generator
is reseeded on every change, so a test that sets ``error_rate`` sees the same
sequence of failures on every run.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class FaultSettings:
    latency_ms: float = 0
    error_rate: float = 0.0
    error_status: int = 503
    rate_limit_next: int = 0
    retry_after_s: float = 1
    malformed: bool = False
    schema_change: bool = False
    hang: bool = False
    soap_fault: bool = False
    # Partial drift: keys renamed wherever they occur ({"firstname": "first_name"}), and
    # the values of these keys given another type (text <-> number, objects -> text).
    rename_fields: Mapping[str, str] = field(default_factory=dict)
    retype_fields: tuple[str, ...] = ()
    # The rate limit the service announces (HubSpot's per-interval maximum, Shopify's
    # bucket); 0: the real service's default. Enforced only where the service's rolling
    # window is (``/_sample/rate_limit``); rate_limit_next forces a 429 either way.
    quota_limit: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """What one request gets, decided when it arrives."""

    hang: bool = False
    latency_s: float = 0.0
    rate_limited: bool = False
    retry_after_s: float = 1
    error_status: int | None = None
    soap_fault: bool = False
    malformed: bool = False
    schema_change: bool = False
    rename_fields: Mapping[str, str] = field(default_factory=dict)
    retype_fields: tuple[str, ...] = ()

    @property
    def drifted(self) -> bool:
        return bool(self.rename_fields or self.retype_fields)


_BOOLEANS = {"malformed", "schema_change", "hang", "soap_fault"}
_NUMBERS = {"latency_ms", "error_rate", "retry_after_s"}
_INTEGERS = {"error_status", "rate_limit_next", "quota_limit"}
_NAMES = {f.name for f in fields(FaultSettings)}


def _checked(name: str, value: Any) -> Any:
    if name not in _NAMES:
        raise ValueError(f"unknown fault knob {name!r}")
    if name == "rename_fields":
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
        ):
            raise ValueError("rename_fields must map field names to new names")
        return dict(value)
    if name == "retype_fields":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("retype_fields must be a list of field names")
        return tuple(value)
    if name in _BOOLEANS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    if name in _INTEGERS:
        if value != int(value):
            raise ValueError(f"{name} must be an integer")
        value = int(value)
    if name == "error_rate" and value > 1:
        raise ValueError("error_rate must be between 0 and 1")
    if name == "error_status" and not 400 <= value <= 599:
        raise ValueError("error_status must be a 4xx or 5xx status")
    return value


class Faults:
    """The current knobs of one service; thread-safe."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._settings = FaultSettings()
        self._rng = random.Random(seed)

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def snapshot(self) -> dict[str, Any]:
        return asdict(self._settings)

    def update(self, **changes: Any) -> dict[str, Any]:
        """Merge these knobs into the current ones; raises ValueError on a bad knob
        (and then changes nothing)."""
        checked = {name: _checked(name, value) for name, value in changes.items()}
        with self._lock:
            self._settings = replace(self._settings, **checked)
            self._rng = random.Random(self._seed)
            return asdict(self._settings)

    def reset(self) -> None:
        with self._lock:
            self._settings = FaultSettings()
            self._rng = random.Random(self._seed)

    def decide(self) -> Decision:
        """Consume this request's share of the knobs (rate-limit budget, error draw)."""
        with self._lock:
            s = self._settings
            if s.hang:
                return Decision(hang=True)
            rate_limited = s.rate_limit_next > 0
            if rate_limited:
                self._settings = replace(s, rate_limit_next=s.rate_limit_next - 1)
            # Draw only when the knob is on, so turning it on starts a fresh,
            # reproducible sequence.
            failed = not rate_limited and s.error_rate > 0 and self._rng.random() < s.error_rate
            return Decision(
                latency_s=s.latency_ms / 1000,
                rate_limited=rate_limited,
                retry_after_s=s.retry_after_s,
                error_status=s.error_status if failed else None,
                soap_fault=s.soap_fault,
                malformed=s.malformed,
                schema_change=s.schema_change,
                rename_fields=s.rename_fields,
                retype_fields=s.retype_fields,
            )

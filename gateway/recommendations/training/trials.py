"""A candidate model's setting (family and parameters, or a blend of candidates) and
the trial that validated it: what model selection compares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Setting:
    """One candidate: a family and its settings (for a blend, its members and weights)."""

    family: str
    params: tuple[tuple[str, Any], ...] = ()
    parts: tuple[Setting, ...] = ()

    @classmethod
    def of(cls, family: str, **params: Any) -> Setting:
        return cls(family, tuple(sorted(params.items())))

    @classmethod
    def weighted(cls, members: Sequence[Setting], weights: Sequence[float]) -> Setting:
        """``members`` mixed at ``weights`` (normalised to sum to 1; a zero share drops
        its member), heaviest first."""
        total = float(sum(weights))
        shares: dict[Setting, float] = {}
        for member, weight in zip(members, weights, strict=True):
            if weight > 0:
                shares[member] = shares.get(member, 0.0) + weight / total
        parts = tuple(sorted(shares, key=lambda s: (-round(shares[s], 4), s.label())))
        if len(parts) == 1:
            return parts[0]
        return cls("blend", (("weights", tuple(round(shares[p], 4) for p in parts)),), parts)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.params)

    def label(self) -> str:
        if self.parts:
            shares = zip(self.options["weights"], self.parts, strict=True)
            return "blend(" + " + ".join(f"{w:g} {p.label()}" for w, p in shares) + ")"
        shown = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params
        )
        return f"{self.family}({shown})" if shown else self.family

    def record(self) -> dict[str, Any]:
        found: dict[str, Any] = {"family": self.family, "params": self.options}
        if self.parts:
            found["parts"] = [p.record() for p in self.parts]
        return found


@dataclass(frozen=True, slots=True)
class Trial:
    setting: Setting
    precision: float
    ndcg: float
    seconds: float
    # Each validation user's precision (every fold's users in turn): the paired test
    # against popularity reads it.
    per_user: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0), compare=False)

    @property
    def key(self) -> tuple[float, float]:
        return (round(self.precision, 6), round(self.ndcg, 6))


def paired_gain(model: Trial, baseline: Trial) -> tuple[float, float]:
    """(mean per-user precision gain of ``model`` over ``baseline``, its standard error)."""
    if len(model.per_user) != len(baseline.per_user) or len(model.per_user) < 2:
        return model.precision - baseline.precision, 0.0
    difference = model.per_user - baseline.per_user
    return float(difference.mean()), float(difference.std(ddof=1) / math.sqrt(len(difference)))

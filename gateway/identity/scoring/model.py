"""The linkage model: m and u per comparison level, the prior match rate and term
frequencies, with the decision thresholds; stored as Splink's settings JSON.

m is the chance a level is seen between two records of one person, u between two
records of different people; λ the chance two random records are one person.  A pair's
match weight is log2(λ / (1 - λ)) plus log2(m / u) of each compared field's level
(an exact name or town adjusted by how common the value is), and its match probability
is 2^w / (1 + 2^w).  Decisions are taken on that probability, whose meaning does not
change with the data the way a raw weight's does.

Without a trained model the priors below are used: the record-linkage practice values
the linker had before, spread over the levels.  ``check`` replaces a trained
comparison by its priors when what EM returned cannot be right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.identity.scoring.levels import BY_FIELD, COMPARISONS, Comparison

SPLINK_NAME_SUFFIX = ("_l", "_r")


class LevelParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    m: float = Field(gt=0, le=1)
    u: float = Field(gt=0, le=1)

    @property
    def bayes_factor(self) -> float:
        return self.m / self.u


# (m, u) per level, best level first, for each comparison in ``levels.COMPARISONS``.
# u is the chance for two random people (not two in a block), λ's companion.
# Keyed by ``Comparison.priors_key``: a legacy ladder has priors of its own.
_PRIORS: dict[str, tuple[tuple[float, float], ...]] = {
    # The one-edit level took its share out of Jaro-Winkler >= 0.92's.
    "first_name": ((0.85, 0.01), (0.03, 0.001), (0.02, 0.003), (0.02, 0.005), (0.08, 0.981)),
    "last_name": ((0.85, 0.005), (0.03, 0.0008), (0.02, 0.0022), (0.02, 0.004), (0.08, 0.988)),
    "first_name/jaro-winkler": ((0.85, 0.01), (0.05, 0.004), (0.02, 0.005), (0.08, 0.981)),
    "last_name/jaro-winkler": ((0.85, 0.005), (0.05, 0.003), (0.02, 0.004), (0.08, 0.988)),
    "date_of_birth": (
        (0.85, 0.00005),
        (0.08, 0.001),
        (0.01, 0.00005),
        (0.03, 0.002),
        (0.03, 0.99685),
    ),
    "address": ((0.8, 0.0001), (0.08, 0.0002), (0.04, 0.01), (0.08, 0.9897)),
    "city": ((0.85, 0.02), (0.04, 0.005), (0.02, 0.005), (0.09, 0.97)),
    "postcode": ((0.88, 0.01), (0.06, 0.03), (0.06, 0.96)),
    "email": ((0.8, 0.00001), (0.02, 0.00001), (0.18, 0.99998)),
    "phone": ((0.8, 0.0001), (0.2, 0.9999)),
}
PRIOR_PROBABILITY_TWO_RANDOM_RECORDS_MATCH = 1e-4


def prior_levels(comparison: Comparison) -> tuple[LevelParams, ...]:
    return tuple(
        LevelParams(label=level.label, m=m, u=u)
        for level, (m, u) in zip(comparison.levels, _PRIORS[comparison.priors_key], strict=True)
    )


class LinkageModel(BaseModel):
    """A version of the parameters, as trained (or the priors), with its thresholds."""

    model_config = ConfigDict(frozen=True)

    version: int | None = None  # None: not stored (the built-in priors, or fresh)
    probability_two_random_records_match: float = Field(
        default=PRIOR_PROBABILITY_TWO_RANDOM_RECORDS_MATCH, gt=0, lt=1
    )
    comparisons: dict[str, tuple[LevelParams, ...]] = Field(
        default_factory=lambda: {c.field: prior_levels(c) for c in COMPARISONS}
    )
    # Relative frequency of each value among the training records' non-null values; a
    # value not listed (not in the training file) gets no adjustment.
    term_frequencies: dict[str, dict[str, float]] = Field(default_factory=dict)
    tf_totals: dict[str, int] = Field(default_factory=dict)
    # Chosen on FEBRL 1-3 and their name-and-birth-date variants (the lowest that keeps
    # precision >= 0.995 on each with a margin), and held on FEBRL 4 and RLdata, which
    # were not looked at to choose it: see bench/identity.py and the README.
    match_probability: float = Field(
        default=0.95, gt=0, lt=1, description="Match probability from which records merge."
    )
    review_probability: float = Field(
        default=0.5, gt=0, lt=1, description="Lower bound of the band left for review."
    )
    trained: dict[str, Any] = Field(
        default_factory=dict, description="How it was trained: records, source, seconds, notes."
    )

    @model_validator(mode="after")
    def _consistent(self) -> LinkageModel:
        if self.review_probability > self.match_probability:
            raise ValueError("review_probability must not exceed match_probability")
        for name, levels in self.comparisons.items():
            comparison = BY_FIELD.get(name)
            if comparison is None:
                raise ValueError(f"unknown comparison {name!r}")
            labels = tuple(level.label for level in levels)
            if comparison.ladder(labels).labels != labels:
                raise ValueError(f"{name}: levels must be {list(comparison.labels)}")
        return self

    @property
    def prior_weight(self) -> float:
        rate = self.probability_two_random_records_match
        return math.log2(rate / (1 - rate))

    def levels_of(self, field: str) -> tuple[LevelParams, ...]:
        """A field's parameters: trained, or the priors for a field it was not trained on."""
        found = self.comparisons.get(field)
        return found if found is not None else prior_levels(BY_FIELD[field])

    def level_weight(self, field: str, label: str) -> float | None:
        """A level's match weight, log2(m / u), before any term-frequency adjustment;
        None for a field or level this model does not know."""
        if field not in BY_FIELD:
            return None
        for level in self.levels_of(field):
            if level.label == label:
                return math.log2(level.bayes_factor)
        return None

    def ladder(self, field: str) -> Comparison:
        """The comparison this model's parameters for a field belong to: today's, or
        the older ladder a model stored before a level was added has."""
        comparison = BY_FIELD[field]
        found = self.comparisons.get(field)
        if found is None:
            return comparison
        return comparison.ladder(tuple(p.label for p in found))

    # Splink's settings JSON is the stored form: a documented format that Splink itself
    # can load to score pairs with the same parameters.

    def to_splink(self) -> dict[str, Any]:
        comparisons = []
        for current in COMPARISONS:
            params = self.comparisons.get(current.field)
            if params is None:
                continue
            comparison = self.ladder(current.field)
            c = comparison.field
            levels: list[dict[str, Any]] = [
                {
                    "sql_condition": f'"{c}_l" IS NULL OR "{c}_r" IS NULL',
                    "label_for_charts": "null",
                    "is_null_level": True,
                }
            ]
            for level, param in zip(comparison.sql_levels(), params, strict=True):
                entry: dict[str, Any] = {
                    "sql_condition": level.sql,
                    "label_for_charts": level.label,
                    "m_probability": param.m,
                    "u_probability": param.u,
                }
                if level.tf:
                    entry["tf_adjustment_column"] = c
                    entry["tf_adjustment_weight"] = 1.0
                levels.append(entry)
            comparisons.append({"output_column_name": c, "comparison_levels": levels})
        return {
            "link_type": "dedupe_only",
            "unique_id_column_name": "unique_id",
            "probability_two_random_records_match": self.probability_two_random_records_match,
            "comparisons": comparisons,
        }

    @classmethod
    def from_splink(cls, settings: Mapping[str, Any], **extra: Any) -> LinkageModel:
        """Parameters out of Splink's settings JSON; levels are matched by label, and a
        level Splink left without an estimate takes its prior (``check`` says so).  A
        comparison whose levels are exactly those of an older ladder keeps that ladder."""
        comparisons: dict[str, tuple[LevelParams, ...]] = {}
        for entry in settings.get("comparisons", []):
            name = entry["output_column_name"]
            comparison = BY_FIELD.get(name)
            if comparison is None:
                raise ValueError(f"unknown comparison {name!r}")
            found = {
                level["label_for_charts"]: level
                for level in entry["comparison_levels"]
                if not level.get("is_null_level")
            }
            comparison = comparison.ladder(tuple(found))
            params = []
            for level, prior in zip(comparison.levels, prior_levels(comparison), strict=True):
                raw = found.get(level.label, {})
                params.append(
                    LevelParams(
                        label=level.label,
                        m=_probability(raw.get("m_probability"), prior.m),
                        u=_probability(raw.get("u_probability"), prior.u),
                    )
                )
            comparisons[name] = tuple(params)
        return cls(
            probability_two_random_records_match=settings["probability_two_random_records_match"],
            comparisons=comparisons,
            **extra,
        )


def _probability(value: Any, fallback: float) -> float:
    if isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 1:
        return float(value)
    return fallback


# Before any training: priors, not fitted to the data (no term frequencies, a λ for
# no particular file size), so only near-certain pairs merge.
DEFAULT_MODEL = LinkageModel(match_probability=0.999)

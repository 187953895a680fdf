"""Estimating the linkage model from the records being linked, with Splink on DuckDB.

The standard recipe (Splink's and fastLink's): u from random pairs, which are almost
all different people; m by expectation maximisation over pairs blocked on several
rules, each rule leaving out the fields it blocks on, so every field is estimated from
pairs it did not select; λ from rules that each allow a typo in one field (rules that
demand exact agreement everywhere find almost none of the duplicates in data with
typos, and make λ absurdly small).  Then ``check`` throws out what cannot be right.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.identity.scoring.levels import BY_FIELD, COMPARISONS, TF_FIELDS
from gateway.identity.scoring.model import (
    PRIOR_PROBABILITY_TWO_RANDOM_RECORDS_MATCH,
    LevelParams,
    LinkageModel,
    prior_levels,
)

MIN_RECORDS = 50
_MIN_PRESENT = 0.05  # a field filled in on fewer records than this is not trained on
# Random pairs for u (all of them when there are fewer); Splink samples in chunks and
# stops once every level has been seen this often.
_U_PAIRS = 5e6
_U_MIN_COUNT = 30
_SEED = 42
# Pairs per EM blocking rule at most: a rule on first names alone gives a common name's
# records all against each other, billions of pairs in a file of millions.
_EM_PAIRS = 5e6
# Of the pairs the one-typo rules find, the share of all true pairs: they miss a
# duplicate with typos in two fields or a missing value.
_ONE_TYPO_RECALL = 0.9


@dataclass(slots=True)
class TrainingReport:
    model: LinkageModel
    records: int
    seconds: float
    notes: list[str] = field(default_factory=list)  # fallbacks and why


def _rows(records: Sequence[dict[str, str | None]], fields: Sequence[str]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {"unique_id": list(range(len(records)))}
    for name in fields:
        columns[name] = [record.get(name) for record in records]
    return columns


def _present(records: Sequence[dict[str, str | None]]) -> list[str]:
    counts = Counter(name for record in records for name, value in record.items() if value)
    floor = max(2, _MIN_PRESENT * len(records))
    return [c.field for c in COMPARISONS if counts[c.field] >= floor]


def term_frequencies(
    records: Sequence[Mapping[str, str | None]],
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Each value's share of a field's non-null values (as Splink computes them), and each
    field's count of non-null values."""
    tables: dict[str, dict[str, float]] = {}
    totals: dict[str, int] = {}
    for name in TF_FIELDS:
        counts = Counter(value for record in records if (value := record.get(name)))
        total = sum(counts.values())
        if not total:
            continue
        totals[name] = total
        tables[name] = {value: n / total for value, n in counts.items()}
    return tables, totals


def _one_typo_rules(fields: Sequence[str]) -> list[str]:
    """Deterministic rules for λ: every identifying field agrees, but one of them only
    within a typo (two edits), in turn."""
    core = [f for f in ("first_name", "last_name", "date_of_birth", "postcode") if f in fields]
    rules = []
    for loose in core:
        parts = [
            f'levenshtein(l."{f}", r."{f}") <= 2' if f == loose else f'l."{f}" = r."{f}"'
            for f in core
        ]
        rules.append(" AND ".join(parts))
    for key in ("email", "phone"):
        if key in fields:
            rules.append(f'l."{key}" = r."{key}"')
    return rules


def _em_rules(fields: Sequence[str]) -> list[str]:
    """Blocking rules for EM, one field each: a rule on two fields at once keeps only the
    duplicates whose typos are in the third, and EM then learns that the third hardly
    ever agrees between two records of one person."""
    return [f'l."{name}" = r."{name}"' for name in _EM_FIELDS if name in fields]


_EM_FIELDS = ("first_name", "last_name", "date_of_birth", "postcode")


def train(
    records: Sequence[dict[str, str | None]],
    *,
    base: LinkageModel | None = None,
    threads: int = 2,
    extra: dict[str, Any] | None = None,
) -> TrainingReport:
    """Estimate a model from comparable records (``PreparedRecord.comparable()``);
    thresholds come from ``base``.  ``ValueError`` when there is too little to learn from."""
    if len(records) < MIN_RECORDS:
        raise ValueError(f"too few records to train on ({len(records)}; at least {MIN_RECORDS})")
    import duckdb
    from splink import DuckDBAPI, Linker

    started = time.perf_counter()
    fields = _present(records)
    if not any(f in fields for f in ("first_name", "last_name")) or len(fields) < 2:
        raise ValueError("the records need names and at least one more field to train on")
    base = base or LinkageModel()
    start = LinkageModel(
        comparisons={f: prior_levels(BY_FIELD[f]) for f in fields},
        probability_two_random_records_match=PRIOR_PROBABILITY_TWO_RANDOM_RECORDS_MATCH,
    )
    settings = start.to_splink()
    settings["blocking_rules_to_generate_predictions"] = []
    settings["max_iterations"] = 25
    settings["em_convergence"] = 0.0001

    connection = duckdb.connect(":memory:")
    connection.execute(f"SET threads = {max(1, threads)}")
    splink_log = logging.getLogger("splink")
    level = splink_log.level
    splink_log.setLevel(logging.ERROR)  # progress chatter, not the gateway's business
    notes: list[str] = []
    try:
        api = DuckDBAPI(connection=connection)
        table = api.register(_rows(records, fields), table_name="records")
        linker = Linker(table, settings, log_level=None)
        rules: list[Any] = list(_one_typo_rules(fields))
        try:
            linker.training.estimate_probability_two_random_records_match(
                rules, recall=_ONE_TYPO_RECALL
            )
        except ValueError as exc:
            notes.append(f"λ: the one-typo rules failed ({exc}); the prior kept")
        pairs = len(records) * (len(records) - 1) / 2
        linker.training.estimate_u_using_random_sampling(max_pairs=min(_U_PAIRS, pairs), seed=_SEED)
        for rule in _em_rules(fields):
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(
                    rule, max_pairs=_EM_PAIRS
                )
            except Exception as exc:  # noqa: BLE001 - Splink fails many ways; a rule is skipped
                notes.append(f"EM on {rule}: {type(exc).__name__}: {exc}")
        trained = linker.misc.save_model_to_json()
    finally:
        splink_log.setLevel(level)
        connection.close()

    frequencies, totals = term_frequencies(records)
    model = LinkageModel.from_splink(
        trained,
        term_frequencies=frequencies,
        tf_totals=totals,
        match_probability=base.match_probability,
        review_probability=base.review_probability,
    )
    model, problems = check(model, trained)
    notes += problems
    seconds = time.perf_counter() - started
    model = model.model_copy(
        update={
            "trained": {
                "records": len(records),
                "fields": fields,
                "seconds": round(seconds, 2),
                "notes": notes,
                **(extra or {}),
            }
        }
    )
    return TrainingReport(model, len(records), seconds, notes)


def _missing(trained: dict[str, Any], name: str) -> list[str]:
    for entry in trained.get("comparisons", []):
        if entry["output_column_name"] != name:
            continue
        return [
            level["label_for_charts"]
            for level in entry["comparison_levels"]
            if not level.get("is_null_level")
            and not all(
                isinstance(level.get(key), int | float) and math.isfinite(level[key])
                for key in ("m_probability", "u_probability")
            )
        ]
    return []


def check(model: LinkageModel, trained: dict[str, Any]) -> tuple[LinkageModel, list[str]]:
    """Sanity checks on what EM returned; a comparison that fails them takes its priors.

    - each level's Bayes factor at most the exact level's and at least the else level's;
      name and town levels in order (a closer name is never weaker evidence);
    - exact agreement is evidence for a match, the else level evidence against;
    - λ between one in a billion and one half, and no more than the random pairs allow.
    A level EM never saw (no estimate) keeps its prior beside the trained ones.
    """
    notes: list[str] = []
    comparisons = dict(model.comparisons)
    rate, bound = _consistent_rate(model)
    if rate < model.probability_two_random_records_match <= 0.5:
        notes.append(
            f"λ = {model.probability_two_random_records_match:.3g} is more than the random pairs"
            f" allow ({bound:.3g}: {rate:.3g} used)"
        )
        model = model.model_copy(update={"probability_two_random_records_match": rate})
    for name, params in model.comparisons.items():
        missing = _missing(trained, name)
        if missing:
            notes.append(f"{name}: no estimate for {', '.join(missing)}; prior used there")
        # Splink leaves a level it never saw at its starting value, the prior.
        priors = prior_levels(BY_FIELD[name])
        untrained = set(missing) | {
            p.label for p, q in zip(params, priors, strict=True) if p.m == q.m
        }
        params = _without_matches(params, model.probability_two_random_records_match)
        params, rare = _rare_levels_from_priors(name, params)
        if rare:
            notes.append(f"{name}: too few matches at {', '.join(rare)}; prior m used there")
        params = _capped(params, untrained | set(rare))
        params, pooled = _pool_ladder(name, params)
        if pooled:
            notes.append(f"{name}: {', '.join(pooled)} out of order; pooled with the closer level")
        problem = _disorder(name, params)
        if problem:
            notes.append(f"{name}: {problem}; priors used instead")
            params = prior_levels(BY_FIELD[name])
        comparisons[name] = params
    rate = model.probability_two_random_records_match
    update: dict[str, Any] = {"comparisons": comparisons}
    if not 1e-9 <= rate <= 0.5:
        notes.append(f"λ = {rate:.3g} is implausible; prior used instead")
        update["probability_two_random_records_match"] = PRIOR_PROBABILITY_TWO_RANDOM_RECORDS_MATCH
    return model.model_copy(update=update), notes


_RARE_M = 0.002


def _consistent_rate(model: LinkageModel) -> tuple[float, float]:
    """λ as the random pairs allow: among random pairs a share λ are matches, and a share
    λ·m of them agree exactly on a field, so λ·m cannot exceed that field's u (the share
    of random pairs agreeing).  One-typo rules over few fields (a surname and a birth date
    two edits apart) also catch strangers, and overstate λ; then the matches taken out
    of u (``_without_matches``) leave an exact birth date next to no random pair at all,
    and a shared birthday becomes proof.  A λ over that bound is taken down to half of
    it (the matches then half the agreeing random pairs); returns (λ, the bound)."""
    rate = model.probability_two_random_records_match
    if not 1e-9 <= rate <= 0.5:
        return rate, rate  # implausible anyway: the prior replaces it
    bounds = [
        params[0].u / params[0].m
        for name, params in model.comparisons.items()
        if not BY_FIELD[name].levels[0].tf and params[0].m > 0
    ]
    if not bounds:
        return rate, rate
    bound = min(bounds)
    return (rate if rate <= bound else bound / 2), bound


_MIN_U = 1e-7


def _without_matches(params: tuple[LevelParams, ...], rate: float) -> tuple[LevelParams, ...]:
    """u as between different people: random pairs include a share λ of matches, which on
    a small file (λ of 1e-3) is as large as the u of an exact birth date; take it out."""
    if not 0 < rate < 0.5:
        return params
    u = [max((p.u - rate * p.m) / (1 - rate), _MIN_U) for p in params]
    total = sum(u)
    return tuple(
        LevelParams(label=p.label, m=p.m, u=min(value / total, 1.0))
        for p, value in zip(params, u, strict=True)
    )


def _rare_levels_from_priors(
    name: str, params: tuple[LevelParams, ...]
) -> tuple[tuple[LevelParams, ...], list[str]]:
    """An intermediate level EM saw (almost) no matches at (day and month swapped, in
    data without that error) has an m of about nothing, and would make that pattern
    strong evidence *against* a match; its prior m says what such an error is worth."""
    priors = prior_levels(BY_FIELD[name])
    rare = [i for i in range(1, len(params) - 1) if params[i].m < _RARE_M]
    if not rare:
        return params, []
    m = [priors[i].m if i in rare else p.m for i, p in enumerate(params)]
    total = sum(m)
    repaired = tuple(
        LevelParams(label=p.label, m=value / total, u=p.u)
        for p, value in zip(params, m, strict=True)
    )
    return repaired, [params[i].label for i in rare]


def _capped(params: tuple[LevelParams, ...], untrained: set[str]) -> tuple[LevelParams, ...]:
    """A level whose m is a prior (EM had nothing to go on) is never stronger evidence
    than exact agreement was found to be: its u, from a handful of random pairs, can be
    tiny."""
    exact = params[0].bayes_factor
    capped = list(params)
    for i, p in enumerate(params[1:-1], start=1):
        if p.label in untrained and p.bayes_factor > exact:
            capped[i] = LevelParams(label=p.label, m=exact * p.u, u=p.u)
    total = sum(p.m for p in capped)
    return tuple(LevelParams(label=p.label, m=p.m / total, u=p.u) for p in capped)


def _pool_ladder(
    name: str, params: tuple[LevelParams, ...]
) -> tuple[tuple[LevelParams, ...], list[str]]:
    """A fuzzy level stronger than the closer one above it (few random pairs land in a
    narrow band, so its u is noisy): the two share their pooled Bayes factor, each
    keeping its u, and their m's still sum to what they did (pool adjacent violators)."""
    if name == "date_of_birth":
        return params, []  # not a ladder: one edit, swapped, two parts
    levels = list(params)
    pooled: list[str] = []
    for i in range(1, len(levels) - 2):
        closer, farther = levels[i], levels[i + 1]
        if farther.bayes_factor <= closer.bayes_factor:
            continue
        factor = (closer.m + farther.m) / (closer.u + farther.u)
        levels[i] = LevelParams(label=closer.label, m=factor * closer.u, u=closer.u)
        levels[i + 1] = LevelParams(label=farther.label, m=factor * farther.u, u=farther.u)
        pooled.append(farther.label)
    return tuple(levels), pooled


def _disorder(name: str, params: Sequence[LevelParams]) -> str | None:
    factors = [p.bayes_factor for p in params]
    labels = [p.label for p in params]
    comparison = BY_FIELD[name]
    if factors[0] <= 1:
        return "exact agreement is not evidence for a match"
    if factors[-1] >= 1:
        return "the else level is not evidence against a match (m above u)"
    for label, factor in zip(labels[1:-1], factors[1:-1], strict=True):
        if factor < factors[-1]:
            return f"level {label!r} is weaker evidence than no agreement at all"
    if not comparison.levels[0].tf:
        # An exact level without term frequencies is the strongest; with them its u is
        # an average over common and rare values, and a rare value's weight is higher.
        for label, factor in zip(labels[1:-1], factors[1:-1], strict=True):
            if factor > factors[0] * (1 + 1e-9):  # a level capped at exact's is equal
                return f"level {label!r} is stronger evidence than exact agreement"
    if name != "date_of_birth":
        # A ladder of closeness: a closer value is never weaker evidence.
        ladder = factors[1:-1]
        for closer, farther, label in zip(ladder, ladder[1:], labels[2:-1], strict=False):
            if farther > closer:
                return f"level {label!r} is stronger evidence than a closer one"
    return None

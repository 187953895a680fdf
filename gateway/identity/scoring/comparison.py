"""The online scorer: a pair of records -> comparison levels -> match probability.

Compiled once per model version (weights as log2 Bayes factors, term-frequency
adjustments as a dictionary per field), and records compared as tuples in
``FIELDS`` order, so scoring a pair is a few string comparisons and additions: an
import scores hundreds of thousands of pairs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.identity.scoring.levels import COMPARISONS
from gateway.identity.scoring.model import LinkageModel

FIELDS = tuple(comparison.field for comparison in COMPARISONS)
Comparable = tuple[str | None, ...]  # a record's comparison keys in FIELDS order
_DOB = FIELDS.index("date_of_birth")
_COMMON = 3  # a value seen this many times in training is a name in its own right


def comparable(values: Mapping[str, str | None]) -> Comparable:
    return tuple(values.get(name) for name in FIELDS)


@dataclass(frozen=True, slots=True)
class PairScore:
    """A scored pair: the weight, the level of each compared field, and whether the
    evidence allows an automatic merge at all."""

    weight: float
    levels: dict[str, str]  # field -> level label; absent: not compared (a value missing)
    swapped: bool  # first and last name compared crosswise
    vetoed: bool  # a name in its "else" level, uncorroborated: never merged without a person

    @property
    def probability(self) -> float:
        return probability(self.weight)


def probability(weight: float) -> float:
    if weight > 60:
        return 1.0
    if weight < -60:
        return 0.0
    odds: float = 2.0**weight
    return odds / (1 + odds)


def weight_of(chance: float) -> float:
    return math.log2(chance / (1 - chance))


class _Field:
    __slots__ = (
        "agree",
        "common",
        "else_level",
        "index",
        "labels",
        "level",
        "near",
        "tf",
        "tf_unseen",
        "weights",
    )

    def __init__(self, index: int, model: LinkageModel) -> None:
        # The model's own ladder: a model stored before a level was added scores as it did.
        comparison = model.ladder(COMPARISONS[index].field)
        params = model.levels_of(comparison.field)
        self.index = index
        self.else_level = comparison.else_level
        self.near = comparison.near  # names: exact, one edit, Jaro-Winkler >= 0.92
        self.level = comparison.level
        self.labels = [level.label for level in comparison.levels]
        self.agree = comparison.agree
        self.weights = [math.log2(p.m / p.u) for p in params]
        # Exact agreement on a value carried by one record in a hundred is weaker
        # evidence than on one carried by one in ten thousand: log2(u / tf) on top.
        self.tf: dict[str, float] | None = None
        self.tf_unseen = 0.0
        self.common: frozenset[str] = frozenset()
        if comparison.levels[0].tf:
            frequencies = model.term_frequencies.get(comparison.field)
            total = model.tf_totals.get(comparison.field)
            if frequencies is not None and total:
                u = params[0].u
                self.tf = {value: math.log2(u / share) for value, share in frequencies.items()}
                # A value training never saw may be common in data it did not see: it
                # gets the average (no adjustment), not the weight of a rarity.
                self.tf_unseen = 0.0
                self.common = frozenset(
                    value for value, share in frequencies.items() if share * total >= _COMMON
                )

    def weight(self, level: int, value: str) -> float:
        if level == 0 and self.tf is not None:
            return self.weights[0] + self.tf.get(value, self.tf_unseen)
        return self.weights[level]


class Scorer:
    def __init__(self, model: LinkageModel) -> None:
        self.model = model
        fields = [_Field(index, model) for index in range(len(COMPARISONS))]
        self._first, self._last = fields[0], fields[1]
        self._rest = fields[2:]
        # Common as a first or as a last name: names get entered in either field, so
        # crosswise comparisons ask both; a name compared within its own field asks that
        # field's table only (Peters is a common surname, but a first name "Peters"
        # beside "Peter" is a typo, not another first name).
        self._common = self._first.common | self._last.common
        # The hot loop's view of the other fields, as plain tuples.
        self._hot = [(f.index, f.level, f.weights, f.tf, f.tf_unseen, f.agree) for f in self._rest]
        self._prior = model.prior_weight
        self.match_weight = weight_of(model.match_probability)
        self.review_weight = weight_of(model.review_probability)

    def for_population(self, records: int) -> Scorer:
        """This scorer for a database of ``records`` identities: λ is the chance that two
        random records match, and among more records than the model was trained on (the
        same share of duplicates) two random ones match that much less often."""
        trained = int(self.model.trained.get("records") or 0)
        if trained <= 0 or records <= trained:
            return self
        scaled = copy.copy(self)
        rate = self.model.probability_two_random_records_match * trained / records
        scaled._prior = math.log2(rate / (1 - rate))
        return scaled

    def weigh(self, a: Comparable, b: Comparable) -> tuple[float, bool]:
        """(match weight, vetoed): the hot path, without the levels' labels."""
        first, last, _ = self._name_levels(a, b)
        total = self._prior
        if first >= 0:
            total += self._first.weight(first, a[0] or "")
        if last >= 0:
            total += self._last.weight(last, a[1] or "")
        agreeing = 0
        dob = -1
        for index, level_of, weights, tf, tf_unseen, agree in self._hot:
            left = a[index]
            if left is None:
                continue
            right = b[index]
            if right is None:
                continue
            if left == right:
                level = 0
                total += weights[0] if tf is None else weights[0] + tf.get(left, tf_unseen)
            else:
                level = level_of(left, right)
                total += weights[level]
            if level <= agree:
                agreeing += 1
            if index == _DOB:
                dob = level
        vetoed = False
        first_else, last_else = self._first.else_level, self._last.else_level
        if first == first_else or last == last_else:
            # A name that disagrees outright (a stranger sharing a birthday, or a name
            # changed at marriage) merges only where everything else agrees: the other
            # name and the birth date exactly, or two more fields (address, town...).
            # "Agrees" as for swapped names: exact, or a typo (one edit, Jaro-Winkler >= 0.92) in a
            # value not common in its field; a near surname is as rare a coincidence
            # between strangers born the same day as an exact one.
            other, near = (
                (last, self._last.near) if first == first_else else (first, self._first.near)
            )
            # A missing other name agrees with nothing: a surname that differs beside
            # no first name at all is a stranger born the same day.
            vetoed = agreeing < 2 and not (0 <= other <= near and dob == 0)
        return total, vetoed

    def score(self, a: Comparable, b: Comparable) -> PairScore:
        """The pair with its evidence (for reviews and the evidence trail)."""
        weight, vetoed = self.weigh(a, b)
        first, last, swapped = self._name_levels(a, b)
        levels: dict[str, str] = {}
        for f, level in ((self._first, first), (self._last, last)):
            if level >= 0:
                levels[FIELDS[f.index]] = f.labels[level]
        for f in self._rest:
            left, right = a[f.index], b[f.index]
            if left is not None and right is not None:
                levels[FIELDS[f.index]] = f.labels[f.level(left, right)]
        return PairScore(weight, levels, swapped, vetoed)

    def _name_levels(self, a: Comparable, b: Comparable) -> tuple[int, int, bool]:
        """Levels of first and last name (-1: not compared), and whether they were taken
        crosswise: names entered the wrong way round count only when both cross
        comparisons agree (exact, or a typo), never on one."""
        a_first, a_last, b_first, b_last = a[0], a[1], b[0], b[1]
        first_f, last_f = self._first, self._last
        first = last = -1
        if a_first is not None and b_first is not None:
            first = 0 if a_first == b_first else self._near(self._first, a_first, b_first, False)
        if a_last is not None and b_last is not None:
            last = 0 if a_last == b_last else self._near(self._last, a_last, b_last, False)
        if (
            (first == first_f.else_level or last == last_f.else_level)
            and a_first
            and a_last
            and b_first
            and b_last
        ):
            crossed_first = (
                0 if a_first == b_last else self._near(self._first, a_first, b_last, True)
            )
            crossed_last = 0 if a_last == b_first else self._near(self._last, a_last, b_first, True)
            if crossed_first <= first_f.near and crossed_last <= last_f.near:
                return crossed_first, crossed_last, True
        return first, last, False

    def _near(self, f: _Field, a: str, b: str, crosswise: bool) -> int:
        """The fuzzy level of two different names; but two names each common in the data
        (Schmitt and Schmidt) are two names, not one with a typo: else."""
        level = f.level(a, b)
        common = self._common if crosswise else f.common
        if level < f.else_level and a in common and b in common:
            return f.else_level
        return level

"""Field similarity (rapidfuzz) turned into Fellegi-Sunter log-likelihood weights."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from rapidfuzz.distance import JaroWinkler, Levenshtein
from rapidfuzz.fuzz import token_sort_ratio

from gateway.identity.config import FieldRule, IdentityConfig

Comparable = Mapping[str, str | None]


def _exact(a: str, b: str) -> float:
    return 1.0 if a == b else 0.0


def _dob(a: str, b: str) -> float:
    if a == b:
        return 1.0
    # Day and month swapped is the commonest form error; one mistyped digit the next.
    if a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]:
        return 0.9
    return Levenshtein.normalized_similarity(a, b)


def _address(a: str, b: str) -> float:
    return token_sort_ratio(a, b) / 100.0


COMPARATORS: dict[str, Callable[[str, str], float]] = {
    "first_name": JaroWinkler.normalized_similarity,
    "last_name": JaroWinkler.normalized_similarity,
    "date_of_birth": _dob,
    "address": _address,
    "city": JaroWinkler.normalized_similarity,
    "postcode": Levenshtein.normalized_similarity,
    "email": _exact,
    "phone": _exact,
}


class _Weights:
    __slots__ = ("agree", "agree_w", "disagree", "disagree_w")

    def __init__(self, rule: FieldRule) -> None:
        self.agree, self.disagree = rule.agree, rule.disagree
        self.agree_w = math.log2(rule.m / rule.u)
        self.disagree_w = math.log2((1 - rule.m) / (1 - rule.u))

    def weight(self, similarity: float) -> float:
        if similarity >= self.agree:
            return self.agree_w
        if similarity <= self.disagree:
            return self.disagree_w
        # Between the cut-offs, partial credit (Winkler's interpolation).
        share = (similarity - self.disagree) / (self.agree - self.disagree)
        return self.disagree_w + share * (self.agree_w - self.disagree_w)


class Scorer:
    """Sums per-field weights over the fields both records have; missing fields score 0."""

    def __init__(self, config: IdentityConfig) -> None:
        self._fields = [
            (name, COMPARATORS[name], _Weights(rule))
            for name, rule in config.fields.items()
            if name in COMPARATORS
        ]

    def score(self, a: Comparable, b: Comparable) -> float:
        total = names = 0.0
        for name, compare, weights in self._fields:
            left, right = a.get(name), b.get(name)
            if left and right:
                weight = weights.weight(compare(left, right))
                total += weight
                if name in ("first_name", "last_name"):
                    names += weight
        if names < 0:
            # Only pairs whose names disagree are worth the swapped-order check.
            total = max(total, total - names + self._swapped_names(a, b))
        return total

    def _names(self, a: Comparable, b: Comparable) -> float:
        total = 0.0
        for name, compare, weights in self._fields:
            if name in ("first_name", "last_name") and a.get(name) and b.get(name):
                total += weights.weight(compare(a[name] or "", b[name] or ""))
        return total

    def _swapped_names(self, a: Comparable, b: Comparable) -> float:
        """First and last name entered the wrong way round, scored as if put right."""
        a_first, a_last, b_first, b_last = (
            a.get("first_name"),
            a.get("last_name"),
            b.get("first_name"),
            b.get("last_name"),
        )
        if not (a_first and a_last and b_first and b_last):
            return 0.0
        swapped = {"first_name": b_last, "last_name": b_first}
        return self._names(a, swapped)

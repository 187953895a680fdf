"""Discrete comparison levels: how two values of one field compare, best level first.

Each comparison is written twice, once as the online scorer computes it (Python,
rapidfuzz) and once as the SQL condition Splink evaluates in DuckDB when it trains the
model; the two agree value for value (rapidfuzz and DuckDB compute Jaro-Winkler and
Levenshtein alike, and ``tests/identity/test_identity_levels.py`` holds them to it).  A
stored model's m and u are matched to these levels by label.  A comparison that gained a
level keeps its older ladder in ``legacy``: a model stored before the change has that
ladder's labels, and is scored with that ladder, exactly as it was (no migration of the
stored settings: rewriting them would change what their links meant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rapidfuzz.distance import OSA, JaroWinkler, Levenshtein

_jaro_winkler = JaroWinkler.similarity
_levenshtein = Levenshtein.distance
# One edit counting a swap of two neighbours as one (Myer/Meyer, Mary/Mray): up to one,
# the optimal-string-alignment distance equals DuckDB's damerau_levenshtein.
_one_edit_or_swap = OSA.distance
# rapidfuzz and DuckDB round Jaro-Winkler differently in the last bit (0.9199999999999999
# against 0.92); both compare with the threshold less a hair, so they agree.
_JW_HIGH = 0.919999999
_JW_LOW = 0.879999999


@dataclass(frozen=True, slots=True)
class Level:
    label: str
    sql: str  # a DuckDB condition over "{c}_l" and "{c}_r"; ELSE for the last level
    tf: bool = False  # term-frequency adjusted (exact levels of names and towns)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One field's comparison: ``level(a, b)`` is the index of the first level that
    holds for two present values (the last level, "else", always holds)."""

    field: str
    levels: tuple[Level, ...]
    level: Callable[[str, str], int]
    name_like: bool = False  # a name: "else" here vetoes an automatic merge, unless...
    agree: int = 0  # ...two fields at this level or better (not names nor birth date) agree
    near: int = 0  # names: levels up to this one are a name agreeing (a typo at most)
    legacy: tuple[Comparison, ...] = ()  # older ladders a stored model may still have
    priors: str = ""  # key of its priors in ``model._PRIORS`` (default: the field)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(level.label for level in self.levels)

    @property
    def priors_key(self) -> str:
        return self.priors or self.field

    def ladder(self, labels: tuple[str, ...]) -> Comparison:
        """The ladder (this one or a legacy one) whose levels have these labels; this one
        when none has."""
        for candidate in self.legacy:
            if candidate.labels == labels:
                return candidate
        return self

    @property
    def else_level(self) -> int:
        return len(self.levels) - 1

    def sql_levels(self) -> list[Level]:
        c = self.field
        return [Level(level.label, level.sql.replace("{c}", c), level.tf) for level in self.levels]


def _name_level(a: str, b: str) -> int:
    if a == b:
        return 0
    if _one_edit_or_swap(a, b, score_cutoff=1) <= 1:
        return 1
    similarity = _jaro_winkler(a, b)
    if similarity >= _JW_HIGH:
        return 2
    if similarity >= _JW_LOW:
        return 3
    return 4


_NAME_LEVELS = (
    Level("exact", '"{c}_l" = "{c}_r"', tf=True),
    Level("one edit", 'damerau_levenshtein("{c}_l", "{c}_r") <= 1'),
    Level("jaro-winkler >= 0.92", f'jaro_winkler_similarity("{{c}}_l", "{{c}}_r") >= {_JW_HIGH!r}'),
    Level("jaro-winkler >= 0.88", f'jaro_winkler_similarity("{{c}}_l", "{{c}}_r") >= {_JW_LOW!r}'),
    Level("else", "ELSE"),
)


def _jaro_winkler_level(a: str, b: str) -> int:
    """Names before the one-edit level (models stored before it), and towns."""
    if a == b:
        return 0
    similarity = _jaro_winkler(a, b)
    if similarity >= _JW_HIGH:
        return 1
    if similarity >= _JW_LOW:
        return 2
    return 3


_JARO_WINKLER_LEVELS = (
    Level("exact", '"{c}_l" = "{c}_r"', tf=True),
    Level("jaro-winkler >= 0.92", f'jaro_winkler_similarity("{{c}}_l", "{{c}}_r") >= {_JW_HIGH!r}'),
    Level("jaro-winkler >= 0.88", f'jaro_winkler_similarity("{{c}}_l", "{{c}}_r") >= {_JW_LOW!r}'),
    Level("else", "ELSE"),
)


def _dob_level(a: str, b: str) -> int:
    """Dates as YYYYMMDD digits (``values.dob_key``), calendar dates or not."""
    if a == b:
        return 0
    if _levenshtein(a, b, score_cutoff=1) <= 1:
        return 1
    year, month, day = a[:4] == b[:4], a[4:6] == b[4:6], a[6:8] == b[6:8]
    if year and a[4:6] == b[6:8] and a[6:8] == b[4:6]:
        return 2
    if year + month + day >= 2:
        return 3
    return 4


_DOB_LEVELS = (
    Level("exact", '"{c}_l" = "{c}_r"'),
    Level("one edit", 'levenshtein("{c}_l", "{c}_r") <= 1'),
    Level(
        "day and month swapped",
        'substr("{c}_l", 1, 4) = substr("{c}_r", 1, 4) '
        'AND substr("{c}_l", 5, 2) = substr("{c}_r", 7, 2) '
        'AND substr("{c}_l", 7, 2) = substr("{c}_r", 5, 2)',
    ),
    Level(
        "two of year, month, day",
        'CAST(substr("{c}_l", 1, 4) = substr("{c}_r", 1, 4) AS INTEGER) '
        '+ CAST(substr("{c}_l", 5, 2) = substr("{c}_r", 5, 2) AS INTEGER) '
        '+ CAST(substr("{c}_l", 7, 2) = substr("{c}_r", 7, 2) AS INTEGER) >= 2',
    ),
    Level("else", "ELSE"),
)


def _address_level(a: str, b: str) -> int:
    if a == b:
        return 0
    if _levenshtein(a, b, score_cutoff=2) <= 2:
        return 1
    if _jaro_winkler(a, b) >= _JW_LOW:
        return 2
    return 3


_ADDRESS_LEVELS = (
    Level("exact", '"{c}_l" = "{c}_r"'),
    Level("two edits", 'levenshtein("{c}_l", "{c}_r") <= 2'),
    Level("jaro-winkler >= 0.88", f'jaro_winkler_similarity("{{c}}_l", "{{c}}_r") >= {_JW_LOW!r}'),
    Level("else", "ELSE"),
)


def _one_edit_level(a: str, b: str) -> int:
    if a == b:
        return 0
    if _levenshtein(a, b, score_cutoff=1) <= 1:
        return 1
    return 2


_ONE_EDIT_LEVELS = (
    Level("exact", '"{c}_l" = "{c}_r"'),
    Level("one edit", 'levenshtein("{c}_l", "{c}_r") <= 1'),
    Level("else", "ELSE"),
)


def _exact_level(a: str, b: str) -> int:
    return 0 if a == b else 1


_EXACT_LEVELS = (Level("exact", '"{c}_l" = "{c}_r"'), Level("else", "ELSE"))
_CITY_LEVELS = (
    Level("exact", '"{c}_l" = "{c}_r"', tf=True),
    *_JARO_WINKLER_LEVELS[1:],
)


def _name(field: str) -> Comparison:
    legacy = Comparison(
        field,
        _JARO_WINKLER_LEVELS,
        _jaro_winkler_level,
        name_like=True,
        near=1,
        priors=f"{field}/jaro-winkler",
    )
    return Comparison(field, _NAME_LEVELS, _name_level, name_like=True, near=2, legacy=(legacy,))


# In the order the scorer sums them; every field of ``PreparedRecord.comparable()``.
COMPARISONS: tuple[Comparison, ...] = (
    _name("first_name"),
    _name("last_name"),
    Comparison("date_of_birth", _DOB_LEVELS, _dob_level, agree=-1),
    Comparison("address", _ADDRESS_LEVELS, _address_level, agree=1),
    Comparison("city", _CITY_LEVELS, _jaro_winkler_level, agree=1),
    Comparison("postcode", _ONE_EDIT_LEVELS, _one_edit_level),
    Comparison("email", _ONE_EDIT_LEVELS, _one_edit_level),
    Comparison("phone", _EXACT_LEVELS, _exact_level),
)
BY_FIELD = {comparison.field: comparison for comparison in COMPARISONS}
TF_FIELDS = tuple(c.field for c in COMPARISONS if any(level.tf for level in c.levels))

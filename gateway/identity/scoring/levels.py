"""Discrete comparison levels: how two values of one field compare, best level first.

Each comparison is written twice, once as the online scorer computes it (Python,
rapidfuzz) and once as the SQL condition Splink evaluates in DuckDB when it trains the
model; the two agree value for value (rapidfuzz and DuckDB compute Jaro-Winkler and
Levenshtein alike, and ``tests/identity/test_identity_levels.py`` holds them to it).  A level's
position is its identity: a stored model's m and u are matched to these levels by
position and label, so changing a comparison means a new model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rapidfuzz.distance import JaroWinkler, Levenshtein

_jaro_winkler = JaroWinkler.similarity
_levenshtein = Levenshtein.distance
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

    @property
    def else_level(self) -> int:
        return len(self.levels) - 1

    def sql_levels(self) -> list[Level]:
        c = self.field
        return [Level(level.label, level.sql.replace("{c}", c), level.tf) for level in self.levels]


def _name_level(a: str, b: str) -> int:
    if a == b:
        return 0
    similarity = _jaro_winkler(a, b)
    if similarity >= _JW_HIGH:
        return 1
    if similarity >= _JW_LOW:
        return 2
    return 3


_NAME_LEVELS = (
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
    *_NAME_LEVELS[1:],
)

# In the order the scorer sums them; every field of ``PreparedRecord.comparable()``.
COMPARISONS: tuple[Comparison, ...] = (
    Comparison("first_name", _NAME_LEVELS, _name_level, name_like=True),
    Comparison("last_name", _NAME_LEVELS, _name_level, name_like=True),
    Comparison("date_of_birth", _DOB_LEVELS, _dob_level, agree=-1),
    Comparison("address", _ADDRESS_LEVELS, _address_level, agree=1),
    Comparison("city", _CITY_LEVELS, _name_level, agree=1),
    Comparison("postcode", _ONE_EDIT_LEVELS, _one_edit_level),
    Comparison("email", _ONE_EDIT_LEVELS, _one_edit_level),
    Comparison("phone", _EXACT_LEVELS, _exact_level),
)
BY_FIELD = {comparison.field: comparison for comparison in COMPARISONS}
TF_FIELDS = tuple(c.field for c in COMPARISONS if any(level.tf for level in c.levels))

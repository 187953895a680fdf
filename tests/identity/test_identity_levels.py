"""Comparison levels, blocking and the scorer's evidence rules, without a database.

The levels are computed twice, by the online scorer (Python) and by Splink in DuckDB
when it trains; they must agree on every pair, or the trained m and u would belong to
other pairs than the ones scored.  Open-ended inputs, so property-based.
"""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.identity import DEFAULT_CONFIG, DEFAULT_MODEL, prepare
from gateway.identity.scoring.comparison import FIELDS, Scorer
from gateway.identity.scoring.levels import BY_FIELD, COMPARISONS, Comparison
from gateway.identity.scoring.model import LinkageModel
from gateway.identity.scoring.training import term_frequencies

_CONNECTION = duckdb.connect(":memory:")
_LETTERS = "aeilnorstmchkb '"
names = st.text(alphabet=_LETTERS, min_size=1, max_size=12)
digits = st.text(alphabet="0123456789", min_size=8, max_size=8)


def _typo(draw: st.DrawFn, value: str, alphabet: str) -> str:
    """The value with up to three edits: the near pairs the fuzzy levels are about."""
    chars = list(value)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        at = draw(st.integers(0, max(0, len(chars) - 1)))
        if kind == "replace" and chars:
            chars[at] = draw(st.sampled_from(alphabet))
        elif kind == "insert":
            chars.insert(at, draw(st.sampled_from(alphabet)))
        elif kind == "delete" and len(chars) > 1:
            del chars[at]
        elif kind == "swap" and len(chars) > at + 1:
            chars[at], chars[at + 1] = chars[at + 1], chars[at]
    return "".join(chars) or value


@st.composite
def near_names(draw: st.DrawFn) -> tuple[str, str]:
    first = draw(names)
    return first, _typo(draw, first, _LETTERS)


_ADDRESS = "abcdeilnorst 0123456789øß/-"


@st.composite
def near_addresses(draw: st.DrawFn) -> tuple[str, str]:
    """Folded addresses keep digits, punctuation and letters NFKD cannot take apart."""
    first = draw(st.text(alphabet=_ADDRESS, min_size=1, max_size=30))
    return first, _typo(draw, first, _ADDRESS)


@st.composite
def near_dates(draw: st.DrawFn) -> tuple[str, str]:
    first = draw(digits)
    if draw(st.booleans()):  # day and month swapped
        return first, first[:4] + first[6:8] + first[4:6]
    return first, _typo(draw, first, "0123456789")[:8].ljust(8, "0")


def _sql_level(comparison: Comparison, left: str, right: str) -> int:
    """The level Splink's SQL conditions give the pair, evaluated by DuckDB."""
    c = comparison.field
    cases = " ".join(
        f"WHEN {level.sql} THEN {index}" for index, level in enumerate(comparison.sql_levels()[:-1])
    )
    query = (
        f"SELECT CASE {cases} ELSE {comparison.else_level} END "
        f'FROM (SELECT CAST(? AS VARCHAR) AS "{c}_l", CAST(? AS VARCHAR) AS "{c}_r")'
    )
    row = _CONNECTION.execute(query, [left, right]).fetchone()
    assert row is not None
    return int(row[0])


FUZZY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZY
@given(st.sampled_from(["first_name", "last_name", "city", "address"]), near_names())
def test_name_and_address_levels_are_the_ones_splink_trains_on(
    field: str, pair: tuple[str, str]
) -> None:
    comparison = BY_FIELD[field]
    assert comparison.level(*pair) == _sql_level(comparison, *pair)


@FUZZY
@given(st.sampled_from(["address", "city"]), near_addresses())
def test_address_levels_are_the_ones_splink_trains_on(field: str, pair: tuple[str, str]) -> None:
    comparison = BY_FIELD[field]
    assert comparison.level(*pair) == _sql_level(comparison, *pair)


@FUZZY
@given(near_dates())
def test_birth_date_levels_are_the_ones_splink_trains_on(pair: tuple[str, str]) -> None:
    comparison = BY_FIELD["date_of_birth"]
    assert comparison.level(*pair) == _sql_level(comparison, *pair)


@FUZZY
@given(st.sampled_from(["postcode", "email", "phone"]), near_names())
def test_key_levels_are_the_ones_splink_trains_on(field: str, pair: tuple[str, str]) -> None:
    comparison = BY_FIELD[field]
    assert comparison.level(*pair) == _sql_level(comparison, *pair)


@pytest.mark.parametrize(
    ("left", "right", "label"),
    [
        ("19670927", "19670927", "exact"),
        ("19670927", "19670928", "one edit"),  # the digit the old scorer took as agreement
        ("19670304", "19670403", "day and month swapped"),
        ("19670927", "19671227", "two of year, month, day"),
        ("19670927", "19761227", "else"),
    ],
)
def test_birth_date_levels(left: str, right: str, label: str) -> None:
    comparison = BY_FIELD["date_of_birth"]
    assert comparison.levels[comparison.level(left, right)].label == label


def test_every_field_the_scorer_compares_has_a_comparison() -> None:
    record = prepare(
        {
            "external_id": "1",
            "first_name": "Ada",
            "last_name": "Byron",
            "date_of_birth": "1815-12-10",
            "address": "12 St James Square",
            "city": "London",
            "postcode": "SW1Y 4JH",
            "email": "ada@corp.com",
            "phone": "+44 20 7946 0958",
        },
        "crm",
        DEFAULT_CONFIG,
    )
    assert tuple(c.field for c in COMPARISONS) == FIELDS
    assert dict(zip(FIELDS, record.compared(), strict=True)) == {
        ("email" if k == "email" else k): v for k, v in record.comparable().items()
    }


PERSON = {
    "first_name": "Margaret",
    "last_name": "Thornbury",
    "date_of_birth": "1961-04-09",
    "address": "12 Pinkerton Circuit",
    "city": "Bega",
    "postcode": "2550",
}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["first_name", "last_name", "date_of_birth"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10),
    st.booleans(),
)
def test_a_typo_in_any_one_field_still_leaves_a_shared_block(
    field: str, other: str, with_address: bool
) -> None:
    base = dict(PERSON) if with_address else {k: PERSON[k] for k in PERSON if "name" in k}
    base.setdefault("date_of_birth", PERSON["date_of_birth"])
    changed = dict(base)
    if field == "date_of_birth":
        # Any other date, the year included: the old blocks all held the birth year.
        number = sum(map(ord, other))
        changed[field] = f"{1900 + number % 100}-{1 + number % 12:02d}-{1 + number % 28:02d}"
    else:
        changed[field] = other
    a = prepare({"external_id": "a", **base}, "crm", DEFAULT_CONFIG)
    b = prepare({"external_id": "b", **changed}, "crm", DEFAULT_CONFIG)
    assert set(a.block_keys()) & set(b.block_keys())


def _pair(**changes: str) -> tuple[tuple[str | None, ...], tuple[str | None, ...]]:
    a = prepare({"external_id": "a", **PERSON}, "crm", DEFAULT_CONFIG).compared()
    b = prepare({"external_id": "b", **PERSON, **changes}, "crm", DEFAULT_CONFIG).compared()
    return a, b


NAME_AND_BIRTH_DATE = {"address": "", "city": "", "postcode": ""}


def test_a_name_in_its_else_level_vetoes_a_merge_unless_the_rest_agrees() -> None:
    scorer = Scorer(DEFAULT_MODEL)
    # Only names and a birth date one digit off: a stranger is too likely.
    stranger = scorer.score(
        *_pair(first_name="Kevin", date_of_birth="1961-04-08", **NAME_AND_BIRTH_DATE)
    )
    assert stranger.levels["first_name"] == "else"
    assert stranger.vetoed
    # A surname changed at marriage, with the address, town and postcode all agreeing.
    married = scorer.score(*_pair(last_name="Okonkwo"))
    assert married.levels["last_name"] == "else"
    assert not married.vetoed
    assert married.probability >= DEFAULT_MODEL.match_probability


def test_a_replaced_first_name_merges_with_a_surname_typo_and_the_same_birth_date() -> None:
    """A first name entered as another one, the surname with a typo (Mcphail, Mcpahil) and
    the birth date exact: a near surname is as rare a coincidence between strangers born
    the same day as an exact one, so the evidence may merge (RLdata and FEBRL both carry
    such duplicates).  With the birth date a digit off it is still a stranger."""
    scorer = Scorer(DEFAULT_MODEL)
    typo = scorer.score(*_pair(first_name="Zebediah", last_name="Thornbuyr", **NAME_AND_BIRTH_DATE))
    assert typo.levels["first_name"] == "else"
    assert typo.levels["last_name"] == "one edit"  # two letters swapped
    assert not typo.vetoed
    off_by_one = scorer.score(
        *_pair(
            first_name="Zebediah",
            last_name="Thornbuyr",
            date_of_birth="1961-04-08",
            **NAME_AND_BIRTH_DATE,
        )
    )
    assert off_by_one.vetoed


def test_a_first_name_typo_that_is_also_a_common_surname_is_still_a_typo() -> None:
    """Peter and Peters as first names: Peters is a common surname, but among first names
    it is a rare value beside a common one, a typo; two first names that are each common
    among first names (Maria, Marie) stay two names."""
    records = (
        [{"first_name": "peter", "last_name": f"x{i}"} for i in range(8)]
        + [{"first_name": f"y{i}", "last_name": "peters"} for i in range(5)]
        + [{"first_name": "maria"}] * 5
        + [{"first_name": "marie"}] * 5
        + [{"first_name": f"z{i}", "last_name": f"w{i}"} for i in range(200)]
    )
    tables, totals = term_frequencies(records)
    scorer = Scorer(LinkageModel(term_frequencies=tables, tf_totals=totals))
    a = ("peter", "becker", "19600905", None, None, None, None, None)
    typo = scorer.score(a, ("peters", *a[1:]))
    assert typo.levels["first_name"] == "one edit"
    assert not typo.vetoed
    two_names = scorer.score(("maria", *a[1:]), ("marie", *a[1:]))
    assert two_names.levels["first_name"] == "else"


def test_swapped_names_count_only_when_both_cross_comparisons_agree() -> None:
    scorer = Scorer(DEFAULT_MODEL)
    swapped = scorer.score(*_pair(first_name="Thornbury", last_name="Margaret"))
    assert swapped.swapped
    assert not swapped.vetoed
    assert swapped.levels["first_name"] == swapped.levels["last_name"] == "exact"
    # One name moved across, the other a different name: not a swap, and without an
    # address to say otherwise, a stranger.
    half = scorer.score(*_pair(first_name="Thornbury", last_name="Okonkwo", **NAME_AND_BIRTH_DATE))
    assert not half.swapped
    assert half.vetoed


def test_a_common_surname_is_weaker_evidence_than_a_rare_one() -> None:
    records: list[dict[str, str | None]] = [{"last_name": "smith"}] * 50
    records += [{"last_name": f"rare{i}"} for i in range(950)]
    tables, totals = term_frequencies(records)
    model = LinkageModel(term_frequencies=tables, tf_totals=totals)
    scorer = Scorer(model)
    common = ("x", "smith", None, None, None, None, None, None)
    rare = ("x", "rare7", None, None, None, None, None, None)
    unseen = ("x", "zebedee", None, None, None, None, None, None)
    weight = {name: scorer.weigh(r, r)[0] for name, r in [("common", common), ("rare", rare)]}
    assert weight["common"] < weight["rare"]
    # Never seen in training: perhaps common elsewhere; the average, not a rarity's weight.
    average = Scorer(LinkageModel()).weigh(unseen, unseen)[0]
    assert weight["common"] < scorer.weigh(unseen, unseen)[0] == pytest.approx(average)
    assert average < weight["rare"]


def test_the_prior_shrinks_with_a_database_larger_than_the_training_file() -> None:
    """λ is the chance two random records match: trained on 1,000 records, it is a thousand
    times too large among a million, and the same pair must not merge as easily there."""
    model = DEFAULT_MODEL.model_copy(update={"trained": {"records": 1000}})
    scorer = Scorer(model)
    pair = _pair(first_name="Margret", address="", city="", postcode="")
    small = scorer.for_population(800).score(*pair).probability
    assert small == scorer.score(*pair).probability
    large = scorer.for_population(1_000_000).score(*pair).probability
    assert large < small
    odds = (large / (1 - large)) / (small / (1 - small))
    assert odds == pytest.approx(1000 / 1_000_000, rel=0.01)

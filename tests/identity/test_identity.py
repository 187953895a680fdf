"""Identity resolution without a database: keys, placeholders, scores, the linker, metrics."""

from __future__ import annotations

import uuid

import pytest

from gateway.identity import (
    DEFAULT_CONFIG,
    DEFAULT_MODEL,
    IdentityConfig,
    RecordError,
    pair_metrics,
    prepare,
)
from gateway.identity.linkage.linker import KnownState, Linker
from gateway.identity.scoring.comparison import Scorer
from gateway.identity.values import email_parts, phone_key, soundex

PERSON = {
    "external_id": "1",
    "first_name": "Margaret",
    "last_name": "Thornbury",
    "date_of_birth": "1961-04-09",
    "address": "12 Pinkerton Circuit",
    "city": "Bega",
    "postcode": "2550",
}


def test_email_keys_fold_case_dots_and_tags_only_where_configured() -> None:
    assert email_parts(" Ada.Love+news@GoogleMail.com ", DEFAULT_CONFIG) == (
        "ada.love+news@googlemail.com",
        "adalove@gmail.com",
    )
    assert (
        email_parts("Ada.Love+news@corp.example.org", DEFAULT_CONFIG)[1]
        == "ada.love+news@corp.example.org"
    )


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "  ",
        "unknown",
        "N/A",
        "null",
        "test@corp.com",
        "noreply@shop.com",
        "someone@example.invalid",
    ],
)
def test_placeholder_emails_are_never_keys(raw: str | None) -> None:
    assert email_parts(raw, DEFAULT_CONFIG) == (None, None)


@pytest.mark.parametrize("raw", ["+10000000000", "0000000000", "+441111111111", "n/a"])
def test_placeholder_phones_are_never_keys(raw: str) -> None:
    assert phone_key(raw, DEFAULT_CONFIG) is None


def test_phones_become_e164() -> None:
    assert phone_key("+44 20 7946 0958", DEFAULT_CONFIG) == "+442079460958"
    config = IdentityConfig(phone_default_region="GB")
    assert phone_key("020 7946 0958", config) == "+442079460958"


def test_soundex_groups_spellings() -> None:
    assert soundex("smith") == soundex("smyth") == "S530"
    assert soundex("robert") == soundex("rupert") == "R163"
    assert soundex("tymczak") == "T522"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("external_id", "0000"),
        ("external_id", "unknown"),
        ("email", "not-an-address"),
        ("phone", "98"),  # digits the example number in the message does not hold
        ("date_of_birth", "last tuesday"),
    ],
)
def test_bad_values_reject_the_record_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(RecordError) as info:
        prepare({**PERSON, field: value}, "crm", DEFAULT_CONFIG)
    assert info.value.field == field
    assert value not in str(info.value)  # no PII in the message


def test_scores_separate_typos_from_strangers() -> None:
    scorer = Scorer(DEFAULT_MODEL)
    base = prepare(PERSON, "crm", DEFAULT_CONFIG).compared()
    typo = prepare(
        {**PERSON, "first_name": "Margret", "address": "12 Pinkerton Cct"}, "crm", DEFAULT_CONFIG
    ).compared()
    swapped = prepare(
        {**PERSON, "first_name": "Thornbury", "last_name": "Margaret"}, "crm", DEFAULT_CONFIG
    ).compared()
    stranger = prepare(
        {
            **PERSON,
            "first_name": "Kevin",
            "last_name": "Thorne",
            "date_of_birth": "1990-01-02",
            "address": "7 Wallaby Place",
        },
        "crm",
        DEFAULT_CONFIG,
    ).compared()
    assert scorer.score(base, typo).probability >= DEFAULT_MODEL.match_probability
    assert scorer.score(base, swapped).probability >= DEFAULT_MODEL.match_probability
    assert scorer.score(base, swapped).swapped
    assert scorer.score(base, stranger).probability < DEFAULT_MODEL.review_probability


def test_linker_applies_rules_in_order_within_a_batch() -> None:
    records = [
        prepare({**PERSON, "external_id": "a", "email": "m.t@gmail.com"}, "crm", DEFAULT_CONFIG),
        prepare({"external_id": "b", "email": "MT+shop@gmail.com"}, "shop", DEFAULT_CONFIG),
        prepare({**PERSON, "external_id": "c", "first_name": "Margret"}, "pos", DEFAULT_CONFIG),
        prepare(
            {"external_id": "d", "first_name": "Zed", "last_name": "Quill"}, "pos", DEFAULT_CONFIG
        ),
        prepare({**PERSON, "external_id": "a"}, "crm", DEFAULT_CONFIG),
    ]
    decisions = Linker(DEFAULT_CONFIG).decide(records, KnownState())
    assert [d.rule for d in decisions] == ["new", "email", "probabilistic", "new", "identity"]
    owners = [d.customer_id for d in decisions]
    assert owners[0] == owners[1] == owners[2] == owners[4] != owners[3]
    assert decisions[4].duplicate_of == 0


def test_linker_stops_at_the_identity_limit() -> None:
    config = IdentityConfig(max_identities_per_customer=2)
    records = [
        prepare({"external_id": str(i + 1), "email": "same@corp.com"}, "crm", config)
        for i in range(4)
    ]
    decisions = Linker(config).decide(records, KnownState())
    # Overflow records stand alone, each flagged for review against the full profile.
    assert [d.rule for d in decisions] == ["new", "email", "new", "new"]
    assert len({d.customer_id for d in decisions}) == 3
    for overflow in decisions[2:]:
        assert overflow.review is not None
        assert overflow.review.reason == "identity_limit"
        assert overflow.review.candidate_customer_id == decisions[0].customer_id


def test_pair_metrics_on_a_hand_made_example() -> None:
    # Truth: {1,2,3} and {4,5}; predicted: {1,2}, {3}, {4,5,6} with 6 a singleton in truth.
    truth = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "c"}
    predicted = {1: "x", 2: "x", 3: "y", 4: "z", 5: "z", 6: "z"}
    metrics = pair_metrics(predicted, truth)
    # Predicted pairs: 12, 45, 46, 56 (4); true pairs: 12, 13, 23, 45 (4); correct: 12, 45.
    assert (metrics.true_positives, metrics.predicted_pairs, metrics.true_pairs) == (2, 4, 4)
    assert metrics.precision == metrics.recall == metrics.f1 == 0.5
    assert pair_metrics({uuid.uuid4(): 1}, {}).f1 == 1.0


def test_a_stranger_with_the_same_surname_and_a_birth_date_a_digit_off_is_not_merged() -> None:
    """The failure the raw-weight linker had on names-and-birth-date data: a common
    surname, a birth date one digit off (scored as agreement), a different first name."""
    records = [
        prepare(
            {"external_id": "1", "first_name": "Frank", "last_name": "Mueller",
             "date_of_birth": "1967-09-27"},
            "crm",
            DEFAULT_CONFIG,
        ),
        prepare(
            {"external_id": "2", "first_name": "Jochen", "last_name": "Mueller",
             "date_of_birth": "1967-09-28"},
            "crm",
            DEFAULT_CONFIG,
        ),
    ]  # fmt: skip
    decisions = Linker(DEFAULT_CONFIG).decide(records, KnownState())
    assert [d.rule for d in decisions] == ["new", "new"]
    scored = Scorer(DEFAULT_MODEL).score(records[0].compared(), records[1].compared())
    assert scored.levels == {
        "first_name": "else",
        "last_name": "exact",
        "date_of_birth": "one edit",
    }
    assert scored.vetoed
    assert scored.probability < DEFAULT_MODEL.review_probability


def test_pairs_are_scored_before_clusters_form_so_one_link_cannot_chain_two_people() -> None:
    """A and B disagree on everything but the name; C has A's birth date and B's address.
    Record by record C joined A, and then B joined C: one customer of two people."""
    person = {"first_name": "Ivo", "last_name": "Kranz"}
    a = {
        **person,
        "date_of_birth": "1971-02-03",
        "address": "1 Elm Street",
        "city": "Bega",
        "postcode": "2550",
    }
    b = {
        **person,
        "date_of_birth": "1980-06-15",
        "address": "7 Oak Road",
        "city": "Perth",
        "postcode": "6000",
    }
    c = {**person, "date_of_birth": "1971-02-03", "address": "7 Oak Road", "city": "Perth",
         "postcode": "6000"}  # fmt: skip
    records = [
        prepare({"external_id": key, **values}, "crm", DEFAULT_CONFIG)
        for key, values in (("a", a), ("c", c), ("b", b))
    ]
    scorer = Scorer(DEFAULT_MODEL.model_copy(update={"match_probability": 0.9}))
    a_c = scorer.score(records[0].compared(), records[1].compared()).probability
    assert a_c >= 0.9  # a match on its own
    decisions = Linker(DEFAULT_CONFIG, scorer).decide(records, KnownState())
    owner = {d.record.external_id: d.customer_id for d in decisions}
    assert owner["c"] == owner["b"] != owner["a"]
    review = decisions[1].review
    assert review is not None
    assert review.reason == "conflict"
    assert review.candidate_customer_id == owner["a"]


@pytest.mark.parametrize(
    ("raw", "key"),
    [("1967-9-7", "19670907"), ("1967/09/27", "19670927"), ("1967.9.27", "19670927")],
)
def test_birth_dates_without_leading_zeros_are_read_not_rejected(raw: str, key: str) -> None:
    record = prepare({**PERSON, "date_of_birth": raw}, "crm", DEFAULT_CONFIG)
    assert record.date_of_birth == key
    assert record.values["date_of_birth"] == f"{key[:4]}-{key[4:6]}-{key[6:]}"


def test_golden_values_as_a_full_sort_would_choose() -> None:
    """Golden values skip the sort when every observation shares a source and a time;
    whatever the mix, they are those of the most trusted source, newest first, as a
    stable sort of all of them gives."""
    import random
    from datetime import UTC, datetime, timedelta

    from gateway.db.models import as_utc
    from gateway.identity.survivorship import GOLDEN_FIELDS, Observation, golden_values

    config = IdentityConfig(source_priority=("crm",))
    rank = {"crm": 0}
    base = datetime(2026, 1, 1, tzinfo=UTC)
    times = [base, base + timedelta(seconds=1), base.replace(tzinfo=None), base]
    owner, other = uuid.uuid4(), uuid.uuid4()
    chooser = random.Random(7)
    for _ in range(500):
        observations = [
            Observation(
                chooser.choice(GOLDEN_FIELDS),
                chooser.choice(["a@x.io", "b@x.io", "Ann", "Bo"]),
                chooser.choice(["crm", "shop", "crm"]),
                chooser.choice(times),
            )
            for _ in range(chooser.randint(0, 6))
        ]
        owners = {"b@x.io": other}
        ordered = sorted(
            observations,
            key=lambda o: (rank.get(o.source, 1), -(as_utc(o.observed_at) - base).total_seconds()),
        )
        expected: dict[str, str | None] = dict.fromkeys(GOLDEN_FIELDS)
        for o in ordered:
            if expected[o.name] is None and not (o.name == "email" and o.value == "b@x.io"):
                expected[o.name] = o.value
        assert golden_values(owner, observations, config, owners) == expected

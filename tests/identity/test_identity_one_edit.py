"""The one-edit name level (Meyer and Myer: one letter dropped, Jaro-Winkler only 0.865),
and models stored before it, which still load and score as they did."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.identity import DEFAULT_CONFIG, DEFAULT_MODEL, LinkageModel, Resolver, prepare
from gateway.identity.scoring.comparison import Scorer
from gateway.identity.scoring.levels import BY_FIELD
from gateway.identity.scoring.model import prior_levels
from gateway.identity.scoring.model_store import ModelStore
from gateway.identity.scoring.training import check
from tests.conftest import create_postgres_database, drop_postgres_database

ANNA = {"first_name": "Anna", "last_name": "Meyer", "date_of_birth": "1950-02-11"}


def _compared(**row: str) -> tuple[str | None, ...]:
    return prepare({"external_id": "p1", **row}, "crm", DEFAULT_CONFIG).compared()


def _legacy_model() -> LinkageModel:
    """A model as stored before the one-edit level: names on the Jaro-Winkler ladder."""
    names = {
        field: prior_levels(BY_FIELD[field].legacy[0]) for field in ("first_name", "last_name")
    }
    return LinkageModel(comparisons={**LinkageModel().comparisons, **names})


@pytest.mark.parametrize(("left", "right"), [("meyer", "myer"), ("mary", "mray")])
def test_one_letter_dropped_or_two_swapped_is_one_edit(left: str, right: str) -> None:
    comparison = BY_FIELD["last_name"]
    assert comparison.levels[comparison.level(left, right)].label == "one edit"


def test_a_one_edit_surname_with_the_same_first_name_and_birth_date_is_a_match() -> None:
    score = Scorer(DEFAULT_MODEL).score(
        _compared(**ANNA), _compared(**{**ANNA, "last_name": "Myer"})
    )
    assert score.levels["last_name"] == "one edit"
    assert not score.vetoed
    assert score.probability >= DEFAULT_MODEL.match_probability


def test_a_one_edit_surname_with_another_first_name_and_birth_date_is_not() -> None:
    other = _compared(first_name="Klaus", last_name="Myer", date_of_birth="1971-09-30")
    score = Scorer(DEFAULT_MODEL).score(_compared(**ANNA), other)
    assert score.levels["last_name"] == "one edit"
    assert score.vetoed
    assert score.probability < DEFAULT_MODEL.review_probability


def test_a_model_without_the_level_round_trips_and_scores_as_before() -> None:
    legacy = _legacy_model()
    loaded = LinkageModel.from_splink(legacy.to_splink())
    labels = [p.label for p in loaded.levels_of("last_name")]
    assert labels == ["exact", "jaro-winkler >= 0.92", "jaro-winkler >= 0.88", "else"]
    score = Scorer(loaded).score(_compared(**ANNA), _compared(**{**ANNA, "last_name": "Myer"}))
    # As the scorer had it: Meyer and Myer are "else" on that ladder (0.865 < 0.88).
    assert score.levels["last_name"] == "else"
    expected = (
        math.log2(1e-4 / (1 - 1e-4))
        + math.log2(0.85 / 0.01)  # first name exact
        + math.log2(0.08 / 0.988)  # surname else
        + math.log2(0.85 / 0.00005)  # birth date exact
    )
    assert score.weight == pytest.approx(expected)


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        url = create_postgres_database("gateway_identity_one_edit")
        upgrade(url)
        yield url
        drop_postgres_database(url)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}"
        upgrade(url)
        yield url


@pytest.fixture
async def sessions(fresh_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(fresh_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_imports_link_a_one_edit_surname_only_with_the_rest_agreeing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    resolver = Resolver(sessions)
    anna = await resolver.link_one({"external_id": "a1", **ANNA}, "crm")
    typo = await resolver.link_one({"external_id": "a2", **ANNA, "last_name": "Myer"}, "crm")
    assert typo.customer_id == anna.customer_id
    klaus = await resolver.link_one(
        {
            "external_id": "a3",
            "first_name": "Klaus",
            "last_name": "Myer",
            "date_of_birth": "1971-09-30",
        },
        "crm",
    )
    assert klaus.new_customer
    assert klaus.customer_id != anna.customer_id


async def test_a_model_stored_before_the_level_still_links_as_it_did(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Stored in its old format (no one-edit level in its Splink settings).
    stored = await ModelStore(sessions).save(_legacy_model().model_copy(update={}))
    settings = stored.to_splink()
    last = next(c for c in settings["comparisons"] if c["output_column_name"] == "last_name")
    assert "one edit" not in [level["label_for_charts"] for level in last["comparison_levels"]]
    loaded = await ModelStore(sessions).get()
    assert [p.label for p in loaded.levels_of("first_name")][1] == "jaro-winkler >= 0.92"
    resolver = Resolver(sessions)
    anna = await resolver.link_one({"external_id": "a1", **ANNA}, "crm")
    typo = await resolver.link_one({"external_id": "a2", **ANNA, "last_name": "Myer"}, "crm")
    assert typo.new_customer  # the old ladder calls Meyer and Myer different names
    assert typo.customer_id != anna.customer_id


def test_a_different_surname_beside_no_first_name_is_not_evidence_enough() -> None:
    """Only a birth date in common (strangers born the same day): a missing first name
    agrees with nothing, so the differing surname vetoes an automatic merge."""
    haas = _compared(last_name="Haas", date_of_birth="1965-02-09")
    mueller = _compared(last_name="Mueller", date_of_birth="1965-02-09")
    score = Scorer(DEFAULT_MODEL).score(haas, mueller)
    assert score.levels == {"last_name": "else", "date_of_birth": "exact"}
    assert score.vetoed


def test_training_takes_lambda_down_to_what_the_random_pairs_allow() -> None:
    """Among random pairs a share λ·m agree exactly on the birth date because they are
    matches: a λ that makes that more than the share that agrees at all is overstated."""
    fields = ("first_name", "last_name", "date_of_birth")
    model = LinkageModel(
        probability_two_random_records_match=0.01,
        comparisons={field: prior_levels(BY_FIELD[field]) for field in fields},
    )
    checked, notes = check(model, model.to_splink())
    dob = model.comparisons["date_of_birth"][0]
    assert checked.probability_two_random_records_match == pytest.approx(dob.u / dob.m / 2)
    assert any(note.startswith("λ = 0.01 is more than the random pairs allow") for note in notes)
    # The exact birth date's u keeps the random pairs that are not matches: half.
    assert checked.comparisons["date_of_birth"][0].u > dob.u / 3

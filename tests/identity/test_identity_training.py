"""Training the linkage model (Splink on DuckDB), its sanity checks, its stored versions
on Postgres and SQLite, and `gateway identity train` / `model` / `import` end to end."""

from __future__ import annotations

import asyncio
import csv
import logging
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.cli import main
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Identity
from gateway.identity import DEFAULT_CONFIG, LinkageModel, Resolver, pair_metrics, prepare
from gateway.identity.linkage.linker import KnownState, Linker
from gateway.identity.scoring.comparison import Scorer
from gateway.identity.scoring.model_store import ModelStore
from gateway.identity.scoring.training import TrainingReport, check, train
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.identity.identity_people import population

ROWS, TRUTH = population(people=600, duplicates=150)


@pytest.fixture(scope="module")
def trained() -> TrainingReport:
    records = [prepare(row, "crm", DEFAULT_CONFIG).comparable() for row in ROWS]
    return train(records, extra={"source": "crm"})


def test_training_estimates_what_separates_typos_from_strangers(trained: TrainingReport) -> None:
    model = trained.model
    assert set(model.comparisons) == {"first_name", "last_name", "date_of_birth"}
    assert not [n for n in trained.notes if "priors used instead" in n], trained.notes
    for levels in model.comparisons.values():
        assert levels[0].m > levels[0].u  # agreement is evidence for
        assert levels[-1].m < levels[-1].u  # the else level evidence against
    # 150 true pairs among 750 records: λ = 150 / (750 * 749 / 2) = 5.3e-4.
    assert 1.5e-4 < model.probability_two_random_records_match < 2e-3
    assert model.term_frequencies["last_name"]  # common surnames weigh less
    records = [prepare(row, "crm", DEFAULT_CONFIG) for row in ROWS]
    decisions = Linker(DEFAULT_CONFIG, Scorer(model)).decide(records, KnownState())
    metrics = pair_metrics({d.record.external_id: d.customer_id for d in decisions}, TRUTH)
    assert metrics.precision >= 0.99, metrics
    assert metrics.recall >= 0.8, metrics


def _settings_with(levels: dict[str, list[tuple[float, float]]], rate: float) -> dict[str, Any]:
    model = LinkageModel(probability_two_random_records_match=1e-4)
    settings = model.to_splink()
    settings["probability_two_random_records_match"] = rate
    for entry in settings["comparisons"]:
        wanted = levels.get(entry["output_column_name"])
        if wanted:
            for level, (m, u) in zip(entry["comparison_levels"][1:], wanted, strict=True):
                level["m_probability"], level["u_probability"] = m, u
    return settings


def test_checks_put_the_priors_back_where_em_returned_nonsense() -> None:
    # First name: "else" more common between duplicates than between strangers.
    backwards = [(0.5, 0.01), (0.05, 0.002), (0.05, 0.002), (0.05, 0.005), (0.35, 0.1)]
    # Birth date: swapped day and month never seen among matches (m about nothing).
    unseen = [(0.8, 5e-5), (0.15, 0.001), (1e-9, 5e-5), (0.04, 0.002), (0.01, 0.99685)]
    settings = _settings_with({"first_name": backwards, "date_of_birth": unseen}, rate=0.9)
    checked, notes = check(LinkageModel.from_splink(settings), settings)
    prior = LinkageModel()
    assert checked.comparisons["first_name"] == prior.comparisons["first_name"]
    assert any(n.startswith("first_name:") and "priors used instead" in n for n in notes)
    swapped = checked.comparisons["date_of_birth"][2]
    assert swapped.m > 1e-3  # the prior's m, renormalised with the trained ones
    assert checked.comparisons["date_of_birth"][0].m == pytest.approx(0.8 / (1 - 1e-9 + 0.01))
    assert (
        checked.probability_two_random_records_match == prior.probability_two_random_records_match
    )
    assert any("λ" in n for n in notes)


def test_splink_scores_pairs_with_the_stored_json_as_the_gateway_does(
    trained: TrainingReport,
) -> None:
    """The stored model is Splink's settings format: Splink itself, given it and the same
    records, gives every pair the probability the gateway's scorer gives it."""
    import duckdb
    from splink import DuckDBAPI
    from splink import Linker as SplinkLinker

    records = [prepare(row, "crm", DEFAULT_CONFIG) for row in ROWS]
    settings = trained.model.to_splink()
    settings["blocking_rules_to_generate_predictions"] = ['l."date_of_birth" = r."date_of_birth"']
    columns: dict[str, list[Any]] = {"unique_id": list(range(len(records)))}
    for name in ("first_name", "last_name", "date_of_birth"):
        columns[name] = [getattr(r, name) for r in records]
    api = DuckDBAPI(connection=duckdb.connect(":memory:"))
    splink = SplinkLinker(api.register(columns), settings, log_level=logging.ERROR)
    predicted = splink.inference.predict().as_record_list()
    assert len(predicted) > 100
    scorer = Scorer(trained.model)
    compared = 0
    for row in predicted:
        ours = scorer.score(
            records[row["unique_id_l"]].compared(), records[row["unique_id_r"]].compared()
        )
        if ours.swapped:
            continue  # the gateway's own addition: Splink compares names in place only
        compared += 1
        assert math.isclose(ours.weight, row["match_weight"], abs_tol=1e-6), row
    assert compared > 100


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own: an active model changes how everything links."""
    if request.param == "postgres":
        url = create_postgres_database("gateway_identity_model")
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


PAIR = [
    {
        "external_id": "a1",
        "first_name": "Ilse",
        "last_name": "Quandt",
        "date_of_birth": "1950-02-11",
    },
    {
        "external_id": "a2",
        "first_name": "Ilse",
        "last_name": "Quandt",
        "date_of_birth": "1950-02-17",
    },
]


async def test_versions_are_stored_and_the_linker_uses_the_active_one(
    sessions: async_sessionmaker[AsyncSession], trained: TrainingReport
) -> None:
    store = ModelStore(sessions)
    assert (await store.get()).version is None  # nothing stored: the priors
    strict = await store.save(trained.model.model_copy(update={"match_probability": 0.999999}))
    probability = (
        Scorer(strict)
        .score(*(prepare(row, "x", DEFAULT_CONFIG).compared() for row in PAIR))
        .probability
    )
    assert strict.review_probability < probability < strict.match_probability
    first = await Resolver(sessions).link_one(PAIR[0], "crm")
    second = await Resolver(sessions).link_one(PAIR[1], "crm")
    assert second.new_customer
    assert second.review is not None
    assert second.review.score == pytest.approx(probability)

    lenient = await store.with_thresholds(probability * 0.99, 0.3)
    assert lenient.version == (strict.version or 0) + 1
    versions = await store.versions()
    assert [(v.version, v.active) for v in versions] == [
        (strict.version, False),
        (lenient.version, True),
    ]
    # One digit off both: a match under the lenient version, with either of the two; and
    # then the two stored customers agree as wholes (every pair across them is a match
    # now), so the linker folds them into one.
    third = await Resolver(sessions).link_one(
        {**PAIR[1], "external_id": "a3", "date_of_birth": "1950-02-14"}, "crm"
    )
    assert third.rule == "probabilistic"
    assert third.score is not None
    assert third.score > lenient.match_probability
    assert third.merged
    assert set(third.merged) | {third.customer_id} == {
        first.customer_id,
        second.customer_id,
    }
    async with sessions() as session:
        owners = set(
            await session.scalars(
                select(Identity.customer_id).where(Identity.external_id.in_(["a1", "a2", "a3"]))
            )
        )
    assert owners == {third.customer_id}

    await store.activate(strict.version or 0)
    assert (await store.get()).version == strict.version
    fourth = await Resolver(sessions).link_one(
        {**PAIR[1], "external_id": "a4", "date_of_birth": "1950-02-18"}, "crm"
    )
    assert fourth.new_customer
    assert fourth.review is not None


def _write(rows: list[dict[str, str]], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_train_then_import_from_the_command_line(fresh_url: str, tmp_path: Path) -> None:
    path = _write(ROWS, tmp_path / "people.csv")
    runner = CliRunner()
    trained = runner.invoke(
        main, ["identity", "train", str(path), "--source", "crm", "--database-url", fresh_url]
    )
    assert trained.exit_code == 0, trained.output
    assert "trained on 750 records (0 rejected)" in trained.output
    assert "stored as version 1 (active)" in trained.output
    shown = runner.invoke(main, ["identity", "model", "--database-url", fresh_url])
    assert shown.exit_code == 0, shown.output
    assert "version 1 (active)" in shown.output
    assert "date_of_birth" in shown.output
    assert "day and month swapped" in shown.output
    changed = runner.invoke(
        main,
        ["identity", "model", "--match-probability", "0.98", "--database-url", fresh_url],
    )
    assert changed.exit_code == 0, changed.output
    assert "stored as version 2 (active)" in changed.output
    assert "merge from probability 0.98" in changed.output
    refused = runner.invoke(
        main,
        ["identity", "model", "--review-probability", "0.99", "--database-url", fresh_url],
    )
    assert refused.exit_code == 2
    assert "review" in refused.output

    imported = runner.invoke(
        main, ["import", str(path), "--source", "crm", "--database-url", fresh_url]
    )
    assert imported.exit_code == 0, imported.output

    async def clusters() -> dict[str, str]:
        engine = create_engine(fresh_url)
        async with create_sessionmaker(engine)() as session:
            rows = await session.execute(select(Identity.external_id, Identity.customer_id))
            found = {external_id: str(owner) for external_id, owner in rows}
        await engine.dispose()
        return found

    metrics = pair_metrics(asyncio.run(clusters()), TRUTH)
    assert metrics.precision >= 0.99, metrics
    assert metrics.recall >= 0.8, metrics


def test_training_refuses_too_little_to_learn_from(fresh_url: str, tmp_path: Path) -> None:
    path = _write(ROWS[:20], tmp_path / "few.csv")
    result = CliRunner().invoke(
        main, ["identity", "train", str(path), "--source", "crm", "--database-url", fresh_url]
    )
    assert result.exit_code == 1
    assert "too few records to train on (20; at least 50)" in result.output

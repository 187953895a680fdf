"""A stored score model is loaded only if this deployment signed it for its row: a row
rewritten in the database (a pickle that runs code, an altered or an unsigned model,
a sealed model copied onto another row) is refused and nothing in it runs. The build
goes on without it and trains a new one (models stored before sealing are unsigned);
a refresh, which has to use the build's model, stops and says to run the build. The
commands that seal or load models refuse the built-in (public) erasure key, as
`gateway serve` does, unless run for a local demo."""

from __future__ import annotations

import asyncio
import logging
import pickle
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway.db.migrate import upgrade
from gateway.db.score_models import ScoreModel
from gateway.scores.build import build
from gateway.scores.model_seal import UntrustedModel, model_key, seal, unseal
from gateway.scores.refresh import refresh
from gateway.scores.store import ScoreStore, StoredModel
from gateway.settings import BUILTIN_ERASURE_KEY
from tests.scores.conftest import NOW, TEST_MODEL_KEY
from tests.test_cli import run

SECRET = "an-erasure-key-of-our-own-0123456789"


class _Payload:
    """What an attacker with write access to the database would store: unpickling it
    creates a file (any code could run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


async def _active(store: ScoreStore) -> StoredModel:
    found = await store.active_model()
    assert found is not None
    return found


async def _set(store: ScoreStore, version: str, **values: object) -> None:
    async with store._sessions.begin() as session:
        await session.execute(
            update(ScoreModel).where(ScoreModel.version == version).values(**values)
        )


async def test_a_tampered_model_is_not_run_and_the_build_trains_another(
    store: ScoreStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = await build(store, horizon=30, now=NOW)
    assert first.model_version != "none"
    stored = await _active(store)
    marker = tmp_path / "ran"
    # A pickle that runs code, then an unsigned model (as stored before sealing), then
    # the real one with one byte of its body changed.
    unsigned = pickle.dumps(store.unseal(stored))
    sealed = stored.estimator
    forgeries = (pickle.dumps(_Payload(marker)), unsigned, sealed[:-1] + bytes([sealed[-1] ^ 1]))
    serving = first.model_version
    for n, forged in enumerate(forgeries, start=1):
        await _set(store, serving, estimator=forged)
        later = NOW + timedelta(seconds=n)
        with pytest.raises(UntrustedModel, match=r"run `gateway scores build`"):
            await refresh(store, now=later)
        # The nightly build (no --retrain) goes on: warns, and trains a new model.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gateway.scores"):
            rebuilt = await build(store, horizon=30, now=later)
        assert f"refused model {serving}" in rebuilt.decision
        assert rebuilt.model_version not in ("none", serving)
        assert f"score model {serving} is unsigned, altered" in caplog.text
        serving = rebuilt.model_version
        # What it stored loads again: the next build keeps it, a refresh uses it.
        kept = await build(store, horizon=30, now=later + timedelta(milliseconds=500))
        assert kept.decision == f"kept model {serving} (no --retrain)"
        await refresh(store, now=later + timedelta(milliseconds=600))
    assert not marker.exists()


async def test_a_sealed_model_copied_onto_another_row_is_refused(store: ScoreStore) -> None:
    await build(store, horizon=30, now=NOW)
    await build(store, horizon=30, now=NOW + timedelta(seconds=1), retrain=True)
    async with store._sessions() as session:
        rows = (await session.execute(select(ScoreModel.version, ScoreModel.estimator))).all()
    (first, first_sealed), (second, _) = sorted(rows)
    # The first model's sealed bytes on the second's row, made the one serving.
    async with store._sessions.begin() as session:
        await session.execute(update(ScoreModel).values(active=False))
    await _set(store, second, estimator=first_sealed, active=True)
    moved = await build(store, horizon=30, now=NOW + timedelta(seconds=2))
    assert f"refused model {second}" in moved.decision
    assert moved.model_version not in (first, second)


async def test_a_model_rows_horizon_or_evaluation_rewritten_is_refused(
    store: ScoreStore,
) -> None:
    version = (await build(store, horizon=30, now=NOW)).model_version
    evaluation = (await _active(store)).evaluation
    # Its evaluation rewritten: the refresh that would use it refuses it.
    await _set(store, version, evaluation=dict(evaluation, auc=0.99))
    with pytest.raises(UntrustedModel, match=version):
        await refresh(store, now=NOW + timedelta(seconds=1))
    # Its horizon rewritten: a 30-day model is not served as the 90-day one.
    await _set(store, version, evaluation=evaluation, horizon_days=90)
    ninety = await build(store, horizon=90, now=NOW + timedelta(seconds=2))
    assert f"refused model {version}" in ninety.decision


def test_the_seal_covers_the_rows_version_horizon_and_evaluation() -> None:
    row = StoredModel("hgb-1", 30, {"auc": 0.7, "window": [1, 2]}, b"")
    sealed = replace(
        row,
        estimator=seal(
            {"a": "model"},
            TEST_MODEL_KEY,
            version="hgb-1",
            horizon_days=30,
            evaluation=row.evaluation,
        ),
    )
    assert _unseal(sealed, TEST_MODEL_KEY) == {"a": "model"}
    for other in (
        replace(sealed, version="hgb-2"),
        replace(sealed, horizon_days=90),
        replace(sealed, evaluation={"auc": 0.71, "window": [1, 2]}),
    ):
        with pytest.raises(UntrustedModel, match="hgb-"):
            _unseal(other, TEST_MODEL_KEY)
    with pytest.raises(UntrustedModel):
        _unseal(sealed, model_key(SECRET))


def _unseal(row: StoredModel, key: bytes) -> object:
    return unseal(
        row.estimator,
        key,
        version=row.version,
        horizon_days=row.horizon_days,
        evaluation=row.evaluation,
    )


async def test_another_deployments_key_does_not_open_a_model(store: ScoreStore) -> None:
    first = await build(store, horizon=30, now=NOW)
    other = ScoreStore(store._sessions, model_key("another deployment's erasure key"))
    with pytest.raises(UntrustedModel):
        await refresh(other, now=NOW + timedelta(seconds=1))
    rebuilt = await build(other, horizon=30, now=NOW + timedelta(seconds=2))
    assert f"refused model {first.model_version}" in rebuilt.decision


@pytest.mark.parametrize("command", ["build", "refresh"])
def test_the_scores_commands_refuse_the_public_erasure_key(tmp_path: Path, command: str) -> None:
    """A cron job without the secret would trust a model anyone could have sealed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    for env in ({}, {"GATEWAY_INSECURE_DEMO": "true"}):  # as for serve: the flag only
        refused = run("scores", command, "--database-url", url, env=env)
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert "GATEWAY_ERASURE_KEY is the built-in public value" in lines[0]
        assert "--insecure-demo" in lines[0]
        assert BUILTIN_ERASURE_KEY not in refused.stderr + refused.stdout
    # Past the key, on an empty database: a build scores no one, a refresh wants a build.
    expected = 0 if command == "build" else 1
    for args, env in (((), {"GATEWAY_ERASURE_KEY": SECRET}), (("--insecure-demo",), {})):
        ran = run("scores", command, "--database-url", url, *args, env=env)
        assert ran.returncode == expected, ran.stderr
        assert "built-in" not in ran.stderr


async def test_the_nightly_build_goes_on_past_a_model_stored_before_sealing(
    store: ScoreStore,
) -> None:
    """After the upgrade every stored model is unsigned: `gateway scores build` (no
    --retrain) still scores everyone, with a new model; `refresh` says to run it."""
    keyed = ScoreStore(store._sessions, model_key(SECRET))
    first = await build(keyed, horizon=30, now=NOW)
    await _set(
        store, first.model_version, estimator=pickle.dumps(keyed.unseal(await _active(keyed)))
    )
    url = store._sessions.kw["bind"].url.render_as_string(hide_password=False)
    env = {"GATEWAY_ERASURE_KEY": SECRET}
    refused = await asyncio.to_thread(run, "scores", "refresh", "--database-url", url, env=env)
    assert refused.returncode == 1, refused.stderr
    assert "run `gateway scores build`" in refused.stderr
    built = await asyncio.to_thread(run, "scores", "build", "--database-url", url, env=env)
    assert built.returncode == 0, built.stderr
    assert f"refused model {first.model_version}" in built.stdout
    assert f"score model {first.model_version} is unsigned" in built.stderr
    assert SECRET not in built.stdout + built.stderr
    again = await asyncio.to_thread(run, "scores", "refresh", "--database-url", url, env=env)
    assert again.returncode == 0, again.stderr

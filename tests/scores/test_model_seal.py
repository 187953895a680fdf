"""A stored score model is loaded only if this deployment signed it: a row rewritten
in the database (a pickle that runs code, an altered or an unsigned model) is refused
with a clear error, and nothing in it runs."""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway.db.score_models import ScoreModel
from gateway.scores.build import build
from gateway.scores.model_seal import UntrustedModel, model_key
from gateway.scores.refresh import refresh
from gateway.scores.store import ScoreStore, StoredModel
from tests.scores.conftest import NOW


class _Payload:
    """What an attacker with write access to the database would store: unpickling it
    creates a file (any code could run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


async def _stored(store: ScoreStore) -> bytes:
    async with store._sessions() as session:
        found = await session.scalar(select(ScoreModel.estimator).where(ScoreModel.active))
    assert found is not None
    return found


async def _replace(store: ScoreStore, estimator: bytes) -> None:
    async with store._sessions.begin() as session:
        await session.execute(
            update(ScoreModel).where(ScoreModel.active).values(estimator=estimator)
        )


async def test_a_tampered_model_row_is_refused_and_runs_nothing(
    store: ScoreStore, tmp_path: Path
) -> None:
    first = await build(store, horizon=30, now=NOW)
    assert first.model_version != "none"
    sealed = await _stored(store)
    marker = tmp_path / "ran"
    later = NOW + timedelta(seconds=1)
    # A pickle that runs code, then an unsigned model (as stored before sealing), then
    # the real one with one byte of its body changed.
    unsigned = pickle.dumps(store.unseal(StoredModel(first.model_version, 30, {}, sealed)))
    for forged in (
        pickle.dumps(_Payload(marker)),
        unsigned,
        sealed[:-1] + bytes([sealed[-1] ^ 1]),
    ):
        await _replace(store, forged)
        with pytest.raises(UntrustedModel, match="unsigned or altered"):
            await build(store, horizon=30, now=later)
        with pytest.raises(UntrustedModel, match="scores build --retrain"):
            await refresh(store, now=later)
    assert not marker.exists()
    # Retraining replaces the refused model; what it stores loads again.
    await _replace(store, pickle.dumps(_Payload(marker)))
    retrained = await build(store, horizon=30, now=later, retrain=True)
    assert retrained.model_version != first.model_version
    assert not marker.exists()
    kept = await build(store, horizon=30, now=later + timedelta(seconds=1))
    assert "kept model" in kept.decision


async def test_another_deployments_key_does_not_open_a_model(store: ScoreStore) -> None:
    await build(store, horizon=30, now=NOW)
    other = ScoreStore(store._sessions, model_key("another deployment's erasure key"))
    with pytest.raises(UntrustedModel):
        await build(other, horizon=30, now=NOW + timedelta(seconds=1))

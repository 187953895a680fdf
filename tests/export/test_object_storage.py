"""An export into a non-local fsspec filesystem (``memory://``, what an object store looks
like through fsspec: no real directories, a move that is a copy then a delete), end to
end: written, resumed after a run that died, incremental, reconciled, read back; and
its uploads run beside the event loop, not on it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import fsspec
import pyarrow.parquet as pq
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.export.pseudonymise import Pseudonymiser
from gateway.export.service import Exporter, ExportError
from gateway.export.store import ExportStore
from gateway.export.verify import reconcile
from tests.export.gated import Gate, gated
from tests.export.people import add_person

KEY = b"export-test-key-0123456789"
__all__ = ["gated"]  # the fixture


class _Killed(Exception):
    pass


@pytest.fixture
def bucket() -> Iterator[str]:
    name = f"bucket-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}/exports"
    fsspec.filesystem("memory").rm(f"/{name}", recursive=True)


def _paths(bucket: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(bucket)
    return sorted(p.removeprefix(root + "/") for p in fs.find(root))


async def test_an_export_into_an_fsspec_store_is_complete_and_reconciles(
    engine: AsyncEngine, bucket: str
) -> None:
    people = [await add_person(engine) for _ in range(3)]
    finished: list[str] = []

    def die_after_two(stage: str) -> None:
        finished.append(stage)
        if len(finished) == 2:
            raise _Killed(stage)

    with pytest.raises(_Killed):
        await Exporter(engine, bucket, Pseudonymiser(KEY), checkpoint=die_after_two).run()
    # Died half way: no manifest, so no reader takes it for a finished run.
    assert not any(p.startswith("_manifests/") for p in _paths(bucket))

    report = await Exporter(engine, bucket, Pseudonymiser(KEY)).run()
    assert report.resumed
    paths = _paths(bucket)
    assert [p for p in paths if p.endswith(".tmp")] == []
    assert [p for p in paths if p.startswith("_manifests/")] == [f"_manifests/{report.run_id}.json"]
    assert not any(p.startswith("_runs/") for p in paths)
    # Every file the manifest lists is there, whole: pyarrow reads it through fsspec.
    fs, root = fsspec.core.url_to_fs(bucket)
    customers = [
        row
        for result in report.tables
        if result.table == "customers"
        for written in result.files
        for row in pq.read_table(f"{root}/{written.path}", filesystem=fs).to_pylist()
    ]
    assert {str(row["id"]) for row in customers} == {str(p.id) for p in people}

    found = await reconcile(bucket, ExportStore(engine))
    assert [r.line() for r in found if not r.ok] == []
    assert all(r.files > 0 for r in found if r.table in ("customers", "events"))

    # Incremental: one new person is the next run's only customer upsert.
    await add_person(engine)
    following = await Exporter(engine, bucket, Pseudonymiser(KEY)).run()
    assert not following.resumed
    upserts = {t.table: t.as_json()["upserts"] for t in following.tables}
    assert upserts["customers"] == 1
    found = await reconcile(bucket, ExportStore(engine))
    assert [r.line() for r in found if not r.ok] == []


async def test_a_url_no_filesystem_opens_is_a_clear_error(engine: AsyncEngine) -> None:
    with pytest.raises(ExportError, match="no filesystem opens nosuch://"):
        Exporter(engine, "nosuch://bucket/exports", Pseudonymiser(KEY))


async def test_an_upload_under_way_leaves_the_event_loop_free(
    engine: AsyncEngine, gated: tuple[str, Gate]
) -> None:
    target, gate = gated
    await add_person(engine)
    run = asyncio.ensure_future(Exporter(engine, target, Pseudonymiser(KEY)).run())
    # This coroutine runs while an upload waits at the gate: the loop is free (an upload
    # on the loop would hold it until the upload gave up, and the run would fail).
    deadline = time.monotonic() + 60
    while not gate.entered.is_set():
        assert time.monotonic() < deadline, "no upload started"
        assert not run.done(), run
        await asyncio.sleep(0.01)
    gate.open.set()
    report = await run
    assert report.rows > 0
    found = await reconcile(target, ExportStore(engine))
    assert [r.line() for r in found if not r.ok] == []

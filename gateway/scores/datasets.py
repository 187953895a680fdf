"""CDNOW, the public transaction data set ``gateway scores eval`` measures against.

It ships inside the ``lifetimes`` wheel on PyPI (``lifetimes/datasets/CDNOW_master.txt``:
23,570 customers who first bought in the first quarter of 1997, and every purchase
of theirs until the end of June 1998). pip downloads the wheel (no dependencies,
nothing installed) into a cache directory once and the file is read from the zip, as
``recs eval`` reads MovieLens.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from gateway.scores.ledger import Ledger, day_of, ledger_from
from gateway.wheel_data import DatasetError as DatasetError
from gateway.wheel_data import downloaded_wheel

MEMBERS = {
    "master": "lifetimes/datasets/CDNOW_master.txt",
    "sample": "lifetimes/datasets/CDNOW_sample.txt",
}


def cdnow(cache_dir: Path, *, which: str = "master") -> Ledger:
    """CDNOW's purchases (``master``: all 23,570 customers; ``sample``: 2,357 of them)."""
    with zipfile.ZipFile(downloaded_wheel(cache_dir, "lifetimes")) as wheel:
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

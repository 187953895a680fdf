"""wrk for the benchmarks: a run's throughput and latency percentiles, and the Lua
scripts that cycle through request bodies or GET paths."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.support.access import BENCH_KEY


def run_wrk(url: str, lua: str, connections: int, duration: int, workdir: Path) -> dict[str, float]:
    script = workdir / f"script{abs(hash(lua))}.lua"
    script.write_text(lua)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        figures[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def lua_posts(bodies: list[dict[str, Any]]) -> str:
    """A wrk script cycling through these JSON bodies."""
    encoded = ",\n".join("[==[" + json.dumps(b) + "]==]" for b in bodies)
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer {BENCH_KEY}"
local bodies = {{ {encoded} }}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def lua_gets(paths: list[str]) -> str:
    """A wrk script cycling through these GET paths (persisted queries by their hash)."""
    encoded = ",\n".join("[==[" + p + "]==]" for p in paths)
    return f"""
wrk.method = "GET"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer {BENCH_KEY}"
local paths = {{ {encoded} }}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format(nil, paths[i])
end
"""

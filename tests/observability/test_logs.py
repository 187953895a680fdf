"""Logs an operator can use during an outage: JSON with request ids from every worker
of `gateway serve --workers 2`, and one traceback per kind of failure and interval
instead of one per request (issue #17: 26 MB in a 20 s outage)."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.db.migrate import upgrade
from gateway.observability.log_repeats import RepeatSummary
from gateway.observability.logs import JsonFormatter
from tests import error_log
from tests.conftest import REPO
from tests.served import free_port, wait_until_served


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def logged(clock: FakeClock) -> Iterator[tuple[logging.Logger, io.StringIO, RepeatSummary]]:
    """A logger writing JSON through the summarising filter, as configure_logging wires it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    repeats = RepeatSummary(handler.handle, interval_s=10.0, clock=clock)
    handler.addFilter(repeats)
    log = logging.getLogger("gateway.test_repeats")
    log.addHandler(handler)
    log.propagate = False
    try:
        yield log, stream, repeats
    finally:
        log.removeHandler(handler)
        log.propagate = True


def _fail(log: logging.Logger, customer: int) -> None:
    try:
        raise ConnectionError("Connection lost")
    except ConnectionError:
        log.exception("unexpected error in %s", "profile", extra={"customer_id": customer})


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.logs_errors(r"gateway\.test_repeats: unexpected error in profile")
def test_a_thousand_identical_failures_write_one_traceback_and_a_count(
    logged: tuple[logging.Logger, io.StringIO, RepeatSummary], clock: FakeClock
) -> None:
    log, stream, repeats = logged
    seen_before = len(error_log._entries)
    _fail(log, 0)
    one = len(stream.getvalue())
    for customer in range(1, 1000):
        clock.now += 0.005  # 1,000 failures in 5 s
        _fail(log, customer)
    # Bounded: the first entry, nothing for the 999 others until the interval ends.
    assert len(stream.getvalue()) == one
    clock.now += 5.1
    repeats.flush_due()
    lines = _lines(stream)
    assert len(lines) == 2
    first, summary = lines
    assert "ConnectionError: Connection lost" in str(first["exception"])
    assert first["customer_id"] == 0
    assert summary["repeated"] == 999
    assert "exception" not in summary
    assert summary["message"] == ("unexpected error in %s (repeated 999 times in the last 10 s)")
    assert summary["level"] == "ERROR"
    assert summary["exception_type"] == "ConnectionError"
    assert len(stream.getvalue()) < 3 * one
    # The run-wide ERROR check still sees the failures (the first one at least).
    assert len(error_log._entries) - seen_before >= 1

    # The next one opens a new window, written whole.
    _fail(log, 1000)
    assert len(_lines(stream)) == 3
    assert "exception" in _lines(stream)[-1]


@pytest.mark.logs_errors(r"gateway\.test_repeats: ")
def test_different_failures_are_counted_apart_and_flushed_at_shutdown(
    logged: tuple[logging.Logger, io.StringIO, RepeatSummary], clock: FakeClock
) -> None:
    log, stream, repeats = logged
    for _ in range(3):
        _fail(log, 1)
        try:
            _ = {"present": 1}["missing"]  # another exception type at another place
        except KeyError:
            log.exception("unexpected error in %s", "profile")
        log.error("cache write failed for %s", "customer")  # no traceback: by template
        log.warning("webhook refused")  # a plain warning: every one written
    assert len(_lines(stream)) == 3 + 3
    clock.now += 1
    repeats.flush()  # shutdown: the counts so far, whatever the interval
    summaries = [line for line in _lines(stream) if "repeated" in line]
    assert sorted(str(s["message"]) for s in summaries) == [
        "cache write failed for %s (repeated 2 times in the last 1 s)",
        "unexpected error in %s (repeated 2 times in the last 1 s)",
        "unexpected error in %s (repeated 2 times in the last 1 s)",
    ]
    repeats.flush()
    assert len([line for line in _lines(stream) if "repeated" in line]) == 3


def test_a_failure_that_happens_once_writes_no_summary(
    logged: tuple[logging.Logger, io.StringIO, RepeatSummary], clock: FakeClock
) -> None:
    log, stream, repeats = logged
    log.error("one-off")
    clock.now += 60
    repeats.flush_due()
    repeats.flush()
    assert [line["message"] for line in _lines(stream)] == ["one-off"]


# --- every worker of `gateway serve --workers 2` ----------------------------------------


def _refused_webhook(base: str, request_id: str) -> int:
    """A webhook with a wrong signature: refused, and logged with the request's id."""
    with httpx.Client(timeout=10) as http:  # a new connection each: spread over the workers
        return http.post(
            f"{base}/webhooks/shopify",
            content=b"{}",
            headers={
                "x-request-id": request_id,
                "x-shopify-hmac-sha256": "d3Jvbmc=",
                "x-shopify-topic": "customers/update",
            },
        ).status_code


def test_every_worker_of_serve_logs_json_with_request_ids(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        PYTHONPATH=str(REPO),
        GATEWAY_DATABASE_URL=url,
        GATEWAY_ERASURE_KEY=secrets.token_urlsafe(24),
        GATEWAY_WEBHOOK_SECRETS=json.dumps({"shopify": "a-secret-of-the-test"}),
        GATEWAY_LOG_LEVEL="INFO",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    sent: list[str] = []
    try:
        wait_until_served(f"{base}/readyz", process)
        sent = [f"logs-test-{i}" for i in range(60)]
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda rid: _refused_webhook(base, rid), sent))
        assert set(statuses) == {401}
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    refused = [e for e in entries if e["message"] == "webhook refused"]
    assert sorted(e["request_id"] for e in refused) == sorted(sent)
    # Both workers started and logged (uvicorn's own lines), each in JSON.
    started = [e for e in entries if str(e["message"]).startswith("Started server process")]
    assert len({e["pid"] for e in started}) == 2, started
    assert all(e["logger"].startswith("uvicorn") for e in started)
    serving = {e["pid"] for e in refused}
    assert serving <= {e["pid"] for e in started}

"""The server log of the whole test run, checked: no ERROR with a traceback that no test
expected.

A bug that the gateway survives (a masked "Internal server error.", a failed
background task, an exception in a sample upstream) leaves only a log line with a
traceback; a test that looks at the answer alone passes. Every such entry logged in
this process is captured, whatever handlers the code configured (records are seen as
they are made, through the log-record factory), and attributed to the test running
then. A test that provokes one on purpose says so:

    @pytest.mark.logs_errors(r"gateway\\.graphql: unexpected error", ...)

each pattern a regular expression searched in ``"<logger>: <message>\\n<traceback>"``.
Any other entry fails the test it was logged in (at teardown, listing them); one logged
outside every test (a session fixture's teardown) fails the run.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

MARKER = "logs_errors"


@dataclass(frozen=True)
class Entry:
    logger: str
    message: str
    exception: str

    @property
    def text(self) -> str:
        return f"{self.logger}: {self.message}\n{self.exception}"

    def summary(self) -> str:
        last = self.exception.strip().splitlines()[-1] if self.exception.strip() else ""
        return f"{self.logger}: {self.message} ({last})"


_entries: list[Entry] = []
_lock = threading.Lock()
_claimed: list[range] = []  # the entries each test has been checked for
_expected = 0
_previous_factory = logging.getLogRecordFactory()


def _record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)
    if record.levelno >= logging.ERROR and record.exc_info and record.exc_info[0] is not None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call still shows its format string
            message = str(record.msg)
        # Formatted now: holding exc_info would keep every frame of the failure alive.
        text = "".join(traceback.format_exception(*record.exc_info))
        with _lock:
            _entries.append(Entry(record.name, message, text))
    return record


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*patterns): this test logs ERRORs with tracebacks on purpose; each entry "
        "must match one of the regular expressions",
    )
    logging.setLogRecordFactory(_record)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.setLogRecordFactory(_previous_factory)


def _since(start: int) -> list[Entry]:
    with _lock:
        return list(_entries[start:])


@pytest.fixture(autouse=True)
def _no_unexpected_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    global _expected
    with _lock:
        start = len(_entries)
    yield
    logged = _since(start)
    with _lock:
        _claimed.append(range(start, start + len(logged)))
    patterns = [p for m in request.node.iter_markers(MARKER) for p in m.args]
    unexpected = [e for e in logged if not any(re.search(p, e.text) for p in patterns)]
    _expected += len(logged) - len(unexpected)
    if unexpected:
        listed = "\n".join(f"  {e.summary()}" for e in unexpected)
        pytest.fail(
            f"{len(unexpected)} ERROR log entr{'y' if len(unexpected) == 1 else 'ies'} with a "
            f"traceback while this test ran (mark it @pytest.mark.{MARKER}(pattern) if it "
            f"provokes them on purpose):\n{listed}\n\nfirst traceback:\n"
            f"{unexpected[0].exception}",
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    claimed = {i for span in _claimed for i in span}
    outside = [e for i, e in enumerate(_since(0)) if i not in claimed]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"error log: {len(_entries)} ERROR entries with a traceback, {_expected} expected "
            f"by the tests that provoked them, {len(outside)} logged outside any test"
        )
    if outside:
        if reporter is not None:
            for entry in outside:
                reporter.write_line(f"  unexpected, outside any test: {entry.summary()}", red=True)
            reporter.write_line(outside[0].exception)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""The run-wide check of the server log (tests/error_log.py), run on small test files of
its own in a separate pytest process."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

LOGS = """
import logging
import threading

import pytest


def fail_quietly():
    try:
        {}["missing"]
    except KeyError:
        logging.getLogger("gateway.graphql").exception("unexpected error in a resolver")


def test_answer_looks_fine():
    fail_quietly()


@pytest.mark.logs_errors(r"gateway\\.graphql: unexpected error(.|\\n)*KeyError")
def test_provokes_it_on_purpose():
    fail_quietly()


def test_in_a_thread():
    worker = threading.Thread(target=fail_quietly)
    worker.start()
    worker.join()


def test_an_error_without_a_traceback_is_not_one():
    logging.getLogger("gateway").error("an upstream is down")


@pytest.fixture(scope="session")
def service():
    yield
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("gateway.app").exception("shutting down failed")


def test_uses_a_service_that_fails_at_its_end(service):
    pass
"""


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest('pytest_plugins = ["tests.error_log"]\n')
    return pytester


def test_tracebacks_logged_in_a_test_or_outside_every_test_fail_unless_expected(
    run: pytest.Pytester,
) -> None:
    """One pytest process (each costs seconds): four tests, one session fixture."""
    run.makepyfile(test_logs=LOGS)
    result = run.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, errors=2)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "*4 ERROR entries with a traceback, 1 expected*, 1 logged outside any test",
            "*unexpected, outside any test: gateway.app: shutting down failed*",
            "*ERROR at teardown of test_answer_looks_fine*",
            "*gateway.graphql: unexpected error in a resolver (KeyError: 'missing')*",
            "*ERROR at teardown of test_in_a_thread*",
        ]
    )

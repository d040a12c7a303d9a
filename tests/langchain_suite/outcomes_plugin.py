"""A pytest plugin that writes every test's outcome to a JSON-lines file, as it happens.

Loaded by ``judge.py`` with ``-p outcomes_plugin``; the file is named by the environment variable
``LCSUITE_OUTCOMES``. One JSON object a line, flushed at once, so that the lines written before a
crash or a hang survive it:

- ``{"event": "collected", "ids": [...]}``: the test ids collected;
- ``{"event": "collect_error", "id": ..., "message": ...}``: a file that could not be collected;
- ``{"event": "start", "id": ...}``: a test begins;
- ``{"event": "outcome", "id": ..., "outcome": ..., "when": ..., "message": ..., "longrepr": ...}``:
  a test ended, ``outcome`` one of passed, failed, error (setup or teardown failed), skipped,
  xfailed, xpassed;
- ``{"event": "finished"}``: pytest ended without crashing (an INTERNALERROR ends it too: then a
  test started has no outcome).

With ``LCSUITE_FAST_EXIT=1`` the process ends right after pytest (``os._exit``), skipping the
interpreter's shutdown, where nothing judges a test: joining langsmith's tracing thread, which
retries the hosted API for 11 s offline, and atexit handlers.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Generator
from typing import Any

import pytest

_reports: dict[str, list[pytest.TestReport]] = {}


def _write(**event: Any) -> None:
    with open(os.environ["LCSUITE_OUTCOMES"], "a", encoding="utf-8") as out:
        out.write(json.dumps(event) + "\n")


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    lines = str(report.longrepr).strip().splitlines()
    return lines[-1] if lines else ""


def _outcome(reports: list[pytest.TestReport]) -> tuple[str, pytest.TestReport]:
    """The test's outcome and the report that decided it (the first failure, else the call)."""
    for report in reports:
        if report.failed:
            if hasattr(report, "wasxfail"):
                return "xpassed", report  # strict xfail that passed
            return ("failed" if report.when == "call" else "error"), report
    for report in reports:
        if report.skipped:
            return ("xfailed" if hasattr(report, "wasxfail") else "skipped"), report
    call = next((r for r in reports if r.when == "call"), reports[-1])
    return ("xpassed" if hasattr(call, "wasxfail") else "passed"), call


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Formats a failure again if CPython < 3.11.8's ast.parse failed while pytest formatted it.

    Those keep the AST constructor's recursion depth per interpreter: an ast.parse nested in
    another (pytest reporting an unraisable exception from a finalizer that the garbage collector
    ran during pytest's parse of a source file) makes the outer one raise "SystemError: AST
    constructor recursion depth mismatch", an INTERNALERROR that would end the session. After a
    full collection (the finalizers have run), the same formatting succeeds.
    """
    try:
        return (yield)
    except SystemError as error:
        if "recursion depth mismatch" not in str(error):
            raise
        gc.collect()
        return pytest.TestReport.from_item_and_call(item, call)


def pytest_collection_finish(session: pytest.Session) -> None:
    _write(event="collected", ids=[item.nodeid for item in session.items])


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _write(event="collect_error", id=report.nodeid, message=_message(report))


def pytest_runtest_logstart(nodeid: str) -> None:
    _write(event="start", id=nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _reports.setdefault(report.nodeid, []).append(report)


def pytest_runtest_logfinish(nodeid: str) -> None:
    outcome, report = _outcome(_reports.pop(nodeid))
    failed = outcome in ("failed", "error", "xpassed")
    _write(
        event="outcome",
        id=nodeid,
        outcome=outcome,
        when=report.when,
        message=_message(report) if failed else "",
        longrepr=str(report.longrepr) if failed else "",
    )


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    _write(event="finished")
    if os.environ.get("LCSUITE_FAST_EXIT") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

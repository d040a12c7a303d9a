"""The judge of tests/langchain_suite: its import rewrite, its reasons, its crash and hang recovery
(on a small made-up suite; the real one runs in CI as `python tests/langchain_suite/judge.py`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from langchain_suite import judge

SOURCE = """\
from __future__ import annotations

from langchain_core.runnables import (
    Runnable,
    RunnableLambda as RL,
    RunnableConfig,
)
from langchain_core.runnables.base import RunnableParallel
from langchain_core.runnables.utils import Input


def f() -> None:
    from langchain_core.runnables.passthrough import RunnablePassthrough
"""


def test_the_rewrite_moves_only_the_given_names_and_keeps_line_numbers() -> None:
    names = {"RunnableLambda", "RunnableParallel", "RunnablePassthrough"}
    rewritten, count = judge.rewrite_imports(SOURCE, names)
    assert count == 3
    lines = rewritten.splitlines()
    assert len(lines) == len(SOURCE.splitlines())
    assert lines[2] == (
        "from langchain_core.runnables import Runnable, RunnableConfig; "
        "from fastlcel import RunnableLambda as RL"
    )
    assert lines[3:7] == [""] * 4
    assert lines[7] == "from fastlcel import RunnableParallel"
    assert lines[8] == "from langchain_core.runnables.utils import Input"
    assert lines[12] == "    from fastlcel import RunnablePassthrough"
    compile(rewritten, "rewritten", "exec")


def test_the_names_are_fastlcels_runnable_classes_but_runnable() -> None:
    names = judge.drop_in_names()
    assert {"RunnableLambda", "RunnableParallel", "RunnableSequence"} <= names
    assert "Runnable" not in names and "AddableDict" not in names


def test_a_failure_goes_to_the_first_reason_that_claims_it() -> None:
    reasons = [
        judge.Reason("generics", "", [], ["is not subscriptable"]),
        judge.Reason("tracing", "", ["test_a.py::test_trace[*]"], []),
    ]
    failed = {
        f"{judge.SUITE}/test_a.py::test_trace[x]": judge.Result("failed", "assert 0 == 1"),
        f"{judge.SUITE}/test_a.py::test_types": judge.Result("failed", "'X' is not subscriptable"),
        f"{judge.SUITE}/test_b.py::test_b": judge.Result("collection error", "test_b.py: boom"),
        f"{judge.SUITE}/test_a.py::test_other": judge.Result("failed", "assert 1 == 2"),
    }
    assert judge.classify(failed, reasons) == {
        "tracing": [f"{judge.SUITE}/test_a.py::test_trace[x]"],
        "generics": [f"{judge.SUITE}/test_a.py::test_types"],
        "collection error: test_b.py: boom": [f"{judge.SUITE}/test_b.py::test_b"],
        "unexplained": [f"{judge.SUITE}/test_a.py::test_other"],
    }


@pytest.mark.slow
def test_a_crash_and_a_hang_cost_one_test_each(tmp_path: Path) -> None:
    suite = tmp_path / judge.SUITE
    suite.mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (suite / "test_made_up.py").write_text(
        textwrap.dedent(
            """
            import os, signal, time

            def test_first(): pass
            def test_crash(): os.abort()
            def test_slow(): time.sleep(30)  # stopped by pytest-timeout
            def test_hang():  # not even by pytest-timeout: by the budget
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
                time.sleep(30)
            def test_fails(): assert 1 == 2
            def test_last(): pass
            """
        )
    )
    run = judge.run_suite(tmp_path, timeout=1, budget=5)
    outcomes = {test.split("::")[1]: r.outcome for test, r in run.results.items()}
    assert outcomes == {
        "test_first": "passed",
        "test_crash": "crashed",
        "test_slow": "failed",
        "test_hang": "crashed",
        "test_fails": "failed",
        "test_last": "passed",
    }
    assert "SIGABRT" in run.results[f"{judge.SUITE}/test_made_up.py::test_crash"].message
    assert "hung" in run.results[f"{judge.SUITE}/test_made_up.py::test_hang"].message

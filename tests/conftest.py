"""Shared fixtures: the two implementations under comparison, an asyncio runner, a peak counter."""

from __future__ import annotations

import asyncio
import gc
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import fastlcel
import pytest


class Impl(NamedTuple):
    """One implementation of the runnables: fastlcel or the langchain_core original."""

    name: str
    Parallel: Any
    Lambda: Any

    def __repr__(self) -> str:
        return self.name


FASTLCEL = Impl("fastlcel", fastlcel.Parallel, fastlcel.Lambda)


def langchain_impl() -> Impl:
    runnables = pytest.importorskip("langchain_core.runnables")
    return Impl("langchain", runnables.RunnableParallel, runnables.RunnableLambda)


@pytest.fixture(params=["fastlcel", "langchain"])
def impl(request: pytest.FixtureRequest) -> Impl:
    """Run the test on fastlcel and on langchain_core: the same scenario, the same result."""
    if request.param == "fastlcel":
        return FASTLCEL
    return langchain_impl()


@pytest.fixture(params=["fastlcel", "langchain"])
def lcel(request: pytest.FixtureRequest) -> ModuleType:
    """The namespace an LCEL program imports from: ``fastlcel`` or ``langchain_core.runnables``.

    Both spell the classes alike (RunnableSequence, RunnablePassthrough, RunnableBranch ...), so a
    test written against ``lcel.X`` is the same program with only its import line switched.
    """
    if request.param == "fastlcel":
        return fastlcel
    return pytest.importorskip("langchain_core.runnables")


def run_async(make_coro: Callable[[], Any]) -> Any:
    """``asyncio.run`` that also fails on anything the loop reports to its exception handler.

    Catches "Task exception was never retrieved", "Future exception was never retrieved" and
    exceptions raised in callbacks (the loop would only log them).
    """
    reported: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        return await make_coro()

    result = asyncio.run(main())
    gc.collect()  # a task destroyed with an unretrieved exception reports from __del__
    assert not reported, f"the event loop reported: {reported}"
    return result


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what is alive once the tests are collected (langchain_core, pydantic and the test
    modules: ~120k objects), so that ``run_async``'s ``gc.collect()`` scans only what the tests
    create: ~50 ms less per call, the suite runs several times faster. Objects the tests create
    are collected as before."""
    gc.collect()
    gc.freeze()


class PeakCounter:
    """Counts calls in flight; ``peak`` is the most seen at once. Usable from threads and tasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.calls = 0

    def __enter__(self) -> PeakCounter:
        with self._lock:
            self.current += 1
            self.calls += 1
            self.peak = max(self.peak, self.current)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.current -= 1


@pytest.fixture
def peak() -> PeakCounter:
    return PeakCounter()


class Child:
    """A Python subprocess running ``script``; it prints "ready" just before the blocking call."""

    def __init__(self, script: str, cwd) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def read_line(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline().strip()

    def finish(self, timeout: float) -> tuple[int | None, str, str, float]:
        """Wait for exit; returns (returncode or None if it had to be killed, out, err, seconds)."""
        start = time.monotonic()
        try:
            out, err = self.proc.communicate(timeout=timeout)
            return self.proc.returncode, out, err, time.monotonic() - start
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            return None, out, err, time.monotonic() - start

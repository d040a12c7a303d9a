"""Fake steps for the fault-tolerance tests: flaky, failing, slow; sync and async."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any


class Flaky:
    """Raises ``exc`` on the first ``failures`` calls for each input, then returns
    ``result(x)``. ``failures=None``: always raises. Records every exception it raised."""

    def __init__(
        self,
        failures: int | None,
        exc: type[BaseException] = ValueError,
        result: Callable[[Any], Any] = lambda x: x,
        sleep: float = 0.0,
    ) -> None:
        self.failures = failures
        self.exc = exc
        self.result = result
        self.sleep = sleep
        self.calls: Counter[Any] = Counter()
        self.raised: list[BaseException] = []
        self._lock = threading.Lock()
        self.__name__ = "flaky"

    def _step(self, x: Any) -> tuple[bool, Any]:
        with self._lock:
            self.calls[_key(x)] += 1
            n = self.calls[_key(x)]
            if self.failures is None or n <= self.failures:
                err = self.exc(f"{x!r} failed on call {n}")
                self.raised.append(err)
                return False, err
        return True, self.result(x)

    def __call__(self, x: Any) -> Any:
        if self.sleep:
            time.sleep(self.sleep)
        ok, value = self._step(x)
        if not ok:
            raise value
        return value

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class AsyncFlaky(Flaky):
    """``Flaky`` as an ``async def``."""

    async def __call__(self, x: Any) -> Any:  # type: ignore[override]
        if self.sleep:
            await asyncio.sleep(self.sleep)
        ok, value = self._step(x)
        if not ok:
            raise value
        return value


def _key(x: Any) -> Any:
    return repr(x) if isinstance(x, dict) else x


class InFlight:
    """Counts calls in flight and the maximum seen; each call sleeps ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.now = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def _exit(self) -> None:
        with self._lock:
            self.now -= 1

    def sync(self, x: Any) -> Any:
        self._enter()
        try:
            time.sleep(self.seconds)
        finally:
            self._exit()
        return x

    async def async_(self, x: Any) -> Any:
        self._enter()
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self._exit()
        return x


class Ticker:
    """Counts loop iterations while running: proves the event loop was not blocked."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.ticks += 1

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def progress_of_another_thread(call: Callable[[], Any]) -> int:
    """Runs ``call`` while another Python thread counts; returns its count (a blocking call that
    holds the GIL leaves it near 0)."""
    progress = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal progress
        while not stop.is_set():
            progress += 1

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        call()
    finally:
        stop.set()
        thread.join()
    return progress


def cancel_while_running(coro: Any, after: float) -> None:
    """Runs ``coro`` as a task, cancels it after ``after`` seconds and checks that it ends
    cancelled."""

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        await asyncio.sleep(after)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError("the task was not cancelled")

    asyncio.run(main())


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", value) or (exception type name, str(exception)): comparable across libraries."""
    try:
        return "ok", call()
    except Exception as exc:
        return type(exc).__name__, str(exc)


async def aoutcome(coro: Any) -> tuple[str, Any]:
    try:
        return "ok", await coro
    except Exception as exc:
        return type(exc).__name__, str(exc)

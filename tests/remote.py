"""Steps that run on other processes (module-level, so that a process pool's workers import them
by name), and executors whose futures the tests control."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StepError(ValueError):
    """A step's own exception: it must come back as itself, not as an executor's error."""


def inc(x: int) -> int:
    return x + 1


def add(x: int, *, n: int) -> int:
    return x + n


def pid(_x: Any) -> int:
    return os.getpid()


def fail(x: Any) -> Any:
    raise StepError(f"step failed on {x!r}")


def fail_on_odd(x: int) -> int:
    if x % 2:
        raise StepError(f"odd {x}")
    return x


def sleep_then(x: float) -> float:
    time.sleep(x)
    return x


def die(_x: Any) -> Any:
    """Ends its worker process: the pool is broken."""
    os._exit(1)


def flaky(x: int, *, state: str, failures: int) -> tuple[int, int]:
    """Fails the first ``failures`` calls for ``x`` in any process (counted in files in
    ``state``), then returns ``(x, the calling process)``."""
    marker = Path(state) / f"{x}"
    with marker.open("a") as f:
        f.write(f"{os.getpid()}\n")
    calls = len(marker.read_text().split())
    if calls <= failures:
        raise StepError(f"{x} failed on call {calls}")
    return x, os.getpid()


def os_threads() -> int:
    """The threads of this process as the OS counts them (Linux)."""
    return len(os.listdir("/proc/self/task"))


def threads_now(_x: Any) -> int:
    return os_threads()


@dataclass
class Submitted:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: Future[Any] = field(default_factory=Future)

    def run(self) -> None:
        """Completes the future with the call's outcome, as an executor would."""
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.fn(*self.args, **self.kwargs))
        except BaseException as exc:
            self.future.set_exception(exc)


class ManualExecutor:
    """An executor whose futures stay pending until the test completes them (``run``)."""

    def __init__(self) -> None:
        self.submitted: list[Submitted] = []
        self._changed = threading.Condition()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        call = Submitted(fn, args, kwargs)
        call.future.add_done_callback(lambda _f: self._notify())
        with self._changed:
            self.submitted.append(call)
            self._changed.notify_all()
        return call.future

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[ManualExecutor], bool], timeout: float = 5) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self), timeout), self.submitted

    def wait_submitted(self, n: int, timeout: float = 5) -> None:
        self.wait_until(lambda e: len(e.submitted) >= n, timeout)

    def run(self, i: int) -> None:
        self.submitted[i].run()

    @property
    def pending(self) -> list[Submitted]:
        return [s for s in self.submitted if not s.future.done()]

    @property
    def cancelled(self) -> list[Submitted]:
        return [s for s in self.submitted if s.future.cancelled()]

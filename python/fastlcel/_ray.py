"""``fastlcel.RayExecutor``: a step's calls as Ray tasks (``Lambda(f, executor=RayExecutor())``).

Glue to Ray's API, as ``concurrent.futures`` spells an executor: ``submit`` returns a
``concurrent.futures.Future`` whose ``cancel()`` cancels the task with ``ray.cancel(ref,
force=True)``. ``ray`` is imported on first use, never by ``import fastlcel``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import importlib.util
import inspect
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import BrokenExecutor
from typing import Any


class RayExecutor(concurrent.futures.Executor):
    """Runs each call as a Ray task, on the cluster that ``ray.init`` connected this process to.

    ``ray.init(num_cpus=2)`` starts a local cluster, ``ray.init(address="ray://head:10001")`` (or
    ``"auto"``) joins an existing one; without it, Ray starts a local one on the first call.
    ``num_cpus``, ``num_gpus``, ``resources`` and any other ``options`` are the tasks' Ray
    options (``ray.remote(**options)``): give each step the executor it needs.

    >>> step = Lambda(embed, executor=RayExecutor(num_gpus=1)).with_retry().with_timeout(60)

    The function's exception comes back as an instance of its own class, the Ray traceback as its
    ``__cause__``. ``future.cancel()`` (a timeout, a fail-fast abort, a cancelled caller, Ctrl-C)
    stops the task, running or not: Ray kills its worker process and starts another. Any
    callable runs (a function, a builtin, a ``functools.partial``, a callable object); the
    workers need Ray, not fastlcel. One thread per process follows every task in flight (see
    ``_Completer``). Install Ray with ``pip install 'fastlcel[ray]'``.
    """

    def __init__(
        self,
        *,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        resources: Mapping[str, float] | None = None,
        **options: Any,
    ) -> None:
        if importlib.util.find_spec("ray") is None:  # found without importing it
            raise ImportError("fastlcel.RayExecutor needs Ray: pip install 'fastlcel[ray]'")
        named = {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": resources}
        self._options = {k: v for k, v in named.items() if v is not None} | options
        # fn -> its Ray remote function, as long as fn lives: Ray exports a function once per
        # remote function.
        self._remote: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @property
    def options(self) -> dict[str, Any]:
        """The Ray options of the tasks (a copy)."""
        return dict(self._options)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _RayFuture:
        """``fn(*args, **kwargs)`` as a Ray task."""
        if inspect.isfunction(fn):
            ref = self._remote_function(fn).remote(*args, **kwargs)
        else:  # Ray takes Python functions only: a builtin, a partial or a callable object
            ref = self._remote_function(_call).remote(fn, *args, **kwargs)  # crosses as an argument
        future = _RayFuture(ref)
        _completer.add(future)
        return future

    def _remote_function(self, fn: Callable[..., Any]) -> Any:
        remote = self._remote.get(fn)
        if remote is None:
            import ray

            with self._lock:
                remote = self._remote.get(fn)
                if remote is None:
                    made = ray.remote(**self._options) if self._options else ray.remote
                    remote = self._remote[fn] = made(fn)
        return remote

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"RayExecutor({options})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its options (a step on it pickles with it; its cache is made anew)."""
        return (_remade, (self._options,))


def _caller() -> Callable[..., Any]:
    def call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return call


# A local function: Ray's cloudpickle sends it by value, so the workers need no fastlcel.
_call = _caller()


def _remade(options: dict[str, Any]) -> RayExecutor:
    return RayExecutor(**options)


class _RayFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """The outcome of one Ray task, settled by the process's ``_Completer``; ``cancel()``
    cancels the task."""

    def __init__(self, ref: Any) -> None:
        super().__init__()
        self.ref = ref

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        try:
            if error is None:
                self.set_result(value)
            else:  # handed to whoever waits on this future
                self.set_exception(_own_exception(error))
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile

    def cancel(self) -> bool:
        if self.done():
            return False
        import ray

        if ray.is_initialized():  # else ray.cancel would start a new local Ray
            ray.cancel(self.ref, force=True)
        return super().cancel()


class _Completer:
    """Settles the futures of every Ray task this process has in flight, in rounds: one thread
    asks Ray which tasks are done (``ray.wait``) and fetches their values with one ``ray.get``.

    A round ends when an eighth of the tasks in flight are done (one task, with fewer than 16)
    or after a pause of 10 us per task in flight, from 1 ms to 20 ms, whichever comes first.
    With one task in flight its future is settled the moment it ends; with many, a value is
    handed over up to the pause after its task ended. While no task ends and none is added,
    the pause doubles each round (up to 20 ms), so that long tasks cost the thread ~50 rounds a
    second rather than 1,000; a task added meanwhile is seen at the end of the round.

    NOTE: measured on 1,000 trivial tasks (local cluster, 2 CPUs sharing the 2 vCPUs with this
    process), interleaved in one run: ``ray.get`` of the list took 607 ms (339 ms of this
    process's CPU). A future per task through Ray's own completion callback
    (``ObjectRef.future()``, or ``ObjectRef._on_completed``) took 725-755 ms (1.21-1.28x,
    542-564 ms of CPU). ``Lambda(executor=RayExecutor()).batch`` on these rounds took 661 ms
    (1.09x, 456 ms); with a round per finished task (``num_returns=1``) 744-760 ms (1.23-1.25x,
    the same as Ray's callbacks), with pauses of 3 us per task 691 ms (1.14x). A round costs
    ~0.15 ms plus ~0.4 us per task in flight, whence the pause.
    """

    PER_TASK = 10e-6
    SHORTEST = 0.001
    LONGEST = 0.02

    @classmethod
    def pause(cls, in_flight: int, quiet: int) -> float:
        """The longest a round waits for the tasks in flight to end, after ``quiet`` rounds in a
        row in which no task ended and none was added: it doubles with each of those."""
        return min(cls.LONGEST, max(cls.SHORTEST, in_flight * cls.PER_TASK) * 2**quiet)

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._new: list[_RayFuture] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, future: _RayFuture) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fastlcel-ray-completer", daemon=True
                )
                self._thread.start()
                atexit.register(self.stop)  # before Ray's own shutdown (atexit runs LIFO)
            if self._stopping:
                future.settle(error=_exiting())
            else:
                self._new.append(future)
                self._cond.notify()

    def stop(self) -> None:
        """Ends the thread (at exit, before Ray disconnects): it returns within a round."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _run(self) -> None:
        import ray

        in_flight: dict[Any, _RayFuture] = {}
        quiet = 0
        while True:
            with self._cond:
                while not (self._new or in_flight or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    for future in [*in_flight.values(), *self._new]:
                        future.settle(error=_exiting())
                    return
                if self._new:
                    quiet = 0
                for future in self._new:
                    in_flight[future.ref] = future
                self._new.clear()
            refs = list(in_flight)
            try:
                done, _ = _live_ray().wait(
                    refs, num_returns=max(1, len(refs) // 8), timeout=self.pause(len(refs), quiet)
                )
            except BaseException as exc:  # the step's ExecutorError ("its executor is broken")
                broken = exc
                if not isinstance(exc, BrokenExecutor):
                    broken = (
                        _shut_down()
                        if not ray.is_initialized()
                        else BrokenExecutor(f"Ray cannot tell how the task went: {exc}")
                    )
                    broken.__cause__ = exc
                for future in in_flight.values():
                    future.settle(error=broken)
                in_flight.clear()
                continue
            quiet = 0 if done else min(quiet + 1, 8)
            if done:
                _settle([in_flight.pop(ref) for ref in done])


def _exiting() -> BrokenExecutor:
    return BrokenExecutor("Python is exiting: fastlcel no longer awaits Ray")


def _shut_down() -> BrokenExecutor:
    return BrokenExecutor("Ray was shut down (ray.shutdown) with the task in flight")


def _settle(futures: list[_RayFuture]) -> None:
    """Their values in one ``ray.get``; one by one when one of them failed."""
    try:
        values = _live_ray().get([future.ref for future in futures])
    except BaseException:
        for future in futures:
            try:
                value = _live_ray().get(future.ref)
            except BaseException as exc:
                future.settle(error=exc)
            else:
                future.settle(value)
    else:
        for future, value in zip(futures, values, strict=True):
            future.settle(value)


def _live_ray() -> Any:
    """The ``ray`` module, or the "Ray was shut down" error: after a ``ray.shutdown()``,
    ``ray.wait`` and ``ray.get`` would start a new local Ray."""
    import ray

    if not ray.is_initialized():
        raise _shut_down()
    return ray


_completer = _Completer()


def _after_fork_in_child() -> None:
    global _completer
    _completer = _Completer()  # the parent's thread is not in the child


os.register_at_fork(after_in_child=_after_fork_in_child)


def _own_exception(exc: BaseException) -> BaseException:
    """A task's exception as its own class (Ray delivers ``RayTaskError(Cls)``), Ray's error with
    the remote traceback as its cause."""
    from ray.exceptions import RayTaskError

    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and isinstance(cause, BaseException):
        cause.__cause__ = exc
        return cause
    return exc

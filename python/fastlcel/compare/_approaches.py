"""The approaches: each one runs a workload over ``range(n)`` and returns the results in order.

``prepare(workload, inputs, options)`` does what is not part of the job (imports, building the
runnables) and returns ``go()``, the timed part. ``go()`` of an async approach runs its own
``asyncio.run`` (so a fresh loop, and its default executor, are part of the cost), and
``ProcessPoolExecutor`` is created inside ``go()``: pool start-up is part of its time.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import multiprocessing
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastlcel.compare._workloads import Workload

Go = Callable[[], list]


@dataclass(frozen=True)
class Options:
    workers: int  # ThreadPoolExecutor
    processes: int  # ProcessPoolExecutor
    max_concurrency: int | None  # config of the runnables' batch/abatch, cap of asyncio.gather
    mp_context: str  # multiprocessing start method


#: How to install a missing optional module (both are in fastlcel's ``compare`` extra).
_INSTALL = {"langchain_core": "pip install langchain-core; the [compare] extra has it"}


@dataclass(frozen=True)
class Approach:
    key: str  # stable id, used by --approach and in the JSON
    family: str  # "stdlib" | "langchain" | "fastlcel"
    style: str  # "sync" (the def function) | "async" (the async def function)
    describe: Callable[[Options, int], str]  # label for the table
    prepare: Callable[[Workload, Sequence[int], Options], Go]
    requires: str | None = None  # a module that must be importable
    processes: bool = False  # counts child processes

    def label(self, options: Options, n: int) -> str:
        return self.describe(options, n)

    def available(self) -> str | None:
        """None when it can run here, else the reason it cannot."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            hint = _INSTALL.get(self.requires, f"pip install {self.requires}")
            return f"{self.requires} is not installed ({hint})"
        return None


def _config(options: Options) -> Any:  # a RunnableConfig (a TypedDict) for langchain_core
    return None if options.max_concurrency is None else {"max_concurrency": options.max_concurrency}


def _as_def(fn: Callable[[int], Any], name: str) -> Callable[[Any], Any]:
    """A plain ``def`` around ``fn`` (runnables inspect their function; a partial is no def)."""

    def call(x: Any) -> Any:
        return fn(x)

    call.__name__ = call.__qualname__ = name
    return call


def _as_async_def(fn: Callable[[int], Awaitable[Any]], name: str) -> Callable[[Any], Any]:
    async def acall(x: Any) -> Any:
        return await fn(x)

    acall.__name__ = acall.__qualname__ = name
    return acall


def _step(fn: Callable[[int], Any], i: int) -> Callable[[Any], Any]:
    """A fan-out step of a Parallel: ignores the shared input and does item ``i``."""

    def step(_input: Any) -> Any:
        return fn(i)

    step.__name__ = step.__qualname__ = f"item{i}"
    return step


def _run_async(workload: Workload, make: Callable[[], Awaitable[list]]) -> list:
    async def main() -> list:
        try:
            return list(await make())
        finally:
            await workload.aclose()

    return asyncio.run(main())


# --------------------------------------------------------------------------- standard library


def _sequential(wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    fn = wl.sync_fn
    return lambda: [fn(i) for i in inputs]


def _threads(wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    def go() -> list:
        with ThreadPoolExecutor(max_workers=o.workers) as pool:
            return list(pool.map(wl.sync_fn, inputs))

    return go


def default_mp_context() -> str:
    """forkserver where there is one (Linux, macOS; Python 3.14's default on Linux), else spawn.

    Not fork: this process has threads (the sampler, fastlcel's pool, a server thread), and
    forking a process with threads can deadlock the child.
    """
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _process_pool(o: Options) -> Callable[[], ProcessPoolExecutor]:
    """Makes the pool of the process approaches (inside ``go()``: start-up is timed)."""
    context = multiprocessing.get_context(o.mp_context)
    if o.mp_context == "forkserver":
        # the fork server imports the workload functions once; each worker is a fork of it
        context.set_forkserver_preload(["fastlcel.compare._workloads"])
    return functools.partial(ProcessPoolExecutor, max_workers=o.processes, mp_context=context)


def _processes(wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    make_pool = _process_pool(o)

    def go() -> list:
        with make_pool() as pool:
            return list(pool.map(wl.sync_fn, inputs))

    return go


def _gather(wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    afn = wl.async_fn

    async def run() -> list:
        if o.max_concurrency is None:
            return await asyncio.gather(*(afn(i) for i in inputs))
        semaphore = asyncio.Semaphore(o.max_concurrency)

        async def one(i: int) -> Any:
            async with semaphore:
                return await afn(i)

        return await asyncio.gather(*(one(i) for i in inputs))

    return lambda: _run_async(wl, run)


def _to_thread(wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    fn = wl.sync_fn

    async def run() -> list:
        return await asyncio.gather(*(asyncio.to_thread(fn, i) for i in inputs))

    return lambda: _run_async(wl, run)


# -------------------------------------------------------------- langchain_core and fastlcel
# The same four approaches for both libraries: fastlcel is a drop-in, so each builder takes the
# module that provides RunnableLambda and RunnableParallel.

_LIBRARIES = {"langchain": "langchain_core.runnables", "fastlcel": "fastlcel"}


def _runnables(family: str) -> Any:
    return importlib.import_module(_LIBRARIES[family])


def _lib_batch(family: str, wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    runnable = _runnables(family).RunnableLambda(_as_def(wl.sync_fn, wl.name))
    config = _config(o)
    return lambda: runnable.batch(list(inputs), config=config)


def _lib_abatch_async(family: str, wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    runnable = _runnables(family).RunnableLambda(_as_async_def(wl.async_fn, wl.name))
    config = _config(o)
    return lambda: _run_async(wl, lambda: runnable.abatch(list(inputs), config=config))


def _lib_abatch_sync(family: str, wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    runnable = _runnables(family).RunnableLambda(_as_def(wl.sync_fn, wl.name))
    config = _config(o)
    return lambda: _run_async(wl, lambda: runnable.abatch(list(inputs), config=config))


def _lib_parallel(family: str, wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    lib = _runnables(family)
    runnable = lib.RunnableParallel(
        {f"item{i}": lib.RunnableLambda(_step(wl.sync_fn, i)) for i in inputs}
    )
    config = _config(o)
    return lambda: list(runnable.invoke(None, config=config).values())


def _fastlcel_executor(wl: Workload, inputs: Sequence[int], o: Options) -> Go:
    """The ``def`` on the process pool, fastlcel around it (``Lambda(f, executor=pool)``)."""
    from fastlcel import Lambda

    make_pool = _process_pool(o)
    config = _config(o)

    def go() -> list:
        with make_pool() as pool:
            return Lambda(wl.sync_fn, executor=pool).batch(list(inputs), config=config)

    return go


def _cap(o: Options) -> str:
    return "" if o.max_concurrency is None else f", max_concurrency={o.max_concurrency}"


APPROACHES: tuple[Approach, ...] = (
    Approach("sequential", "stdlib", "sync", lambda o, n: "sequential (for loop)", _sequential),
    Approach(
        "threads", "stdlib", "sync", lambda o, n: f"ThreadPoolExecutor({o.workers})", _threads
    ),
    Approach(
        "processes",
        "stdlib",
        "sync",
        lambda o, n: f"ProcessPoolExecutor({o.processes}, {o.mp_context})",
        _processes,
        processes=True,
    ),
    Approach("asyncio-gather", "stdlib", "async", lambda o, n: f"asyncio.gather{_cap(o)}", _gather),
    Approach(
        "asyncio-to-thread",
        "stdlib",
        "sync",
        lambda o, n: "asyncio.gather of asyncio.to_thread",
        _to_thread,
    ),
)

# (key suffix, style, label after the library's class prefix, builder)
_LIBRARY_APPROACHES = (
    ("batch", "sync", lambda o, n: f"Lambda.batch{_cap(o)}", _lib_batch),
    ("abatch-async", "async", lambda o, n: f"Lambda.abatch, async def{_cap(o)}", _lib_abatch_async),
    ("abatch-sync", "sync", lambda o, n: f"Lambda.abatch, sync def{_cap(o)}", _lib_abatch_sync),
    ("parallel", "sync", lambda o, n: f"Parallel({n} steps).invoke{_cap(o)}", _lib_parallel),
)


def _library_approach(family: str, suffix: str, style: str, label: Any, build: Any) -> Approach:
    # langchain_core's classes carry the Runnable prefix: "RunnableLambda.batch".
    prefix = "langchain Runnable" if family == "langchain" else "fastlcel "
    return Approach(
        f"{family}-{suffix}",
        family,
        style,
        lambda o, n: prefix + label(o, n),
        functools.partial(build, family),
        requires="langchain_core" if family == "langchain" else None,
    )


APPROACHES += tuple(
    _library_approach(family, *spec) for family in _LIBRARIES for spec in _LIBRARY_APPROACHES
)
APPROACHES += (
    Approach(
        "fastlcel-executor",
        "fastlcel",
        "sync",
        lambda o, n: f"fastlcel Lambda(executor=ProcessPoolExecutor({o.processes})).batch{_cap(o)}",
        _fastlcel_executor,
        processes=True,
    ),
)

APPROACH_KEYS = tuple(a.key for a in APPROACHES)


def select_approaches(selectors: Sequence[str] | None) -> list[Approach]:
    """The approaches named by ``selectors``: a key, or a prefix of keys ("fastlcel", "asyncio").

    Raises ``ValueError`` for a selector that matches nothing. The table order is kept.
    """
    if not selectors:
        return list(APPROACHES)
    chosen: set[str] = set()
    for selector in selectors:
        token = selector.strip().lower()
        matches = {
            a.key for a in APPROACHES if token in (a.key, a.family) or a.key.startswith(token + "-")
        }
        if not matches:
            raise ValueError(
                f"unknown approach {selector!r}; choose from {', '.join(APPROACH_KEYS)} "
                "or a group: stdlib, asyncio, langchain, fastlcel"
            )
        chosen |= matches
    return [a for a in APPROACHES if a.key in chosen]

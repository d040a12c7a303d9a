"""The bridged event loop: sync calls (invoke, batch, stream...) reaching steps that have only an
async implementation run them on fastlcel's own event loop in a background thread.

langchain_core raises there (TypeError, or NotImplementedError for a RunnableGenerator): this
is a deliberate difference, listed in the README.
"""

from __future__ import annotations

import asyncio
import contextvars
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fastlcel
import pytest
from conftest import run_async
from fastlcel import Generator, Lambda, Parallel, StepTimeoutError

pytestmark = pytest.mark.timeout(30)


async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def agen(chunks: Any) -> Any:
    async for chunk in chunks:
        for word in str(chunk).split():
            yield word + " "


class AsyncOnly:
    """A foreign runnable with only ``ainvoke``."""

    async def ainvoke(self, x: int, config: Any = None) -> int:
        await asyncio.sleep(0)
        return x + 100


# Chains with an async-only step: name -> lcel -> (runnable, input, expected invoke output).
CHAINS = {
    "lambda": lambda lcel: (lcel.RunnableLambda(async_double), 3, 6),
    "sequence": lambda lcel: (lcel.RunnableLambda(lambda x: x + 1) | async_double, 3, 8),
    "parallel": lambda lcel: (
        lcel.RunnableParallel(a=async_double, b=lambda x: x - 1),
        3,
        {"a": 6, "b": 2},
    ),
    "branch": lambda lcel: (
        lcel.RunnableBranch((async_double, lambda x: "yes"), lambda x: "no"),
        3,
        "yes",
    ),
    "generator": lambda lcel: (lcel.RunnableGenerator(agen), "a b", "a b "),
}


@pytest.mark.parametrize("name", [*CHAINS, "foreign"])
def test_sync_calls_run_async_only_steps(name: str) -> None:
    if name == "foreign":  # langchain_core cannot hold an object with only `ainvoke`
        runnable, value, expected = Lambda(lambda x: x) | AsyncOnly(), 1, 101
    else:
        runnable, value, expected = CHAINS[name](fastlcel)
    assert runnable.invoke(value) == expected
    assert runnable.batch([value, value]) == [expected, expected]
    assert sorted(runnable.batch_as_completed([value]), key=repr) == [(0, expected)]
    chunks = list(runnable.stream(value))
    assert chunks
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total == expected


@pytest.mark.parametrize("name", CHAINS)
def test_langchain_core_raises_where_fastlcel_bridges(name: str) -> None:
    runnables = pytest.importorskip("langchain_core.runnables")
    runnable, value, expected = CHAINS[name](runnables)
    with pytest.raises((TypeError, NotImplementedError)):
        runnable.invoke(value)
    # The same chain, awaited, agrees on both: the bridge only adds the sync path.
    assert run_async(lambda: runnable.ainvoke(value)) == expected


def test_a_mixed_parallel_runs_its_sync_and_async_steps_at_once() -> None:
    async def slow_async(x: int) -> str:
        await asyncio.sleep(0.2)
        return "async"

    def slow_sync(x: int) -> str:
        time.sleep(0.2)
        return "sync"

    par = Parallel(a=slow_async, b=slow_async, c=slow_sync, d=slow_sync)
    start = time.monotonic()
    assert par.invoke(0) == {"a": "async", "b": "async", "c": "sync", "d": "sync"}
    assert time.monotonic() - start < 0.6  # about 0.2 s; sequentially 0.8 s


def test_a_sync_batch_of_async_steps_runs_them_concurrently() -> None:
    async def sleepy(x: int) -> int:
        await asyncio.sleep(0.2)
        return x

    start = time.monotonic()
    assert Lambda(sleepy).batch(list(range(300))) == list(range(300))
    assert time.monotonic() - start < 2.0  # 300 x 0.2 s = 60 s if one after the other


def test_errors_are_the_original_exception_object_with_its_traceback() -> None:
    raised: list[BaseException] = []

    async def fails(x: int) -> int:
        err = LookupError(f"no {x}")
        raised.append(err)
        raise err

    for call in (lambda: Lambda(fails).invoke(1), lambda: Parallel(a=fails).invoke(1)):
        with pytest.raises(LookupError) as info:
            call()
        assert info.value is raised[-1]
        frames = [frame.name for frame in info.traceback]
        assert "fails" in frames


def test_steps_see_the_callers_contextvars_and_do_not_leak_writes() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def reads_and_writes(x: int) -> str:
        seen = var.get()
        var.set("written by the step")
        return seen

    var.set("caller")
    assert Lambda(reads_and_writes).invoke(0) == "caller"
    assert Parallel(a=reads_and_writes, b=lambda x: var.get()).invoke(0) == {
        "a": "caller",
        "b": "caller",
    }
    assert var.get() == "caller"


def test_a_timeout_cancels_the_bridged_coroutine() -> None:
    events: list[str] = []
    done = threading.Event()

    async def sleeps(x: int) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            done.set()
        return x

    start = time.monotonic()
    with pytest.raises(StepTimeoutError):
        Lambda(sleeps).with_timeout(0.1).invoke(1)
    assert time.monotonic() - start < 2.0
    assert done.wait(5)
    assert events == ["cancelled"]


def test_fail_fast_cancels_async_siblings() -> None:
    events: list[str] = []
    done = threading.Event()

    async def sleeps(x: int) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            done.set()
        return x

    def fails(x: int) -> int:
        time.sleep(0.05)
        raise ValueError("boom")

    start = time.monotonic()
    with pytest.raises(ValueError, match="boom"):
        Parallel(a=sleeps, b=fails).invoke(1)
    assert time.monotonic() - start < 2.0
    assert done.wait(5)
    assert events == ["cancelled"]


def test_max_concurrency_bounds_bridged_steps() -> None:
    now = 0
    peak = 0

    async def counted(x: int) -> int:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.02)
        now -= 1
        return x

    assert Lambda(counted).batch(list(range(20)), {"max_concurrency": 3}) == list(range(20))
    assert peak == 3


def test_a_sync_call_from_inside_a_running_loop_works() -> None:
    chain = Lambda(lambda x: x + 1) | async_double

    async def main() -> int:
        return chain.invoke(1)  # blocks this loop; the step runs on fastlcel's own

    assert asyncio.run(main()) == 4


def test_sixteen_threads_calling_at_once() -> None:
    chain = Lambda(async_double) | (lambda x: x + 1) | Parallel(a=async_double, b=lambda x: x)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(chain.invoke, range(200)))
    assert results == [{"a": 2 * (2 * x + 1), "b": 2 * x + 1} for x in range(200)]


def test_an_async_step_on_the_bridge_may_call_a_sync_chain_with_async_steps() -> None:
    inner = Lambda(lambda x: x + 1) | async_double

    async def outer(x: int) -> int:
        # Runs on the bridged loop, then blocks it on a sync call that needs an event loop.
        return inner.invoke(x) + inner.batch([x])[0]

    assert Lambda(outer).invoke(1) == 8
    assert Lambda(outer).batch([1, 2]) == [8, 12]


def test_awaited_calls_keep_using_the_callers_loop() -> None:
    async def loop_id(x: int) -> int:
        return id(asyncio.get_running_loop())

    async def main() -> tuple[int, int]:
        here = id(asyncio.get_running_loop())
        return here, await Lambda(loop_id).ainvoke(0)

    here, used = asyncio.run(main())
    assert here == used


def test_objects_bound_to_another_loop_get_asyncios_own_error() -> None:
    async def main() -> None:
        future = asyncio.get_running_loop().create_future()

        async def awaits_it(x: int) -> Any:
            return await future

        with pytest.raises(RuntimeError, match="different loop|attached to a different"):
            await asyncio.to_thread(Lambda(awaits_it).invoke, 0)

    asyncio.run(main())


def test_one_bridge_thread_per_process() -> None:
    for _ in range(5):
        Lambda(async_double).invoke(1)
        Parallel(a=async_double).batch([1, 2])
    names = [p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")]
    assert names.count("fastlcel-loop") == 1


def test_generator_with_an_async_only_transform_streams_on_the_bridge() -> None:
    chunks = list(Generator(agen).transform(iter(["one two", "three"])))
    assert "".join(chunks) == "one two three "


def _bridged_in_child(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put((Lambda(async_double).invoke(21), Lambda(async_double).batch([1, 2])))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
# Python 3.12+ warns that forking a multi-threaded process may deadlock: that is what is tested.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_a_bridge_of_its_own() -> None:
    assert Lambda(async_double).invoke(1) == 2  # the parent's bridge runs
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_bridged_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=20) == (42, [2, 4])
    child.join(timeout=10)
    assert child.exitcode == 0


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("private", [False, True], ids=["bridged loop", "private loop"])
def test_keyboard_interrupt_or_system_exit_of_an_async_step_reaches_the_caller(
    kind, private: bool
) -> None:
    """asyncio re-raises these out of the loop that runs the task: the loop runs on, the caller
    gets the step's own exception, and the next call works."""
    exc = kind("stop")

    async def stop(x: int) -> int:
        raise exc

    inner = Lambda(stop)

    async def outer(x: int) -> int:
        # A sync call from an async step that runs on the bridge: it runs on a private loop.
        return inner.invoke(x)

    with pytest.raises(kind) as raised:
        (Lambda(outer) if private else inner).invoke(1)
    assert raised.value is exc
    assert Lambda(async_double).invoke(2) == 4

"""ainvoke/abatch on the event loop: concurrency, cancellation, awaitable shape, loop teardown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from conftest import Impl, PeakCounter, run_async
from fastlcel import Parallel


def test_async_steps_run_concurrently(impl: Impl, peak: PeakCounter) -> None:
    async def counted(x: int) -> int:
        with peak:
            await asyncio.sleep(0.05)
        return x

    par = impl.Parallel({f"s{i}": counted for i in range(6)})
    assert run_async(lambda: par.ainvoke(1)) == {f"s{i}": 1 for i in range(6)}
    assert peak.peak == 6


def test_ainvoke_result_works_with_asyncio_helpers(impl: Impl) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    par = impl.Parallel(a=double, b=lambda x: x)

    async def main() -> None:
        assert await asyncio.wait_for(par.ainvoke(2), 5) == {"a": 4, "b": 2}
        fut = asyncio.ensure_future(par.ainvoke(3))
        assert await fut == {"a": 6, "b": 3}
        results = await asyncio.gather(*(par.ainvoke(i) for i in range(20)))
        assert results == [{"a": 2 * i, "b": i} for i in range(20)]

    run_async(main)


def test_many_concurrent_ainvokes_of_sync_steps(impl: Impl) -> None:
    par = impl.Parallel(a=lambda x: x + 1, b=lambda x: x * 2)

    async def main() -> list:
        return await asyncio.gather(*(par.ainvoke(i) for i in range(100)))

    assert run_async(main) == [{"a": i + 1, "b": i * 2} for i in range(100)]


def test_ainvoke_in_successive_event_loops(impl: Impl) -> None:
    async def inc(x: int) -> int:
        return x + 1

    par = impl.Parallel(a=inc, b=lambda x: x)
    for i in range(3):
        assert run_async(lambda i=i: par.ainvoke(i)) == {"a": i + 1, "b": i}


def make_cancellable(started: list, observed: list):
    async def wait_forever(x: object) -> None:
        started.append(x)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            observed.append(("cancelled", x))
            raise
        finally:
            observed.append(("finally", x))

    return wait_forever


async def cancel_when_started(awaitable_factory, started: list, count: int) -> None:
    async def runner() -> object:
        return await awaitable_factory()

    task = asyncio.ensure_future(runner())
    for _ in range(200):
        if len(started) >= count:
            break
        await asyncio.sleep(0.005)
    assert len(started) == count
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.timeout(10)
def test_cancelling_ainvoke_cancels_its_async_steps(impl: Impl) -> None:
    started: list = []
    observed: list = []
    step = make_cancellable(started, observed)
    par = impl.Parallel(a=step, b=step, nested={"c": step})
    run_async(lambda: cancel_when_started(lambda: par.ainvoke("x"), started, 3))
    assert observed.count(("cancelled", "x")) == 3
    assert observed.count(("finally", "x")) == 3


@pytest.mark.timeout(10)
def test_cancelling_abatch_cancels_its_items(impl: Impl) -> None:
    started: list = []
    observed: list = []
    lam = impl.Lambda(make_cancellable(started, observed))
    run_async(lambda: cancel_when_started(lambda: lam.abatch([1, 2, 3]), started, 3))
    assert sorted(x for kind, x in observed if kind == "cancelled") == [1, 2, 3]
    assert sorted(x for kind, x in observed if kind == "finally") == [1, 2, 3]


@pytest.mark.timeout(10)
def test_cancelling_the_ainvoke_future_directly_cancels_its_steps() -> None:
    started: list = []
    observed: list = []
    step = make_cancellable(started, observed)
    par = Parallel(a=step, b=step)

    async def main() -> None:
        fut = asyncio.ensure_future(par.ainvoke("y"))
        for _ in range(200):
            if len(started) == 2:
                break
            await asyncio.sleep(0.005)
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        for _ in range(10):
            await asyncio.sleep(0)

    run_async(main)
    assert observed.count(("cancelled", "y")) == 2


@pytest.mark.timeout(10)
def test_cancelled_ainvoke_of_a_sync_step_finishing_later_reports_nothing() -> None:
    """The pool finishes a step whose future was cancelled: no InvalidStateError, no warning."""
    finished = threading.Event()

    def slow(x: int) -> int:
        time.sleep(0.1)
        finished.set()
        return x

    par = Parallel(a=slow, b=slow)

    async def main() -> None:
        task = asyncio.ensure_future(par.ainvoke(1))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.get_running_loop().run_in_executor(None, finished.wait, 5)
        await asyncio.sleep(0.05)  # room for a late callback to misbehave

    run_async(main)
    assert Parallel(a=slow).invoke(2) == {"a": 2}


@pytest.mark.timeout(10)
def test_sync_step_finishing_after_its_loop_closed_is_harmless(capfd) -> None:
    finished = threading.Event()

    def slow(x: int) -> int:
        time.sleep(0.2)
        finished.set()
        return x

    par = Parallel(a=slow)

    async def main() -> None:
        # Start and abandon: asyncio.run cancels it and closes the loop before the step ends.
        asyncio.ensure_future(par.ainvoke(1))
        await asyncio.sleep(0.02)

    run_async(main)
    assert finished.wait(5)
    time.sleep(0.1)
    assert Parallel(a=slow).invoke(3) == {"a": 3}
    assert "Error" not in capfd.readouterr().err


@pytest.mark.timeout(10)
def test_sync_function_awaited_many_times_runs_concurrently_off_the_loop(impl: Impl) -> None:
    barrier = threading.Barrier(5, timeout=5)

    def blocking(x: int) -> int:
        barrier.wait()  # BrokenBarrierError unless all five run at once
        return x

    lam = impl.Lambda(blocking)

    async def main() -> list:
        return await asyncio.gather(*(lam.ainvoke(i) for i in range(5)))

    assert run_async(main) == list(range(5))

"""max_concurrency, the IO-sized pool, and nested fan-outs that must not deadlock.

Peaks are measured with a counter in the steps. "Reaches the limit" is proven with a barrier of
that size: the steps can only pass it if that many run at once (no timing assumptions).
``max_concurrency`` in ``ainvoke`` is a deliberate difference (langchain_core ignores it there), so
that test runs on fastlcel only.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from conftest import Impl, PeakCounter, run_async
from fastlcel import Lambda, Parallel


def meeting_step(peak: PeakCounter, group: int):
    """A sync step that waits until ``group`` steps are running at once."""
    barrier = threading.Barrier(group, timeout=5)

    def step(x: object) -> object:
        with peak:
            barrier.wait()
            time.sleep(0.02)  # stay in flight a little: an extra step would be counted
        return x

    return step


def async_counted_step(peak: PeakCounter):
    async def step(x: object) -> object:
        with peak:
            await asyncio.sleep(0.02)
        return x

    return step


def sync_counted_step(peak: PeakCounter):
    def step(x: object) -> object:
        with peak:
            time.sleep(0.02)
        return x

    return step


@pytest.mark.timeout(20)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_invoke_honours_max_concurrency(impl: Impl, peak: PeakCounter, limit: int) -> None:
    step = meeting_step(peak, limit)
    par = impl.Parallel({f"s{i}": step for i in range(limit * 3)})
    assert par.invoke(7, {"max_concurrency": limit}) == {f"s{i}": 7 for i in range(limit * 3)}
    assert peak.peak == limit
    assert peak.calls == limit * 3


@pytest.mark.timeout(20)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_batch_honours_max_concurrency(impl: Impl, peak: PeakCounter, limit: int) -> None:
    lam = impl.Lambda(meeting_step(peak, limit))
    inputs = list(range(limit * 3))
    assert lam.batch(inputs, {"max_concurrency": limit}) == inputs
    assert peak.peak == limit


@pytest.mark.timeout(20)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_abatch_honours_max_concurrency(impl: Impl, peak: PeakCounter, limit: int) -> None:
    lam = impl.Lambda(async_counted_step(peak))
    inputs = list(range(limit * 3))
    assert run_async(lambda: lam.abatch(inputs, {"max_concurrency": limit})) == inputs
    assert peak.peak == limit


@pytest.mark.timeout(20)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_abatch_of_sync_function_honours_max_concurrency(
    impl: Impl, peak: PeakCounter, limit: int
) -> None:
    lam = impl.Lambda(meeting_step(peak, limit))
    inputs = list(range(limit * 3))
    assert run_async(lambda: lam.abatch(inputs, {"max_concurrency": limit})) == inputs
    assert peak.peak == limit


@pytest.mark.timeout(20)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_ainvoke_honours_max_concurrency(peak: PeakCounter, limit: int) -> None:
    step = async_counted_step(peak)
    par = Parallel({f"s{i}": step for i in range(limit * 3)})
    result = run_async(lambda: par.ainvoke(1, {"max_concurrency": limit}))
    assert result == {f"s{i}": 1 for i in range(limit * 3)}
    assert peak.peak == limit


@pytest.mark.timeout(20)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_ainvoke_of_sync_steps_honours_max_concurrency(peak: PeakCounter, limit: int) -> None:
    step = meeting_step(peak, limit)
    par = Parallel({f"s{i}": step for i in range(limit * 3)})
    result = run_async(lambda: par.ainvoke(1, {"max_concurrency": limit}))
    assert result == {f"s{i}": 1 for i in range(limit * 3)}
    assert peak.peak == limit


@pytest.mark.timeout(20)
def test_ainvoke_of_mixed_steps_honours_max_concurrency(peak: PeakCounter) -> None:
    par = Parallel(
        {f"a{i}": async_counted_step(peak) for i in range(4)},
        **{f"s{i}": sync_counted_step(peak) for i in range(4)},
    )
    result = run_async(lambda: par.ainvoke(0, {"max_concurrency": 2}))
    assert len(result) == 8
    assert peak.peak <= 2


@pytest.mark.timeout(10)
def test_unbounded_invoke_runs_every_blocking_step_at_once(peak: PeakCounter) -> None:
    """The pool is sized for IO: 24 blocking steps run together (langchain_core: 6 on 2 CPUs)."""
    step = meeting_step(peak, 24)
    par = Parallel({f"s{i}": step for i in range(24)})
    assert par.invoke(0) == {f"s{i}": 0 for i in range(24)}
    assert peak.peak == 24


@pytest.mark.timeout(10)
def test_unbounded_batch_runs_every_blocking_item_at_once(peak: PeakCounter) -> None:
    lam = Lambda(meeting_step(peak, 24))
    assert lam.batch(list(range(24))) == list(range(24))
    assert peak.peak == 24


# --- nested fan-outs: must never deadlock ----------------------------------------------------


def leaf(x: int) -> int:
    time.sleep(0.005)
    return x + 1


def build_invoking_tree(impl: Impl, depth: int, width: int = 3):
    """A Parallel whose steps call ``invoke`` on the next level down, passing the config."""
    if depth == 0:
        return impl.Parallel({f"k{i}": leaf for i in range(width)})
    child = build_invoking_tree(impl, depth - 1, width)

    def step(x: int, config: dict) -> dict:
        return child.invoke(x, config)

    return impl.Parallel({f"k{i}": step for i in range(width)})


def expected_tree(depth: int, width: int = 3, x: int = 1):
    if depth == 0:
        return {f"k{i}": x + 1 for i in range(width)}
    return {f"k{i}": expected_tree(depth - 1, width, x) for i in range(width)}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("limit", [1, 2, None])
def test_steps_invoking_parallels_three_levels_deep(impl: Impl, limit) -> None:
    tree = build_invoking_tree(impl, depth=2)
    config = {} if limit is None else {"max_concurrency": limit}
    assert tree.invoke(1, config) == expected_tree(2)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("limit", [1, 2, None])
def test_steps_invoking_parallels_without_passing_the_config(impl: Impl, limit) -> None:
    inner = impl.Parallel(a=leaf, b=leaf)
    middle = impl.Parallel(a=lambda x: inner.invoke(x), b=lambda x: inner.invoke(x))
    outer = impl.Parallel(a=lambda x: middle.invoke(x), b=lambda x: middle.invoke(x))
    config = {} if limit is None else {"max_concurrency": limit}
    leaf_result = {"a": 2, "b": 2}
    middle_result = {"a": leaf_result, "b": leaf_result}
    assert outer.invoke(1, config) == {"a": middle_result, "b": middle_result}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("limit", [1, 2, None])
def test_nested_dicts_three_levels_deep(impl: Impl, limit) -> None:
    tree = impl.Parallel(
        a={"x": {"p": leaf, "q": leaf}, "y": {"p": leaf, "q": leaf}},
        b={"x": {"p": leaf, "q": leaf}, "y": leaf},
    )
    config = {} if limit is None else {"max_concurrency": limit}
    pair = {"p": 2, "q": 2}
    expected = {"a": {"x": pair, "y": pair}, "b": {"x": pair, "y": 2}}
    assert tree.invoke(1, config) == expected
    assert tree.batch([1, 1], config) == [expected, expected]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("limit", [1, 2, None])
def test_steps_calling_batch(impl: Impl, limit) -> None:
    inner = impl.Lambda(leaf)

    def fan(x: int, config: dict) -> list:
        return inner.batch([x, x + 1, x + 2], config)

    outer = impl.Parallel(a=fan, b=fan, c=lambda x: inner.batch([x] * 4))
    config = {} if limit is None else {"max_concurrency": limit}
    assert outer.invoke(1, config) == {"a": [2, 3, 4], "b": [2, 3, 4], "c": [2, 2, 2, 2]}
    assert impl.Lambda(fan).batch([1, 2], config) == [[2, 3, 4], [3, 4, 5]]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("limit", [1, 2, None])
def test_sync_step_running_its_own_event_loop(impl: Impl, limit) -> None:
    async def aleaf(x: int) -> int:
        await asyncio.sleep(0.001)
        return x + 1

    inner = impl.Parallel(a=aleaf, b=leaf)

    def step(x: int) -> dict:
        return asyncio.run(inner.ainvoke(x))

    outer = impl.Parallel(a=step, b=step)
    config = {} if limit is None else {"max_concurrency": limit}
    assert outer.invoke(1, config) == {"a": {"a": 2, "b": 2}, "b": {"a": 2, "b": 2}}


@pytest.mark.timeout(10)
def test_many_threads_fanning_out_at_once() -> None:
    par = Parallel(a=leaf, b=leaf, nested={"c": leaf, "d": leaf})
    errors: list = []
    results: list = []

    def worker() -> None:
        try:
            for _ in range(10):
                results.append(par.invoke(1, {"max_concurrency": 2}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=8)
    assert not errors
    assert results == [{"a": 2, "b": 2, "nested": {"c": 2, "d": 2}}] * 80


# --- past the pool's thread limit (512): a waiting caller never starves the pool -------------
# More blocking steps that fan out inside themselves than the pool has threads: every thread
# holds a step waiting for its own fan-out. The waiting caller then runs its fan-out's steps
# itself (fastlcel only: langchain_core makes a pool per call). The stress tests
# (tests/test_stress.py) take the same to 10,000 items.

PAST_THE_LIMIT = 2000


def sleeper(seconds: float):
    def step(x: int) -> int:
        time.sleep(seconds)
        return x + 1

    return step


@pytest.mark.timeout(30)
def test_blocking_steps_fanning_out_past_the_thread_limit() -> None:
    inner = Parallel(a=sleeper(0.01), b=sleeper(0.01))
    outer = Lambda(lambda x: inner.invoke(x))
    items = list(range(PAST_THE_LIMIT))
    expected = [{"a": x + 1, "b": x + 1} for x in items]
    assert outer.batch(items) == expected
    assert run_async(lambda: outer.abatch(items)) == expected
    wide = Parallel({f"k{i}": outer for i in range(PAST_THE_LIMIT)})
    assert wide.invoke(1) == {f"k{i}": {"a": 2, "b": 2} for i in range(PAST_THE_LIMIT)}


@pytest.mark.timeout(30)
def test_recursive_batches_twelve_levels_deep() -> None:
    """4,095 calls, each blocked on a batch of two calls of the level below."""
    tick = sleeper(0.001)

    def level(depth: int) -> int:
        if depth == 0:
            return tick(0)
        return sum(Lambda(level).batch([depth - 1, depth - 1]))

    assert level(12) == 2**12


@pytest.mark.timeout(30)
def test_each_fan_out_keeps_its_bound_when_its_caller_runs_its_steps() -> None:
    lock = threading.Lock()
    in_flight: dict[int, int] = {}
    peaks: dict[int, int] = {}

    def step(pair: tuple[int, int]) -> int:
        owner, _ = pair
        with lock:
            in_flight[owner] = in_flight.get(owner, 0) + 1
            peaks[owner] = max(peaks.get(owner, 0), in_flight[owner])
        time.sleep(0.005)
        with lock:
            in_flight[owner] -= 1
        return owner

    inner = Lambda(step)

    def fan(x: int) -> list:
        return inner.batch([(x, i) for i in range(4)], {"max_concurrency": 2})

    assert Lambda(fan).batch(list(range(PAST_THE_LIMIT))) == [
        [x] * 4 for x in range(PAST_THE_LIMIT)
    ]
    assert max(peaks.values()) <= 2


@pytest.mark.timeout(30)
def test_timeouts_past_the_thread_limit_do_not_fire_early() -> None:
    """A caller that must give up at a deadline cannot run its step itself: the step gets a
    thread beyond the limit (before, 2,000 such items raised StepTimeoutError)."""
    timed = Lambda(sleeper(0.02)).with_timeout(5)
    items = list(range(PAST_THE_LIMIT))
    assert timed.batch(items) == [x + 1 for x in items]
    assert Lambda(lambda x: timed.invoke(x)).batch(items) == [x + 1 for x in items]


@pytest.mark.timeout(30)
def test_streams_batches_as_completed_and_bridged_calls_past_the_thread_limit() -> None:
    def gen(x: int):
        time.sleep(0.01)
        yield x
        yield x

    async def aleaf(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    streamed = Parallel(a=gen, b=gen)
    inner = Parallel(a=sleeper(0.01), b=sleeper(0.01))
    bridged = Lambda(aleaf) | Parallel(p=sleeper(0.01), q=Lambda(aleaf) | sleeper(0.01))
    items = list(range(PAST_THE_LIMIT))
    chunks = Lambda(lambda x: len(list(streamed.stream(x)))).batch(items)
    assert chunks == [4] * PAST_THE_LIMIT
    pairs = Lambda(lambda x: sorted(inner.batch_as_completed([x, x]))).batch(items)
    assert pairs == [[(0, {"a": x + 1, "b": x + 1}), (1, {"a": x + 1, "b": x + 1})] for x in items]
    assert Lambda(lambda x: bridged.invoke(x)).batch(items) == [
        {"p": x + 1, "q": x + 1} for x in items
    ]

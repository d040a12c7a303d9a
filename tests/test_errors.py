"""Errors: the original exception object and traceback propagate; fastlcel fails fast.

Fail-fast is a deliberate difference from langchain_core (which waits for every sync step and
leaves async siblings running), so those tests run on fastlcel only.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback

import pytest
from conftest import Impl, run_async
from fastlcel import Lambda, Parallel


class StepError(Exception):
    pass


def frames_of(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


def make_raiser(raised: list):
    def user_step_that_raises(_x: object) -> None:
        raised.append(StepError("boom"))
        raise raised[-1]

    return user_step_that_raises


def make_async_raiser(raised: list):
    async def async_user_step_that_raises(_x: object) -> None:
        await asyncio.sleep(0)
        raised.append(StepError("boom"))
        raise raised[-1]

    return async_user_step_that_raises


def ok(x: object) -> object:
    return x


def test_lambda_invoke_raises_the_original_exception_with_its_traceback(impl: Impl) -> None:
    raised: list = []
    with pytest.raises(StepError) as info:
        impl.Lambda(make_raiser(raised)).invoke(1)
    assert info.value is raised[0]
    assert "user_step_that_raises" in frames_of(info.value)


def test_lambda_ainvoke_raises_the_original_exception_with_its_traceback(impl: Impl) -> None:
    raised: list = []
    lam = impl.Lambda(make_async_raiser(raised))
    with pytest.raises(StepError) as info:
        run_async(lambda: lam.ainvoke(1))
    assert info.value is raised[0]
    assert "async_user_step_that_raises" in frames_of(info.value)


def test_lambda_ainvoke_of_sync_function_raises_the_original_exception(impl: Impl) -> None:
    raised: list = []
    lam = impl.Lambda(make_raiser(raised))
    with pytest.raises(StepError) as info:
        run_async(lambda: lam.ainvoke(1))
    assert info.value is raised[0]
    assert "user_step_that_raises" in frames_of(info.value)


def test_parallel_invoke_raises_the_original_exception_with_its_traceback(impl: Impl) -> None:
    raised: list = []
    par = impl.Parallel(good=ok, bad=make_raiser(raised), other=ok)
    with pytest.raises(StepError) as info:
        par.invoke(1)
    assert info.value is raised[0]
    assert "user_step_that_raises" in frames_of(info.value)


def test_parallel_ainvoke_async_step_raises_the_original_exception(impl: Impl) -> None:
    raised: list = []
    par = impl.Parallel(good=ok, bad=make_async_raiser(raised))
    with pytest.raises(StepError) as info:
        run_async(lambda: par.ainvoke(1))
    assert info.value is raised[0]
    assert "async_user_step_that_raises" in frames_of(info.value)


def test_parallel_ainvoke_sync_step_raises_the_original_exception(impl: Impl) -> None:
    raised: list = []
    par = impl.Parallel(good=ok, bad=make_raiser(raised))
    with pytest.raises(StepError) as info:
        run_async(lambda: par.ainvoke(1))
    assert info.value is raised[0]
    assert "user_step_that_raises" in frames_of(info.value)


def test_nested_parallel_raises_the_original_exception(impl: Impl) -> None:
    raised: list = []
    par = impl.Parallel(good=ok, nested={"deeper": {"bad": make_raiser(raised)}})
    with pytest.raises(StepError) as info:
        par.invoke(1)
    assert info.value is raised[0]
    assert "user_step_that_raises" in frames_of(info.value)


def test_batch_raises_the_original_exception_with_its_traceback(impl: Impl) -> None:
    raised: list = []
    with pytest.raises(StepError) as info:
        impl.Lambda(make_raiser(raised)).batch([1])
    assert info.value is raised[0]
    assert "user_step_that_raises" in frames_of(info.value)


def test_abatch_raises_the_original_exception_with_its_traceback(impl: Impl) -> None:
    raised: list = []
    lam = impl.Lambda(make_async_raiser(raised))
    with pytest.raises(StepError) as info:
        run_async(lambda: lam.abatch([1]))
    assert info.value is raised[0]
    assert "async_user_step_that_raises" in frames_of(info.value)


def test_exception_attributes_and_chaining_survive(impl: Impl) -> None:
    class RichError(Exception):
        def __init__(self, code: int) -> None:
            super().__init__(code)
            self.code = code

    def step(_x: object) -> None:
        try:
            {}["missing"]
        except KeyError as cause:
            raise RichError(42) from cause

    with pytest.raises(RichError) as info:
        impl.Parallel(a=step, b=ok).invoke(1)
    assert info.value.code == 42
    assert isinstance(info.value.__cause__, KeyError)


def test_an_exception_returned_not_raised_is_a_result(impl: Impl) -> None:
    error = StepError("just a value")
    assert impl.Parallel(a=lambda _x: error).invoke(1) == {"a": error}


# --- fail fast (fastlcel only) -----------------------------------------------------------------

SLOW = 2.0  # seconds the slow sibling would take; every fail-fast test must finish well before


@pytest.mark.timeout(10)
@pytest.mark.parametrize("failing_first", [True, False], ids=["failing-declared-first", "last"])
def test_invoke_raises_without_waiting_for_a_slow_sibling(failing_first: bool) -> None:
    release = threading.Event()

    def slow(_x: object) -> str:
        release.wait(SLOW)
        return "slow"

    def fail(_x: object) -> None:
        raise StepError("fast failure")

    steps = {"fail": fail, "slow": slow} if failing_first else {"slow": slow, "fail": fail}
    start = time.monotonic()
    try:
        with pytest.raises(StepError):
            Parallel(steps).invoke(None)
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < SLOW / 2, f"invoke waited {elapsed:.2f}s for the slow sibling"


def sync_fast_failure(_x: object) -> None:
    time.sleep(0.01)
    raise StepError("fast failure")


async def async_fast_failure(_x: object) -> None:
    await asyncio.sleep(0.01)
    raise StepError("fast failure")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("fail", [sync_fast_failure, async_fast_failure], ids=["sync", "async"])
def test_ainvoke_failure_does_not_wait_for_a_slow_sync_sibling(fail) -> None:
    release = threading.Event()

    def slow(_x: object) -> str:
        release.wait(SLOW)
        return "slow"

    par = Parallel(slow=slow, fail=fail)
    start = time.monotonic()
    try:
        with pytest.raises(StepError):
            run_async(lambda: par.ainvoke(None))
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < SLOW / 2, f"ainvoke waited {elapsed:.2f}s for the slow sibling"


@pytest.mark.timeout(10)
def test_batch_raises_without_waiting_for_a_slow_item() -> None:
    release = threading.Event()

    def step(x: int) -> int:
        if x == 0:
            time.sleep(0.01)
            raise StepError("fast failure")
        release.wait(SLOW)
        return x

    start = time.monotonic()
    try:
        with pytest.raises(StepError):
            Lambda(step).batch([0, 1, 2])
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < SLOW / 2, f"batch waited {elapsed:.2f}s for the slow items"


@pytest.mark.parametrize(
    ("async_steps", "awaited"),
    [(False, False), (True, True), (False, True)],
    ids=["invoke", "ainvoke-async-steps", "ainvoke-sync-steps"],
)
def test_unstarted_steps_never_start_after_a_failure(async_steps: bool, awaited: bool) -> None:
    started: list[str] = []

    def record(name: str, *, fails: bool = False):
        def run() -> None:
            started.append(name)
            if fails:
                raise StepError("first")

        async def astep(_x: object) -> None:
            run()

        def step(_x: object) -> None:
            run()

        return astep if async_steps else step

    par = Parallel(fail=record("fail", fails=True), b=record("b"), c=record("c"), d=record("d"))
    config = {"max_concurrency": 1}
    with pytest.raises(StepError):
        if awaited:
            run_async(lambda: par.ainvoke(None, config))
        else:
            par.invoke(None, config)
    assert started == ["fail"]


def test_batch_unstarted_items_never_start_after_a_failure() -> None:
    started: list[int] = []

    def step(x: int) -> int:
        started.append(x)
        if x == 0:
            raise StepError("first")
        return x

    with pytest.raises(StepError):
        Lambda(step).batch([0, 1, 2, 3], {"max_concurrency": 1})
    assert started == [0]


def test_abatch_unstarted_items_never_start_after_a_failure() -> None:
    started: list[int] = []

    async def step(x: int) -> int:
        started.append(x)
        if x == 0:
            raise StepError("first")
        return x

    lam = Lambda(step)
    with pytest.raises(StepError):
        run_async(lambda: lam.abatch([0, 1, 2, 3], {"max_concurrency": 1}))
    assert started == [0]


@pytest.mark.timeout(10)
def test_ainvoke_cancels_async_siblings_on_failure() -> None:
    observed: list[str] = []

    async def fail(_x: object) -> None:
        await asyncio.sleep(0.01)
        raise StepError("first")

    async def sleeper(_x: object) -> None:
        try:
            await asyncio.sleep(SLOW)
        except asyncio.CancelledError:
            observed.append("cancelled")
            raise
        finally:
            observed.append("finally")

    async def main() -> float:
        start = time.monotonic()
        with pytest.raises(StepError):
            await Parallel(a=sleeper, fail=fail, b=sleeper).ainvoke(None)
        elapsed = time.monotonic() - start
        for _ in range(10):  # let the cancelled tasks run their handlers
            await asyncio.sleep(0)
        return elapsed

    elapsed = run_async(main)
    assert elapsed < SLOW / 2
    assert observed == ["cancelled", "finally", "cancelled", "finally"]


@pytest.mark.timeout(10)
def test_abatch_cancels_async_items_on_failure() -> None:
    observed: list[int] = []

    async def step(x: int) -> int:
        if x == 0:
            await asyncio.sleep(0.01)
            raise StepError("first")
        try:
            await asyncio.sleep(SLOW)
        except asyncio.CancelledError:
            observed.append(x)
            raise
        return x

    async def main() -> float:
        start = time.monotonic()
        with pytest.raises(StepError):
            await Lambda(step).abatch([1, 0, 2])
        elapsed = time.monotonic() - start
        for _ in range(10):
            await asyncio.sleep(0)
        return elapsed

    elapsed = run_async(main)
    assert elapsed < SLOW / 2
    assert sorted(observed) == [1, 2]


def test_two_failures_raise_one_and_report_nothing_else() -> None:
    """The second failure must not surface as "exception was never retrieved" or a warning."""

    async def fail_soon(_x: object) -> None:
        await asyncio.sleep(0.01)
        raise StepError("first")

    async def fail_later(_x: object) -> None:
        try:
            await asyncio.sleep(0.05)
        finally:
            raise StepError("second")

    par = Parallel(a=fail_soon, b=fail_later)
    with pytest.raises(StepError, match="first"):
        run_async(lambda: par.ainvoke(None))


def test_the_core_keeps_working_after_errors() -> None:
    par = Parallel(bad=make_raiser([]), good=ok)
    for _ in range(20):
        with pytest.raises(StepError):
            par.invoke(1)
    assert Parallel(a=ok, b=ok).invoke(5) == {"a": 5, "b": 5}

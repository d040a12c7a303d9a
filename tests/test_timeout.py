"""with_timeout and the timeout config key: sync and async steps, all four methods."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fakes import AsyncFlaky, Flaky, Ticker, cancel_while_running, progress_of_another_thread
from fastlcel import FastLcelError, Lambda, Parallel, StepTimeoutError


def sleeper(seconds: float) -> Any:
    def slow(x: Any) -> Any:
        time.sleep(seconds)
        return x

    return slow


def async_sleeper(seconds: float, cancelled: list[Any] | None = None) -> Any:
    async def aslow(x: Any) -> Any:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if cancelled is not None:
                cancelled.append(x)
            raise
        return x

    return aslow


def timed_by_input(x: float) -> float:
    """Sleeps x seconds."""
    time.sleep(x)
    return x


async def atimed_by_input(x: float) -> float:
    await asyncio.sleep(x)
    return x


def test_the_error_is_a_timeout_error_and_a_fastlcel_error() -> None:
    assert issubclass(StepTimeoutError, TimeoutError)
    assert issubclass(StepTimeoutError, FastLcelError)


class TestSync:
    def test_fast_step(self) -> None:
        assert Lambda(sleeper(0)).with_timeout(1).invoke(3) == 3

    def test_slow_step_raises_at_the_deadline(self) -> None:
        started = time.perf_counter()
        with pytest.raises(StepTimeoutError) as info:
            Lambda(sleeper(1.0)).with_timeout(0.1).invoke(3)
        assert 0.09 <= time.perf_counter() - started < 0.5
        assert info.value.step == "slow"
        assert info.value.timeout == 0.1
        assert str(info.value) == "step 'slow' timed out after 0.1 s"

    def test_late_result_is_discarded(self) -> None:
        finished = threading.Event()

        def slow(x: Any) -> Any:
            time.sleep(0.2)
            finished.set()
            return x

        with pytest.raises(StepTimeoutError):
            Lambda(slow).with_timeout(0.05).invoke(1)
        assert finished.wait(2)  # the thread ran to its end; nothing was raised or returned

    def test_errors_of_the_step_pass_through(self) -> None:
        step = Flaky(None, exc=KeyError)
        with pytest.raises(KeyError) as info:
            Lambda(step).with_timeout(1).invoke(1)
        assert info.value is step.raised[0]

    def test_waiting_releases_the_gil(self) -> None:
        def call() -> None:
            with pytest.raises(StepTimeoutError):
                Lambda(sleeper(1)).with_timeout(0.1).invoke(1)

        assert progress_of_another_thread(call) > 1000

    def test_batch_fails_only_the_slow_items(self) -> None:
        r = Lambda(timed_by_input).with_timeout(0.2)
        started = time.perf_counter()
        results = r.batch([0.0, 1.0, 0.01], return_exceptions=True)
        assert time.perf_counter() - started < 0.8
        assert results[0] == 0.0 and results[2] == 0.01
        assert isinstance(results[1], StepTimeoutError)

    def test_config_key(self) -> None:
        with pytest.raises(StepTimeoutError):
            Lambda(sleeper(1)).invoke(1, {"timeout": 0.05})
        assert Lambda(sleeper(0)).invoke(1, {"timeout": 1}) == 1

    def test_config_key_per_input(self) -> None:
        r = Lambda(timed_by_input)
        results = r.batch([0.3, 0.3], [{"timeout": 0.05}, {}], return_exceptions=True)
        assert isinstance(results[0], StepTimeoutError)
        assert results[1] == 0.3

    def test_config_key_bounds_the_whole_call_once(self) -> None:
        # Applied to the called Parallel, not again to each of its steps.
        p = Parallel(a=sleeper(0.05), b=sleeper(1))
        with pytest.raises(StepTimeoutError) as info:
            p.invoke(1, {"timeout": 0.2})
        assert info.value.step == "RunnableParallel<a,b>"


class TestAsync:
    def test_async_step_is_cancelled_at_the_deadline(self) -> None:
        cancelled: list[Any] = []
        r = Lambda(async_sleeper(5, cancelled)).with_timeout(0.05)

        async def main() -> None:
            with pytest.raises(StepTimeoutError) as info:
                await r.ainvoke(7)
            assert info.value.step == "aslow"

        started = time.perf_counter()
        asyncio.run(main())
        assert time.perf_counter() - started < 1
        assert cancelled == [7]

    def test_fast_async_step(self) -> None:
        assert asyncio.run(Lambda(async_sleeper(0)).with_timeout(1).ainvoke(2)) == 2

    def test_sync_step_does_not_block_the_loop(self) -> None:
        r = Lambda(sleeper(1)).with_timeout(0.2)

        async def main() -> int:
            async with Ticker(0.01) as ticker:
                with pytest.raises(StepTimeoutError):
                    await r.ainvoke(1)
            return ticker.ticks

        assert asyncio.run(main()) >= 10

    def test_a_timeout_error_of_the_step_itself_is_not_converted(self) -> None:
        step = AsyncFlaky(None, exc=TimeoutError)
        with pytest.raises(TimeoutError) as info:
            asyncio.run(Lambda(step).with_timeout(1).ainvoke(1))
        assert info.value is step.raised[0]
        assert not isinstance(info.value, StepTimeoutError)

    def test_cancelling_the_caller_cancels_the_step(self) -> None:
        cancelled: list[Any] = []
        r = Lambda(async_sleeper(5, cancelled)).with_timeout(2)
        cancel_while_running(r.ainvoke(1), 0.02)
        assert cancelled == [1]

    @pytest.mark.parametrize("step", [timed_by_input, atimed_by_input])
    def test_abatch(self, step: Any) -> None:
        r = Lambda(step).with_timeout(0.2)
        results = asyncio.run(r.abatch([0.0, 2.0, 0.01], return_exceptions=True))
        assert results[0] == 0.0 and results[2] == 0.01
        assert isinstance(results[1], StepTimeoutError)

    def test_config_key(self) -> None:
        with pytest.raises(StepTimeoutError):
            asyncio.run(Lambda(atimed_by_input).ainvoke(1, {"timeout": 0.05}))
        results = asyncio.run(
            Lambda(atimed_by_input).abatch([1, 0], {"timeout": 0.05}, return_exceptions=True)
        )
        assert isinstance(results[0], StepTimeoutError) and results[1] == 0


class TestComposition:
    @pytest.mark.parametrize("slow", [sleeper(1), async_sleeper(1)])
    def test_timeout_in_parallel_fails_that_step(self, slow: Any) -> None:
        p = Parallel(fast=abs, slow=Lambda(slow).with_timeout(0.05))
        if slow.__name__ == "slow":
            with pytest.raises(StepTimeoutError) as info:
                p.invoke(-1)
            assert info.value.step == "slow"
        with pytest.raises(StepTimeoutError):
            asyncio.run(p.ainvoke(-1))

    @pytest.mark.parametrize("slow", [sleeper(1), async_sleeper(1)])
    def test_timeout_in_collecting_parallel(self, slow: Any) -> None:
        p = Parallel(fast=abs, slow=Lambda(slow).with_timeout(0.05), on_error="collect")
        results = [asyncio.run(p.ainvoke(-1))]
        if slow.__name__ == "slow":
            results.append(p.invoke(-1))
        for result in results:
            assert result["fast"] == 1
            assert isinstance(result["slow"], StepTimeoutError)

    def test_retry_after_a_timeout(self) -> None:
        calls = []

        def slow_once(x: Any) -> Any:
            calls.append(x)
            if len(calls) == 1:
                time.sleep(0.5)
            return x

        r = Lambda(slow_once).with_timeout(0.05).with_retry(wait_exponential_jitter=False)
        assert r.invoke(1) == 1
        assert len(calls) == 2

    def test_timeout_as_fallback_trigger(self) -> None:
        r = Lambda(sleeper(1)).with_timeout(0.05).with_fallbacks([Lambda(lambda x: "cached")])
        assert r.invoke(1) == "cached"
        assert asyncio.run(r.ainvoke(1)) == "cached"

    def test_repr(self) -> None:
        assert repr(Lambda(abs).with_timeout(1.5)) == (
            "Timeout(bound=RunnableLambda(abs), seconds=1.5)"
        )


class TestArguments:
    @pytest.mark.parametrize("seconds", [0, -1, float("nan")])
    def test_positive_seconds(self, seconds: float) -> None:
        with pytest.raises(ValueError, match="positive number of seconds"):
            Lambda(abs).with_timeout(seconds)

    @pytest.mark.parametrize("seconds", [float("inf"), 2**70])
    def test_finite_seconds(self, seconds: float) -> None:
        with pytest.raises(ValueError, match=r"too large: .*at most 1e9 seconds"):
            Lambda(abs).with_timeout(seconds)

    def test_number(self) -> None:
        with pytest.raises(TypeError, match="number of seconds"):
            Lambda(abs).with_timeout("1")  # type: ignore[arg-type]

    def test_config_value(self) -> None:
        with pytest.raises(ValueError, match=r"config\['timeout'\]"):
            Lambda(abs).invoke(1, {"timeout": -1})

"""Steps on an executor, ``Lambda(func, executor=...)``: a real process pool (forkserver), and
executors whose futures the test completes or leaves pending. Only the function call crosses:
order, ``return_exceptions``, retries, timeouts, limits and fail-fast stay on the caller's side,
and a caller that stops waiting cancels the executor's future."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import re
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from conftest import Child, run_async
from fastlcel import (
    ConcurrencyLimit,
    ExecutorError,
    FastLcelError,
    FastLcelTypeError,
    Lambda,
    Parallel,
    Passthrough,
    StepTimeoutError,
)
from remote import (
    ManualExecutor,
    StepError,
    add,
    die,
    fail,
    fail_on_odd,
    flaky,
    inc,
    os_threads,
    pid,
    threads_now,
)

# forkserver where there is one (this process has threads: fork could deadlock), else spawn
START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def process_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(START))


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with process_pool(2) as pool:
        yield pool


def step_name(fn: Any) -> str:
    """How messages name the step of ``fn``: its runnable's repr, as a regex."""
    return re.escape(repr(Lambda(fn)))


def in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    """Runs ``call()`` in a thread; the list gets its result or its exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def finish(thread: threading.Thread, out: list[Any]) -> Any:
    thread.join(5)
    assert not thread.is_alive(), "the call did not end"
    return out[0]


class TestOnAProcessPool:
    def test_every_call_method_returns_what_running_here_returns(
        self, pool: ProcessPoolExecutor
    ) -> None:
        here, there = Lambda(inc), Lambda(inc, executor=pool)
        inputs = list(range(20))
        assert there.invoke(1) == here.invoke(1) == 2
        assert there.batch(inputs) == here.batch(inputs)
        assert run_async(lambda: there.ainvoke(1)) == 2
        assert run_async(lambda: there.abatch(inputs)) == here.batch(inputs)
        assert list(there.stream(1)) == [2]
        assert sorted(there.batch_as_completed([1, 2])) == [(0, 2), (1, 3)]

    def test_calls_run_in_the_pools_processes(self, pool: ProcessPoolExecutor) -> None:
        pids = Lambda(pid, executor=pool).batch(list(range(8)))
        assert multiprocessing.current_process().pid not in pids

    def test_bound_and_call_keyword_arguments_cross(self, pool: ProcessPoolExecutor) -> None:
        assert Lambda(add, executor=pool).bind(n=10).invoke(1) == 11
        assert Lambda(add, executor=pool).invoke(1, n=5) == 6

    def test_a_steps_exception_keeps_its_type(self, pool: ProcessPoolExecutor) -> None:
        with pytest.raises(StepError, match="step failed on 1"):
            Lambda(fail, executor=pool).invoke(1)
        with pytest.raises(StepError):
            run_async(lambda: Lambda(fail, executor=pool).ainvoke(1))

    @pytest.mark.parametrize("method", ["batch", "abatch"])
    def test_return_exceptions_fills_each_slot(
        self, pool: ProcessPoolExecutor, method: str
    ) -> None:
        step = Lambda(fail_on_odd, executor=pool)
        if method == "batch":
            got = step.batch([0, 1, 2, 3], return_exceptions=True)
        else:
            got = run_async(lambda: step.abatch([0, 1, 2, 3], return_exceptions=True))
        assert got[0::2] == [0, 2]
        assert [type(e) for e in got[1::2]] == [StepError, StepError]
        assert str(got[3]) == "odd 3"

    def test_retries_run_on_the_callers_side_across_processes(
        self, pool: ProcessPoolExecutor, tmp_path
    ) -> None:
        step = (
            Lambda(flaky, executor=pool)
            .bind(state=str(tmp_path), failures=2)
            .with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
        )
        results = step.batch([1, 2, 3])
        assert [x for x, _ in results] == [1, 2, 3]
        for x in (1, 2, 3):
            calls = (tmp_path / str(x)).read_text().split()
            assert len(calls) == 3  # two failures, then the success
        assert str(multiprocessing.current_process().pid) not in (tmp_path / "1").read_text()

    def test_a_function_that_cannot_be_pickled_names_the_step(
        self, pool: ProcessPoolExecutor
    ) -> None:
        local = lambda x: x  # noqa: E731
        step = Lambda(local, executor=pool)
        with pytest.raises(ExecutorError) as info:
            step.invoke(1)
        message = str(info.value)
        assert re.match(step_name(local) + ": its function cannot be pickled", message)
        assert "ProcessPoolExecutor" in message
        assert isinstance(info.value.__cause__, (pickle.PicklingError, AttributeError))
        with pytest.raises(ExecutorError, match="cannot be pickled"):
            run_async(lambda: step.abatch([1, 2]))

    def test_an_input_that_cannot_be_pickled_names_the_step(
        self, pool: ProcessPoolExecutor
    ) -> None:
        with pytest.raises(ExecutorError, match=f"^{step_name(inc)}: its input cannot be pickled"):
            Lambda(inc, executor=pool).invoke(threading.Lock())

    def test_a_broken_pool_is_the_steps_error_and_stays_clear(self) -> None:
        with process_pool(1) as broken:
            with pytest.raises(
                ExecutorError, match=f"^{step_name(die)}: its executor .* is broken"
            ):
                Lambda(die, executor=broken).invoke(1)
            for _ in range(2):  # later calls: the same clear error, at once
                with pytest.raises(ExecutorError, match=f"^{step_name(inc)}: .* is broken") as info:
                    Lambda(inc, executor=broken).invoke(1)
                assert isinstance(info.value.__cause__, BrokenProcessPool)
            with pytest.raises(ExecutorError, match="is broken"):
                run_async(lambda: Lambda(inc, executor=broken).abatch([1, 2]))

    def test_a_shut_down_pool_refuses_the_call(self) -> None:
        stopped = process_pool(1)
        stopped.shutdown()
        with pytest.raises(ExecutorError, match=f"^{step_name(inc)}: its executor .* refused"):
            Lambda(inc, executor=stopped).invoke(1)

    def test_in_a_chain_and_a_parallel(self, pool: ProcessPoolExecutor) -> None:
        remote_inc = Lambda(inc, executor=pool)
        chain = Lambda(lambda x: x * 2) | remote_inc | {"a": remote_inc, "b": Passthrough()}
        assert chain.batch([1, 2]) == [{"a": 4, "b": 3}, {"a": 6, "b": 5}]
        assert run_async(lambda: chain.ainvoke(1)) == {"a": 4, "b": 3}
        assert Parallel(a=remote_inc, b=Lambda(inc)).invoke(1) == {"a": 2, "b": 2}


class TestCallersSide:
    """An executor whose futures the test completes: what fastlcel does around the call."""

    @pytest.mark.parametrize("method", ["batch", "abatch"])
    def test_results_follow_the_inputs_not_the_completions(self, method: str) -> None:
        executor = ManualExecutor()
        step = Lambda(inc, executor=executor)
        if method == "batch":
            call = lambda: step.batch([0, 1, 2, 3])  # noqa: E731
        else:
            call = lambda: asyncio.run(step.abatch([0, 1, 2, 3]))  # noqa: E731
        thread, out = in_thread(call)
        executor.wait_submitted(4)
        for i in (3, 1, 2, 0):
            executor.run(i)
        assert finish(thread, out) == [1, 2, 3, 4]

    def test_sync_timeout_cancels_the_future(self) -> None:
        executor = ManualExecutor()
        with pytest.raises(StepTimeoutError):
            Lambda(inc, executor=executor).with_timeout(0.05).invoke(1)
        executor.wait_until(lambda e: len(e.cancelled) == 1)
        with pytest.raises(StepTimeoutError):
            Lambda(inc, executor=executor).invoke(1, {"timeout": 0.05})
        executor.wait_until(lambda e: len(e.cancelled) == 2)

    def test_async_timeout_cancels_the_future(self) -> None:
        executor = ManualExecutor()
        step = Lambda(inc, executor=executor).with_timeout(0.05)
        with pytest.raises(StepTimeoutError):
            run_async(lambda: step.ainvoke(1))
        with pytest.raises(StepTimeoutError):
            run_async(lambda: step.abatch([1, 2]))
        assert len(executor.cancelled) == 3

    @pytest.mark.parametrize("method", ["batch", "abatch"])
    def test_fail_fast_cancels_the_calls_in_flight(self, method: str) -> None:
        executor = ManualExecutor()
        step = Lambda(inc, executor=executor)
        if method == "batch":
            call = lambda: step.batch(list(range(5)))  # noqa: E731
        else:
            call = lambda: asyncio.run(step.abatch(list(range(5))))  # noqa: E731
        thread, out = in_thread(call)
        executor.wait_submitted(5)
        executor.submitted[2].fn = fail
        executor.run(2)
        assert isinstance(finish(thread, out), StepError)
        executor.wait_until(lambda e: len(e.cancelled) == 4)

    def test_cancelling_the_awaiting_task_cancels_the_future(self) -> None:
        executor = ManualExecutor()
        step = Lambda(inc, executor=executor)

        async def main() -> None:
            for call in (step.ainvoke(1), step.abatch([1, 2])):
                task = asyncio.ensure_future(call)
                while not executor.pending:
                    await asyncio.sleep(0.001)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert not executor.pending

        run_async(main)
        assert len(executor.cancelled) == 3

    @pytest.mark.parametrize(
        "make",
        [
            lambda step: (step.with_concurrency_limit(ConcurrencyLimit(2)), None),
            lambda step: (step, {"max_concurrency": 2}),
        ],
        ids=["ConcurrencyLimit", "max_concurrency"],
    )
    def test_limits_hold_on_the_callers_side(self, make: Any) -> None:
        executor = ManualExecutor()
        step, config = make(Lambda(inc, executor=executor))
        thread, out = in_thread(lambda: step.batch(list(range(6)), config))
        for done in range(6):
            executor.wait_until(lambda e, done=done: len(e.pending) == min(2, 6 - done))
            executor.pending[0].run()
        assert finish(thread, out) == [1, 2, 3, 4, 5, 6]
        assert len(executor.submitted) == 6

    def test_the_cache_submits_each_key_once(self) -> None:
        executor = ManualExecutor()
        step = Lambda(inc, executor=executor).with_cache()
        thread, out = in_thread(lambda: step.batch([1, 1, 1, 2]))
        executor.wait_submitted(2)
        for i in (0, 1):
            executor.run(i)
        assert finish(thread, out) == [2, 2, 2, 3]
        assert len(executor.submitted) == 2

    def test_fallbacks_run_here_when_the_remote_call_fails(self) -> None:
        step = Lambda(fail, executor=ThreadPoolExecutor(1)).with_fallbacks([Lambda(inc)])
        assert step.invoke(1) == 2
        assert run_async(lambda: step.ainvoke(1)) == 2

    def test_a_submit_that_raises_is_the_steps_executor_error(self) -> None:
        class Full:
            def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("queue full")

        with pytest.raises(ExecutorError) as info:
            Lambda(inc, executor=Full()).invoke(1)
        expected = f"{Lambda(inc)!r}: its executor (Full) refused the call: queue full"
        assert str(info.value) == expected
        assert isinstance(info.value.__cause__, RuntimeError)
        assert isinstance(info.value, FastLcelError)
        with pytest.raises(ExecutorError, match="refused"):
            run_async(lambda: Lambda(inc, executor=Full()).abatch([1]))

    def test_a_submit_that_returns_no_future(self) -> None:
        class Odd:
            def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                return 42

        with pytest.raises(ExecutorError, match=r"Odd.submit returned an object of type 'int'"):
            Lambda(inc, executor=Odd()).invoke(1)

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/task")
    @pytest.mark.parametrize("method", ["batch", "abatch"])
    @pytest.mark.parametrize("shape", ["bare", "with_retry.with_timeout", "map"])
    def test_a_batch_of_1000_adds_no_thread_per_item(self, method: str, shape: str) -> None:
        """Wrappers stay on the caller's side and wait without threads too; ``map()`` is a batch
        inside a step (one list input of 1,000 items)."""
        with ThreadPoolExecutor(1) as one_thread:
            step = Lambda(threads_now, executor=one_thread)
            if shape == "with_retry.with_timeout":
                step = step.with_retry().with_timeout(30)
            inputs: list[Any] = list(range(1000))
            if shape == "map":
                step, inputs = step.map() | Lambda(max), [inputs]
            step.batch(inputs[:1])  # starts fastlcel's event loop and the executor's thread
            run_async(lambda: step.abatch(inputs[:1]))
            before = os_threads()
            if method == "batch":
                seen = step.batch(inputs)
            else:
                seen = run_async(lambda: step.abatch(inputs))
        assert max(seen) <= before + 2, (before, max(seen))


class TestConstruction:
    def test_an_object_without_submit(self) -> None:
        with pytest.raises(
            FastLcelTypeError, match=f"^{step_name(inc)}: executor must have a submit"
        ):
            Lambda(inc, executor=object())

    def test_an_async_function(self) -> None:
        async def fetch(x: Any) -> Any:
            return x

        with pytest.raises(
            FastLcelTypeError, match=f"^{step_name(fetch)} cannot run on an .*async"
        ):
            Lambda(fetch, executor=ThreadPoolExecutor(1))

    def test_a_function_that_takes_config(self) -> None:
        def configured(x: Any, config: Any) -> Any:
            return x

        with pytest.raises(FastLcelTypeError, match=f"^{step_name(configured)} .*takes `config`"):
            Lambda(configured, executor=ThreadPoolExecutor(1))

    def test_a_generator_function(self) -> None:
        def chunks(x: Any) -> Any:
            yield x

        with pytest.raises(FastLcelTypeError, match="generator"):
            Lambda(chunks, executor=ThreadPoolExecutor(1))

    def test_an_afunc(self) -> None:
        async def ainc(x: int) -> int:
            return x + 1

        with pytest.raises(FastLcelTypeError, match="afunc"):
            Lambda(inc, ainc, executor=ThreadPoolExecutor(1))

    def test_the_executor_is_kept(self) -> None:
        executor = ThreadPoolExecutor(1)
        assert Lambda(inc, executor=executor).executor is executor
        assert Lambda(inc).executor is None
        assert Lambda(inc, executor=None).invoke(1) == 2


CTRL_C = """
    import threading, time
    from concurrent.futures import Future
    from fastlcel import Lambda

    cancelled = []

    class Pending:
        def submit(self, fn, /, *args, **kwargs):
            future = Future()
            future.add_done_callback(lambda f: f.cancelled() and cancelled.append(f))
            return future

    step = Lambda(abs, executor=Pending())
    print("ready", flush=True)
    try:
        step.{call}
    except KeyboardInterrupt:
        for _ in range(200):
            if len(cancelled) == {n}:
                break
            time.sleep(0.01)
        print(f"interrupted, {{len(cancelled)}} cancelled", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.timeout(20)
@pytest.mark.parametrize("call, n", [("invoke(1)", 1), ("batch([1, 2, 3])", 3)])
def test_ctrl_c_cancels_the_futures(call: str, n: int, tmp_path) -> None:
    child = Child(CTRL_C.format(call=call, n=n), tmp_path)
    try:
        assert child.read_line(timeout=15) == "ready", child.finish(1)
        threading.Event().wait(0.3)  # the call blocks
        child.proc.send_signal(signal.SIGINT)
        line = child.read_line(timeout=5)
    finally:
        returncode, _out, err, _ = child.finish(timeout=5)
    assert line == f"interrupted, {n} cancelled", err
    assert returncode == 0, err


# ------------------------------------------------------------------------------------- tracing


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "batch", "abatch", "stream", "astream"])
def test_a_traced_step_records_the_run_it_would_record_here(
    pool: ProcessPoolExecutor, how: str
) -> None:
    """The executor is invisible in a trace: the run trees are langchain_core's for the same
    functions run in-process (names, inputs, outputs, errors)."""
    import fastlcel
    from langchain_core import runnables as lc
    from runtrees import record, render

    programs = [
        (lambda lib, executor: lib.RunnableLambda(inc, **executor), 1),
        (
            lambda lib, executor: (
                lib.RunnableLambda(inc) | lib.RunnableLambda(fail_on_odd, **executor)
            ),
            2,
        ),
    ]
    for build, x in programs:
        if how in ("batch", "abatch") and x == 2:
            continue  # fail-fast: a deliberate difference (see test_tracing)
        theirs = record(build(lc, {}), x, how)
        ours = record(build(fastlcel, {"executor": pool}), x, how)
        assert ours[1], "nothing was traced"
        assert ours[0] == theirs[0]
        assert ours[1] == theirs[1], "\n\nfastlcel:\n{}\n\nlangchain_core:\n{}".format(
            "\n".join(render(t) for t in ours[1]), "\n".join(render(t) for t in theirs[1])
        )

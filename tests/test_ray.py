"""``fastlcel.RayExecutor`` on a local Ray cluster (``num_cpus=2``, one for the module, its files in
the test's tmp dir): order, errors, a timeout that kills the task, async calls, per-step options,
a second driver joining the cluster. Skipped without Ray (``.ci/run`` installs it for one Python),
but for the lazy import."""

from __future__ import annotations

import functools
import operator
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Child, run_async
from fastlcel import Lambda, RayExecutor, StepTimeoutError
from remote import StepError, add, fail, fail_on_odd, inc, pid, sleep_then

pytestmark = pytest.mark.timeout(120)


def test_ray_is_imported_on_first_use_only(tmp_path) -> None:
    child = Child(
        """
        import importlib.util, sys, fastlcel
        print("ray" in sys.modules)
        if importlib.util.find_spec("ray"):
            print(repr(fastlcel.RayExecutor(num_cpus=1)), "ray" in sys.modules)
        else:
            print("RayExecutor(num_cpus=1) False")
        """,
        tmp_path,
    )
    returncode, out, err, _ = child.finish(timeout=30)
    assert (returncode, out.split("\n")[:2]) == (0, ["False", "RayExecutor(num_cpus=1) False"]), err


def test_without_ray_the_executor_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'fastlcel\[ray\]'"):
        RayExecutor()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    # A throwaway local cluster: no token written to ~/.ray (the children inherit this).
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        # the workers import the steps' module (tests/remote.py) by name
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}},
    )
    yield context
    ray.shutdown()
    if auth_mode is None:
        del os.environ["RAY_AUTH_MODE"]
    else:
        os.environ["RAY_AUTH_MODE"] = auth_mode


@pytest.fixture
def executor(cluster: Any) -> RayExecutor:
    return RayExecutor()


def assigned_cpus(_x: Any) -> float:
    import ray

    return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)


def test_results_in_input_order(executor: RayExecutor) -> None:
    step = Lambda(inc, executor=executor)
    assert step.invoke(1) == 2
    assert step.batch(list(range(20))) == list(range(1, 21))
    assert run_async(lambda: step.ainvoke(1)) == 2
    assert run_async(lambda: step.abatch(list(range(20)))) == list(range(1, 21))


def test_a_steps_exception_comes_back_as_its_own_type(executor: RayExecutor) -> None:
    with pytest.raises(StepError) as info:
        Lambda(fail, executor=executor).invoke(1)
    assert type(info.value) is StepError
    assert str(info.value) == "step failed on 1"
    from ray.exceptions import RayTaskError

    assert isinstance(info.value.__cause__, RayTaskError)  # the remote traceback
    got = Lambda(fail_on_odd, executor=executor).batch([0, 1, 2], return_exceptions=True)
    assert got[0::2] == [0, 2]
    assert type(got[1]) is StepError


@pytest.mark.parametrize("method", ["invoke", "ainvoke"])
def test_a_timeout_kills_the_task(executor: RayExecutor, method: str) -> None:
    """Two tasks of 30 s hold both CPUs; killed at the deadline, the next tasks start at once."""
    slow = Lambda(sleep_then, executor=executor).with_timeout(0.5)
    started = time.monotonic()
    if method == "invoke":
        got = slow.batch([30, 30], return_exceptions=True)
    else:
        got = run_async(lambda: slow.abatch([30, 30], return_exceptions=True))
    assert [type(e) for e in got] == [StepTimeoutError, StepTimeoutError]
    assert time.monotonic() - started < 5
    started = time.monotonic()
    assert len(Lambda(pid, executor=executor).batch([0, 1])) == 2
    assert time.monotonic() - started < 15  # not 30: the CPUs were given back


def test_async_calls_with_a_concurrency_cap(executor: RayExecutor) -> None:
    step = Lambda(inc, executor=executor)
    got = run_async(lambda: step.abatch(list(range(10)), {"max_concurrency": 3}))
    assert got == list(range(1, 11))


def test_options_are_per_step(cluster: Any) -> None:
    assert Lambda(assigned_cpus, executor=RayExecutor()).invoke(0) == 1.0
    assert Lambda(assigned_cpus, executor=RayExecutor(num_cpus=2)).invoke(0) == 2.0
    assert RayExecutor(num_cpus=2, resources={"x": 1}).options == {
        "num_cpus": 2,
        "resources": {"x": 1},
    }


def test_a_step_on_ray_pickles_with_its_options(cluster: Any) -> None:
    import pickle

    step = Lambda(inc, executor=RayExecutor(num_cpus=1))
    copy = pickle.loads(pickle.dumps(step))
    assert copy.executor.options == {"num_cpus": 1}
    assert copy.invoke(1) == 2


def test_functions_cross_with_cloudpickle(executor: RayExecutor) -> None:
    assert Lambda(lambda x: x * 3, executor=executor).invoke(2) == 6


def test_another_driver_joins_the_cluster(cluster: Any, tmp_path) -> None:
    address = cluster.address_info["address"]
    child = Child(
        f"""
        import ray
        from fastlcel import Lambda, RayExecutor
        ray.init(address={address!r}, log_to_driver=False)
        print(Lambda(lambda x: x + 1, executor=RayExecutor()).batch([1, 2]), flush=True)
        """,
        tmp_path,
    )
    returncode, out, err, _ = child.finish(timeout=60)
    assert returncode == 0, err
    assert out.strip().splitlines()[-1] == "[2, 3]"


def test_a_quick_task_is_not_held_back_by_slow_ones(cluster: Any) -> None:
    """Tasks in flight are watched together: quick calls come back one after another while two
    slow tasks (half a CPU each, cancelled at the end) are still running."""
    slow = Lambda(sleep_then, executor=RayExecutor(num_cpus=0.5)).with_timeout(20)
    quick = Lambda(inc, executor=RayExecutor(num_cpus=0.5))

    async def beside_slow_ones() -> float:
        import asyncio

        running = asyncio.ensure_future(slow.abatch([30, 30], return_exceptions=True))
        await asyncio.sleep(1.0)  # the slow tasks are running
        started = time.monotonic()
        for x in range(20):
            assert await quick.ainvoke(x) == x + 1
        seconds = time.monotonic() - started
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        return seconds

    seconds = run_async(beside_slow_ones)
    assert seconds < 10  # 20 round trips of a few ms each (and a worker started), not 30 s


def test_ray_shut_down_with_tasks_in_flight_fails_them(cluster: Any, tmp_path) -> None:
    """A driver that disconnects (``ray.shutdown()``) while its calls wait: each call fails as
    the step's ExecutorError, and fastlcel does not start a new Ray behind the user's back (not
    in its completer, not when the failure cancels the other calls)."""
    address = cluster.address_info["address"]
    child = Child(
        f"""
        import threading, time, ray
        from fastlcel import ExecutorError, Lambda, RayExecutor
        ray.init(address={address!r}, log_to_driver=False)
        step = Lambda(time.sleep, executor=RayExecutor(num_cpus=0.1))
        got = []
        def call():
            try:
                got.append(step.batch([30, 30]))
            except ExecutorError as exc:
                got.append(exc)
        caller = threading.Thread(target=call)
        caller.start()
        from fastlcel._ray import _RayFuture, _settle
        unsettled = _RayFuture(ray.put(0))  # futures the completer never saw
        late = _RayFuture(ray.put(0))
        time.sleep(2)
        ray.shutdown()
        caller.join(20)
        # Neither calls ray.cancel nor ray.get, which would start a new Ray:
        assert unsettled.cancel()
        _settle([late])  # as a round that ray.shutdown() overtook
        assert "Ray was shut down" in str(late.exception())
        print(caller.is_alive(), type(got[0]).__name__, ray.is_initialized())
        print(got[0])
        """,
        tmp_path,
    )
    returncode, out, err, _ = child.finish(timeout=60)
    assert returncode == 0, err
    lines = out.strip().splitlines()
    assert lines[-2] == "False ExecutorError False", (out, err)
    assert lines[-1] == (
        "RunnableLambda(sleep): its executor (RayExecutor) is broken: "
        "Ray was shut down (ray.shutdown) with the task in flight"
    )


def test_the_process_exits_with_tasks_in_flight(cluster: Any, tmp_path) -> None:
    address = cluster.address_info["address"]
    child = Child(
        f"""
        import time, ray
        from fastlcel import RayExecutor
        ray.init(address={address!r}, log_to_driver=False)
        future = RayExecutor(num_cpus=0.1).submit(time.sleep, 30)
        time.sleep(1)
        print("exiting")
        """,
        tmp_path,
    )
    returncode, out, err, seconds = child.finish(timeout=60)
    assert (returncode, out.strip().splitlines()[-1]) == (0, "exiting"), err
    assert seconds < 20


def test_any_callable_runs_builtins_partials_and_objects(executor: RayExecutor) -> None:
    """``ray.remote`` takes Python functions only; the executor takes what ``submit`` may get."""
    assert Lambda(abs, executor=executor).batch([-2, 3]) == [2, 3]
    assert Lambda(functools.partial(add, n=10), executor=executor).invoke(1) == 11
    assert Lambda(operator.itemgetter("a"), executor=executor).invoke({"a": 5}) == 5


def test_the_workers_need_no_fastlcel(cluster: Any, tmp_path) -> None:
    """What crosses for a builtin or a callable object unpickles where fastlcel is not installed."""
    from fastlcel._ray import _call
    from ray import cloudpickle

    (tmp_path / "call.pkl").write_bytes(cloudpickle.dumps(_call))
    child = Child(
        """
        import sys
        sys.modules["fastlcel"] = None  # as on a worker without it
        from ray import cloudpickle
        with open("call.pkl", "rb") as file:
            print(cloudpickle.loads(file.read())(abs, -3))
        """,
        tmp_path,
    )
    returncode, out, err, _ = child.finish(timeout=60)
    assert (returncode, out.strip()) == (0, "3"), err


# Python 3.12+ warns that forking a multi-threaded process may deadlock.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_count_on_the_parents_completer(executor: RayExecutor) -> None:
    """The thread that settles Ray futures is not in a forked child: the child gets a fresh one
    (started on its first task), not a record of one that would leave its futures waiting."""
    assert Lambda(inc, executor=executor).invoke(1) == 2  # the parent's thread runs
    child = os.fork()
    if child == 0:
        from fastlcel import _ray

        os._exit(0 if _ray._completer._thread is None else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0

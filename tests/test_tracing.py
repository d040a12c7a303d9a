"""Tracing and callbacks: every fastlcel runnable opens and closes its run through langchain_core's
callback managers, exactly where langchain_core's runnables open theirs. Each scenario runs on
both libraries with a recording tracer; the run trees must match (names, run types, tags,
metadata, inputs, outputs, errors, parent and children)."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from runtrees import CALLS, record, render

pytestmark = pytest.mark.timeout(30)


def add_one(x: int) -> int:
    return x + 1


async def aadd_one(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def double(x: int) -> int:
    return 2 * x


def fails(x: Any) -> Any:
    raise ValueError(f"no {x}")


def words(chunks: Any):
    for chunk in chunks:
        yield from str(chunk).split()


async def awords(chunks: Any):
    async for chunk in chunks:
        for word in str(chunk).split():
            yield word


def sees_config(x: Any, config: RunnableConfig) -> Any:
    return [x, sorted(config.get("tags") or [])]


# name -> (builder of the program from a library's namespace, input)
PROGRAMS: dict[str, tuple[Any, Any]] = {
    "lambda": (lambda lc: lc.RunnableLambda(add_one), 1),
    "lambda of a lambda expression": (lambda lc: lc.RunnableLambda(lambda x: x * 3), 1),
    "async lambda with a sync twin": (lambda lc: lc.RunnableLambda(add_one, afunc=aadd_one), 1),
    "sequence": (lambda lc: lc.RunnableLambda(add_one) | double | add_one, 1),
    "parallel": (lambda lc: lc.RunnableParallel(a=add_one, b=double, c=lambda x: x), 2),
    "nested parallel in a sequence": (
        lambda lc: lc.RunnableLambda(add_one) | {"x": double, "y": {"z": add_one}},
        1,
    ),
    "rag shape": (
        lambda lc: (
            lc.RunnableParallel(context=double, question=lc.RunnablePassthrough())
            | (lambda d: f"{d['question']}:{d['context']}")
        ),
        3,
    ),
    "assign": (lambda lc: lc.RunnablePassthrough.assign(b=lambda d: d["a"] * 2), {"a": 1}),
    "pick": (lambda lc: lc.RunnableParallel(a=add_one, b=double).pick("a"), 1),
    "pick many": (lambda lc: lc.RunnableParallel(a=add_one, b=double).pick(["a", "b"]), 1),
    "passthrough": (lambda lc: lc.RunnablePassthrough(), 5),
    "branch": (
        lambda lc: lc.RunnableBranch(
            (lambda x: x > 5, double), (lambda x: x > 0, add_one), lambda x: -x
        ),
        1,
    ),
    "branch default": (lambda lc: lc.RunnableBranch((lambda x: x > 5, double), add_one), 1),
    "with_config": (
        lambda lc: lc.RunnableLambda(add_one).with_config(
            run_name="named", tags=["t"], metadata={"m": 1}
        ),
        1,
    ),
    "bind": (lambda lc: lc.RunnableLambda(lambda x, k=0: x + k).bind(k=10), 1),
    "config parameter": (lambda lc: lc.RunnableLambda(sees_config), 1),
    "retry, no failure": (lambda lc: lc.RunnableLambda(add_one).with_retry(), 1),
    "fallbacks": (
        lambda lc: lc.RunnableLambda(fails).with_fallbacks([lc.RunnableLambda(add_one)]),
        1,
    ),
    "failing step": (lambda lc: lc.RunnableLambda(add_one) | fails, 1),
    "failing parallel step": (lambda lc: lc.RunnableParallel(a=add_one, b=fails), 1),
    "generator": (lambda lc: lc.RunnableGenerator(words, awords), "a b c"),
    "generator in a sequence": (
        lambda lc: lc.RunnableLambda(str) | lc.RunnableGenerator(words, awords),
        12,
    ),
    "router": (lambda lc: lc.RunnableLambda(lambda x: lc.RunnableLambda(double)), 4),
}

# Where fastlcel deliberately differs (README, "Differences from langchain_core"):
DIFFERENT = {
    # Fail fast: a batch stops at the first failure, so the other item's runs never start (or
    # are cancelled), and a Parallel's sibling steps stop; langchain_core runs them to their end.
    *(
        (failing, how)
        for failing in ("failing step", "failing parallel step")
        for how in ("batch", "abatch", "batch_as_completed", "abatch_as_completed")
    ),
    ("failing parallel step", "stream"),
    ("failing parallel step", "astream"),
    # langchain_core's RunnableRetry inherits batch_as_completed from RunnableBinding, which
    # calls the bound runnable without retrying it; fastlcel retries each input as in batch.
    ("retry, no failure", "batch_as_completed"),
    ("retry, no failure", "abatch_as_completed"),
}


@pytest.mark.parametrize("how", list(CALLS))
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_run_trees_match_langchain_core(name: str, how: str) -> None:
    if (name, how) in DIFFERENT:
        pytest.skip("a deliberate difference")
    import fastlcel
    from langchain_core import runnables as lc

    build, x = PROGRAMS[name]
    theirs = record(build(lc), x, how)
    ours = record(build(fastlcel), x, how)
    if how in ("stream", "astream") and isinstance(theirs[0], list):
        # Concurrent steps' chunks come in the order they are made.
        assert sorted(map(repr, ours[0])) == sorted(map(repr, theirs[0]))
    else:
        assert ours[0] == theirs[0]
    assert ours[1] == theirs[1], "\n\nfastlcel:\n{}\n\nlangchain_core:\n{}".format(
        "\n".join(render(t) for t in ours[1]), "\n".join(render(t) for t in theirs[1])
    )


def test_nothing_is_recorded_without_callbacks(lcel: ModuleType) -> None:
    chain = lcel.RunnableLambda(add_one) | {"a": double}
    assert chain.invoke(1) == {"a": 4}


# ------------------------------------------------------------- runs inherited through the context


def test_config_less_calls_inside_a_step_nest_under_its_run(lcel: ModuleType) -> None:
    """A langchain_core runnable called without a config inside a step (langchain_core's child
    config context variable) is a child of that step's run."""
    from langchain_core import runnables as lc

    inner = lc.RunnableLambda(double, name="inner")

    def outer(x: int) -> int:
        return inner.invoke(x) + 1

    async def aouter(x: int) -> int:
        return await inner.ainvoke(x) + 1

    for how in ("invoke", "ainvoke", "stream"):
        program = lcel.RunnableLambda(outer, afunc=aouter, name="outer") | add_one
        _, runs = record(program, 3, how)
        (sequence,) = runs
        outer_run = next(child for child in sequence[-1] if child[0] == "outer")
        assert [child[0] for child in outer_run[-1]] == ["inner"], how


def test_dispatch_custom_event_inside_a_step(lcel: ModuleType) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.callbacks.manager import dispatch_custom_event

    seen: list[tuple[str, Any]] = []

    class Custom(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            seen.append((name, data))

    def step(x: int) -> int:
        dispatch_custom_event("progress", {"x": x})
        return x

    lcel.RunnableLambda(step).invoke(5, {"callbacks": [Custom()]})
    assert seen == [("progress", {"x": 5})]


def test_a_fastlcel_chain_called_inside_a_langchain_step_nests_under_it() -> None:
    import fastlcel
    from langchain_core import runnables as lc

    chain = fastlcel.Lambda(add_one, name="fast") | double

    def outer(x: int) -> int:
        return chain.invoke(x)  # no config: inherited from the langchain step's context

    _, runs = record(lc.RunnableLambda(outer, name="outer"), 1, "invoke")
    ((name, *_, children),) = runs
    assert name == "outer"
    assert [child[0] for child in children] == ["RunnableSequence"]
    assert [grandchild[0] for grandchild in children[0][-1]] == ["double", "fast"]


# ----------------------------------------------------------------------- run ids and run names


def test_run_id_and_run_name_name_the_outermost_run_only(lcel: ModuleType) -> None:
    from uuid import uuid4

    from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

    run_id = uuid4()
    collector = RunCollectorCallbackHandler()
    chain = lcel.RunnableLambda(add_one) | double
    config = {"callbacks": [collector], "run_id": run_id, "run_name": "mine"}
    assert chain.invoke(1, config) == 4
    (root,) = collector.traced_runs
    assert (root.id, root.name) == (run_id, "mine")
    assert [child.name for child in root.child_runs] == ["add_one", "double"]
    assert run_id not in [child.id for child in root.child_runs]


def test_a_batch_gives_run_id_to_its_first_input_with_langchains_warning(lcel: ModuleType) -> None:
    from uuid import uuid4

    from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

    run_id = uuid4()
    collector = RunCollectorCallbackHandler()
    with pytest.warns(RuntimeWarning, match="run_id be used only for the first element"):
        lcel.RunnableLambda(add_one).batch([1, 2], {"callbacks": [collector], "run_id": run_id})
    ids = sorted(run.id == run_id for run in collector.traced_runs)
    assert ids == [False, True]


# --------------------------------------------------------------- tracing enabled around the call


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "batch", "stream"])
def test_collect_runs_sees_every_run(lcel: ModuleType, how: str) -> None:
    from langchain_core.tracers.context import collect_runs

    chain = lcel.RunnableLambda(add_one) | {"a": double, "b": add_one}
    with collect_runs() as collector:
        CALLS[how](chain, 1, {})
    counts = sorted(len(list(_walk(run))) for run in collector.traced_runs)
    assert counts == ([5, 5] if how == "batch" else [5])


def _walk(run: Any) -> Any:
    yield run
    for child in run.child_runs:
        yield from _walk(child)


def test_nothing_is_traced_when_nothing_is_configured(lcel: ModuleType) -> None:
    """No handler, no tracing: calls open no run (langchain_core's managers are not even built)."""
    import fastlcel

    chain = fastlcel.Lambda(add_one) | {"a": double}
    assert chain.invoke(1) == {"a": 4}
    assert chain.batch([1]) == [{"a": 4}]


# ---------------------------------------------------------------------------- the bridged loop


def test_async_steps_called_from_sync_code_trace_as_langchain_core_awaits_them() -> None:
    """An async-only step reached from `invoke` runs on the bridged loop; its runs (and a
    config-less langchain_core call inside it) are those of langchain_core's `ainvoke`."""
    import fastlcel
    from langchain_core import runnables as lc

    inner = lc.RunnableLambda(double, name="inner")

    async def outer(x: int) -> int:
        await asyncio.sleep(0)
        return await inner.ainvoke(x) + 1

    def build(lib: ModuleType) -> Any:
        return lib.RunnableLambda(add_one) | {"a": outer, "b": lib.RunnableLambda(outer)}

    theirs = record(build(lc), 1, "ainvoke")
    ours = record(build(fastlcel), 1, "invoke")
    assert ours == theirs
    (sequence,) = ours[1]
    assert "inner" in render(sequence)


# ------------------------------------------------------------------- without langchain_core


def test_without_langchain_core_fastlcel_runs_untraced(tmp_path: Any) -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        sys.modules["langchain_core"] = None  # as if it were not installed
        import asyncio
        from fastlcel import Lambda
        chain = Lambda(lambda x: x + 1) | {"a": lambda x: x * 2}
        assert chain.invoke(1) == {"a": 4}
        assert asyncio.run(chain.ainvoke(1)) == {"a": 4}
        assert list(chain.stream(1)) == [{"a": 4}]
        assert chain.batch([1, 2], {"callbacks": []}) == [{"a": 4}, {"a": 6}]
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "langchain" not in done.stderr


# ------------------------------------------------------------------- calls that are cancelled


async def asleeps(x: Any) -> Any:
    await asyncio.sleep(5)
    return x


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("handlers", ["inline", "executor"])
def test_every_run_started_ends_when_fail_fast_cancels_its_call(how: str, handlers: str) -> None:
    """A sibling cancelled by fail-fast (while its run opens, runs or ends) ends its run with
    the cancellation: no handler sees a run start without its end."""
    import fastlcel
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

    class Plain(BaseCallbackHandler):  # run by langchain_core in an executor from a loop
        pass

    for _ in range(10):
        collector = RunCollectorCallbackHandler()
        callbacks = [collector] if handlers == "inline" else [collector, Plain()]
        chain = fastlcel.Parallel(a=fails, b=asleeps, c=fastlcel.Lambda(asleeps) | add_one)
        with pytest.raises(ValueError, match="no 1"):
            CALLS[how](chain, 1, {"callbacks": callbacks})
        _wait_for_ends(collector)
        (parallel,) = collector.traced_runs
        for run in _walk(parallel):
            assert run.end_time is not None
            if run.name in ("asleeps", "RunnableSequence"):
                assert "CancelledError" in run.error


def test_a_timeout_ends_the_runs_it_cancels() -> None:
    import fastlcel
    from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

    collector = RunCollectorCallbackHandler()
    chain = fastlcel.Lambda(asleeps).with_timeout(0.05) | add_one
    with pytest.raises(TimeoutError):
        chain.invoke(1, {"callbacks": [collector]})
    _wait_for_ends(collector)
    (sequence,) = collector.traced_runs
    assert all(run.end_time is not None for run in _walk(sequence))


def _wait_for_ends(collector: Any) -> None:
    """Cancelled steps end their runs as they unwind, on their own loop, shortly after."""
    deadline = time.monotonic() + 5
    while collector.run_map and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not collector.run_map, "runs left open"

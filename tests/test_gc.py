"""Garbage collection: cycles through the callables a Lambda or Parallel holds are collected."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest
from conftest import Impl, run_async


def collected(make_cycle) -> bool:
    """Build a cycle, drop every outside reference, collect, and report if the function died."""
    ref = make_cycle()
    gc.collect()
    return ref() is None


def test_lambda_referenced_by_its_own_function(impl: Impl) -> None:
    def make_cycle():
        def func(x):
            return x

        func.runnable = impl.Lambda(func)
        return weakref.ref(func)

    assert collected(make_cycle)


def test_lambda_referenced_from_a_closure(impl: Impl) -> None:
    def make_cycle():
        holder = {}

        def func(x):
            return holder["self"]

        holder["self"] = impl.Lambda(func)
        return weakref.ref(func)

    assert collected(make_cycle)


def test_lambda_with_an_async_function_in_a_cycle(impl: Impl) -> None:
    def make_cycle():
        def func(x):
            return x

        async def afunc(x):
            return x

        afunc.runnable = impl.Lambda(func, afunc)
        func.afunc = afunc
        return weakref.ref(afunc)

    assert collected(make_cycle)


def test_parallel_referenced_by_a_step(impl: Impl) -> None:
    def make_cycle():
        def step(x):
            return x

        step.parallel = impl.Parallel(a=step, b=impl.Lambda(step))
        return weakref.ref(step)

    assert collected(make_cycle)


def test_nested_parallel_referenced_by_a_leaf(impl: Impl) -> None:
    def make_cycle():
        def leaf(x):
            return x

        leaf.parallel = impl.Parallel(outer={"inner": {"leaf": leaf}})
        return weakref.ref(leaf)

    assert collected(make_cycle)


def test_runnable_used_before_the_cycle_is_dropped(impl: Impl) -> None:
    """Running a Lambda/Parallel must not leave references behind that keep the cycle alive."""

    def make_cycle():
        def step(x):
            return x + 1

        par = impl.Parallel(a=step, b={"c": step})
        step.parallel = par
        assert par.invoke(1) == {"a": 2, "b": {"c": 2}}
        assert par.batch([1, 2]) == [{"a": 2, "b": {"c": 2}}, {"a": 3, "b": {"c": 3}}]
        return weakref.ref(step)

    assert collected(make_cycle)


def test_results_are_not_kept_alive(impl: Impl) -> None:
    class Result:
        pass

    refs = []

    def step(_x):
        result = Result()
        refs.append(weakref.ref(result))
        return result

    par = impl.Parallel(a=step, b=step)
    par.invoke(None)
    par.batch([1, 2])
    gc.collect()
    assert len(refs) == 6
    assert all(ref() is None for ref in refs)


@pytest.mark.parametrize("kind", ["lambda", "parallel"])
def test_many_objects_do_not_accumulate(impl: Impl, kind: str) -> None:
    """Creating and dropping runnables that hold cycles leaves nothing behind."""
    refs = []
    for _ in range(50):

        def func(x):
            return x

        func.runnable = impl.Lambda(func) if kind == "lambda" else impl.Parallel(a=func)
        refs.append(weakref.ref(func))
        del func
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0


@pytest.mark.parametrize(
    "build",
    [
        lambda impl, f: impl.Lambda(f),
        lambda impl, f: impl.Parallel(a=impl.Lambda(f), b=f),
    ],
    ids=["lambda", "parallel"],
)
@pytest.mark.parametrize("method", ["ainvoke", "abatch", "invoke", "batch"])
def test_a_finished_call_keeps_nothing_of_the_callers(impl: Impl, build, method: str) -> None:
    """Once a call returns, no pool thread still holds its runnable (and the caller's function):
    it is freed by the caller's next collection, every time (a helper finishing late, or the
    done callback it scheduled, used to keep it alive for a while after an awaited call)."""

    class Step:
        def __call__(self, x: int) -> int:
            return x

    kept = 0
    # Repeated, to catch a race; langchain_core's calls take milliseconds each.
    for _ in range(60 if impl.name == "fastlcel" else 5):
        step = Step()
        ref = weakref.ref(step)
        runnable = build(impl, step)
        if method == "ainvoke":
            run_async(lambda r=runnable: r.ainvoke(1))
        elif method == "abatch":
            run_async(lambda r=runnable: r.abatch([1, 2, 3]))
        elif method == "invoke":
            runnable.invoke(1)
        else:
            runnable.batch([1, 2, 3])
        del runnable, step
        gc.collect()
        kept += ref() is not None
    assert kept == 0


CONSTRUCTED_UNDER_GC = """
import gc
import subprocess
import sys
import fastlcel as f

class Mine(f.Lambda):
    pass

ident = f.Lambda(lambda x: x)
makers = [
    lambda: f.Lambda(abs),
    lambda: Mine(abs),
    lambda: f.Generator(iter),
    lambda: f.Parallel(a=ident),
    lambda: ident | ident,
    lambda: f.Passthrough.assign(n=ident),
    lambda: ident.with_retry().with_timeout(1).with_cache(),
]
gc.set_threshold(1)  # a collection at every allocation: inside __new__ too
for _ in range(50):
    for make in makers:
        # Empties the free list of dicts, so that the instance dict is a new allocation.
        hold = [{} for _ in range(100)]
        make()
        del hold
gc.set_threshold(700)
print("ok")
"""


def test_a_collection_while_a_runnable_is_made(tmp_path) -> None:
    """On CPython 3.11 `object.__new__` makes the instance dict after the object is tracked and
    before its Rust part is written: a collection there must find a runnable with nothing to
    traverse (it crashed the process)."""
    script = tmp_path / "under_gc.py"
    script.write_text(CONSTRUCTED_UNDER_GC)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"

"""Generics and Python subclasses of the runnable classes, as langchain_core's.

A subclass that overrides a call method is called through it wherever it runs, inside chains
too; so is an instance whose call method was replaced (a test's spy) before it was composed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any, TypeVar
from unittest import mock

import fastlcel
import pytest
from conftest import run_async


def add_one(x: int) -> int:
    return x + 1


def times_two(x: int) -> int:
    return x * 2


def plus_one_each(chunks: Iterator[int]) -> Iterator[int]:
    for chunk in chunks:
        yield chunk + 1


In = TypeVar("In")
Out = TypeVar("Out")


@pytest.mark.parametrize(
    "build",
    [
        lambda L: L.RunnableLambda[int, int](add_one),
        lambda L: L.RunnableGenerator[Any, Any](plus_one_each),
        lambda L: L.RunnablePassthrough[Any]() | add_one,
        lambda L: L.RunnableSequence[int, int](add_one, L.RunnablePassthrough()),
        lambda L: L.RunnableParallel[int](a=add_one) | (lambda d: d["a"]),
        lambda L: L.RunnableBranch[int, int]((lambda x: x > 0, add_one), times_two),
    ],
    ids=["Lambda", "Generator", "Passthrough", "Sequence", "Parallel", "Branch"],
)
def test_generic_classes_make_the_same_runnables(lcel: ModuleType, build) -> None:
    runnable = build(lcel)
    assert runnable.invoke(1) == 2
    assert runnable.batch([1, 2]) == [2, 3]
    assert list(runnable.stream(1)) == [2]


def test_a_generic_alias_names_the_parametrized_class_in_reprs(lcel: ModuleType) -> None:
    from langchain_core import runnables

    for L in (lcel, runnables):
        assert repr(L.RunnablePassthrough[str]()) == "RunnablePassthrough[str]()"
        assert repr(L.RunnableBranch[int, Any]((add_one, add_one), add_one)).startswith(
            "RunnableBranch[int, Any](branches="
        )


def test_a_generic_subclass_is_generic_too(lcel: ModuleType) -> None:
    class Typed(lcel.RunnableLambda[In, Out]):
        pass

    assert Typed[int, str](lambda x: str(x)).invoke(1) == "1"


class _Calls:
    """Counts the inputs of overridden call methods."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []


def subclass_overriding_invoke(L: ModuleType, calls: _Calls) -> Any:
    class Shouting(L.RunnableLambda):
        def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            calls.inputs.append(input)
            return str(super().invoke(input, config, **kwargs)).upper()

    return Shouting(lambda x: f"hi {x}")


@pytest.mark.parametrize(
    "compose",
    [
        lambda L, r: r,
        lambda L, r: L.RunnableLambda(lambda x: x) | r,
        lambda L, r: L.RunnableParallel(out=r) | (lambda d: d["out"]),
        lambda L, r: L.RunnableBranch((lambda x: True, r), r),
        lambda L, r: r.with_config(tags=["t"]),
        lambda L, r: r.with_retry(stop_after_attempt=2),
        lambda L, r: r.with_fallbacks([L.RunnableLambda(str)]),
    ],
    ids=["itself", "in a sequence", "in a parallel", "in a branch", "bound", "retried", "fallback"],
)
def test_an_overridden_invoke_runs_wherever_the_subclass_runs(lcel: ModuleType, compose) -> None:
    calls = _Calls()
    runnable = compose(lcel, subclass_overriding_invoke(lcel, calls))
    assert runnable.invoke("bob") == "HI BOB"
    assert calls.inputs == ["bob"]


def test_batch_of_a_subclass_runs_its_invoke(lcel: ModuleType) -> None:
    calls = _Calls()
    shouting = subclass_overriding_invoke(lcel, calls)
    assert shouting.batch(["a", "b"]) == ["HI A", "HI B"]
    assert sorted(calls.inputs) == ["a", "b"]


def test_an_overridden_ainvoke_runs_in_an_awaited_chain(lcel: ModuleType) -> None:
    calls = _Calls()

    class Slow(lcel.RunnableLambda):
        async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            calls.inputs.append(input)
            await asyncio.sleep(0)
            return input * 10

    chain = lcel.RunnableLambda(add_one) | Slow(add_one) | times_two
    assert run_async(lambda: chain.ainvoke(1)) == 40
    assert calls.inputs == [2]
    assert chain.invoke(1) == 6  # the sync path is not overridden


def test_an_overridden_transform_streams_in_a_chain(lcel: ModuleType) -> None:
    class Splitter(lcel.RunnableLambda):
        def transform(self, input: Iterator[Any], config: Any = None, **kwargs: Any) -> Any:
            for text in input:
                yield from text.split()

        async def atransform(
            self, input: AsyncIterator[Any], config: Any = None, **kwargs: Any
        ) -> Any:
            async for text in input:
                for word in text.split():
                    yield word

    chain = lcel.RunnableLambda(str.lower) | Splitter(str) | (lambda w: w.title())
    assert list(chain.stream("A B C")) == ["Abc"]  # the lambda sums its input chunks
    streamed = lcel.RunnableLambda(str.lower) | Splitter(str)
    assert list(streamed.stream("A B C")) == ["a", "b", "c"]

    async def collect() -> list[Any]:
        return [chunk async for chunk in streamed.astream("A B")]

    assert run_async(collect) == ["a", "b"]


def test_a_subclass_with_an_init_of_its_own(lcel: ModuleType) -> None:
    class Scaled(lcel.RunnableLambda):
        def __init__(self, factor: int) -> None:
            super().__init__(lambda x: x * factor, name=f"times_{factor}")
            self.factor = factor

    scaled = Scaled(3)
    assert scaled.factor == 3
    assert scaled.invoke(2) == 6
    assert (scaled | add_one).invoke(2) == 7
    assert scaled.get_name() == "times_3"


def test_a_subclass_of_a_composite(lcel: ModuleType) -> None:
    class Both(lcel.RunnableParallel):
        def __init__(self) -> None:
            super().__init__(plus=add_one, double=times_two)

        def describe(self) -> str:
            return ",".join(self.steps__)

    both = Both()
    assert both.describe() == "plus,double"
    assert both.invoke(3) == {"plus": 4, "double": 6}
    assert both.get_name() == "RunnableParallel<plus,double>"


def test_a_subclass_whose_init_skips_the_base_gets_a_clear_error() -> None:
    class Forgetful(fastlcel.RunnableLambda):
        def __init__(self) -> None:
            pass

    forgetful = Forgetful()
    with pytest.raises(fastlcel.FastLcelTypeError, match="not initialized.*super"):
        forgetful.invoke(1)
    with pytest.raises(fastlcel.FastLcelTypeError, match="not initialized"):
        fastlcel.RunnableSequence(forgetful, add_one)
    assert "not initialized" in repr(forgetful)


def test_init_runs_once() -> None:
    lam = fastlcel.RunnableLambda(add_one)
    with pytest.raises(fastlcel.FastLcelTypeError, match="already initialized"):
        lam.__init__(times_two)
    assert lam.invoke(1) == 2


def test_a_spy_on_an_instance_sees_the_calls_of_the_chains_made_after(lcel: ModuleType) -> None:
    condition = lcel.RunnableLambda(lambda x: x > 0)
    add = lcel.RunnableLambda(add_one)
    with (
        mock.patch.object(condition, "invoke", wraps=condition.invoke) as condition_spy,
        mock.patch.object(add, "invoke", wraps=add.invoke) as add_spy,
    ):
        branch = lcel.RunnableBranch((condition, add), times_two)
        assert branch.invoke(1) == 2
        assert branch.invoke(-1) == -2
    assert condition_spy.call_count == 2
    assert add_spy.call_count == 1
    assert branch.invoke(1) == 2  # the spies are gone


def test_instance_attributes(lcel: ModuleType) -> None:
    lam = lcel.RunnableLambda(add_one)
    lam.note = "mine"
    assert lam.note == "mine"
    lam.name = "renamed"
    assert lam.get_name() == "renamed"

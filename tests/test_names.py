"""Names and reprs: `get_name()`, `name` and `repr` as langchain_core's, for every class."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from types import ModuleType
from typing import Any

import fastlcel
import pytest
from fastlcel import Lambda, Parallel, StepTimeoutError


def add_one(x: int) -> int:
    return x + 1


def times_two(x: int) -> int:
    return x * 2


async def async_add_two(x: int) -> int:
    return x + 2


def gen(chunks: Iterator[Any]) -> Iterator[Any]:
    yield from chunks


# Each builder makes the same runnable from either namespace (`L`: fastlcel or
# langchain_core.runnables). Lambdas sit on lines of their own: a repr shows a lambda's source.
BUILDERS: dict[str, Callable[[ModuleType], Any]] = {
    "lambda of a def": lambda L: L.RunnableLambda(add_one),
    "lambda of a lambda": lambda L: L.RunnableLambda(
        lambda x: x * 2  # the source is the repr
    ),
    "lambda named": lambda L: L.RunnableLambda(add_one, name="renamed"),
    "lambda async only": lambda L: L.RunnableLambda(async_add_two),
    "lambda sync and async": lambda L: L.RunnableLambda(add_one, async_add_two),
    "lambda of an itemgetter": lambda L: L.RunnableLambda(itemgetter("a")),
    "generator": lambda L: L.RunnableGenerator(gen),
    "generator named": lambda L: L.RunnableGenerator(gen, name="chunks"),
    "parallel": lambda L: L.RunnableParallel(a=add_one, b=L.RunnableLambda(times_two)),
    "parallel of a dict": lambda L: L.RunnableParallel({"x": add_one}),
    "nested parallel": lambda L: L.RunnableParallel(
        a=L.RunnableLambda(add_one) | times_two, b={"c": add_one}
    ),
    "sequence": lambda L: L.RunnableLambda(add_one) | times_two | {"a": itemgetter("x")},
    "sequence named": lambda L: L.RunnableSequence(add_one, times_two, name="pipeline"),
    "pipe": lambda L: L.RunnableLambda(add_one).pipe(times_two, name="piped"),
    "passthrough": lambda L: L.RunnablePassthrough(),
    "passthrough with a function": lambda L: L.RunnablePassthrough(add_one),
    "assign": lambda L: L.RunnablePassthrough.assign(a=add_one, b=times_two),
    "runnable.assign": lambda L: L.RunnableLambda(add_one).assign(b=times_two),
    "pick one": lambda L: L.RunnablePick("a"),
    "pick many": lambda L: L.RunnablePick(["a", "b"]),
    "runnable.pick": lambda L: L.RunnableParallel(a=add_one).pick("a"),
    "branch": lambda L: L.RunnableBranch((L.RunnableLambda(add_one), times_two), add_one),
    "bind": lambda L: L.RunnableLambda(add_one).bind(k=1),
    "with_config": lambda L: L.RunnableLambda(add_one).with_config(run_name="x", tags=["t"]),
    "with_types": lambda L: L.RunnableLambda(add_one).with_types(input_type=int),
    "with_retry": lambda L: L.RunnableLambda(add_one).with_retry(stop_after_attempt=5),
    "with_retry of types": lambda L: L.RunnableLambda(add_one).with_retry(
        retry_if_exception_type=(ValueError,), wait_exponential_jitter=False
    ),
    "with_fallbacks": lambda L: L.RunnableLambda(add_one).with_fallbacks(
        [L.RunnableLambda(times_two)]
    ),
    "with_fallbacks of a key": lambda L: L.RunnableLambda(add_one).with_fallbacks(
        [L.RunnableLambda(times_two)], exceptions_to_handle=(KeyError,), exception_key="error"
    ),
    "map": lambda L: L.RunnableLambda(add_one).map(),
}


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
def test_repr_and_names_as_langchain_core(lcel: ModuleType, build) -> None:
    from langchain_core import runnables

    mine, theirs = build(lcel), build(runnables)
    assert repr(mine) == repr(theirs)
    assert mine.get_name() == theirs.get_name()
    assert mine.get_name("Input") == theirs.get_name("Input")
    assert getattr(mine, "name", None) == getattr(theirs, "name", None)


def test_a_name_given_to_get_name_wins_and_a_suffix_follows_the_case(lcel: ModuleType) -> None:
    r = lcel.RunnableLambda(add_one)
    assert r.get_name("output", name="mine") == "mine_output"
    assert r.get_name("output", name="Mine") == "MineOutput"
    assert r.get_name("output") == "add_one_output"


def test_a_subclass_is_named_after_its_class(lcel: ModuleType) -> None:
    class Doubler(lcel.RunnableLambda):
        pass

    class Named(lcel.RunnableLambda):
        name = "custom"

    assert Doubler(lambda x: x * 2).get_name() == "Doubler"
    assert Doubler(times_two).get_name() == "times_two"
    assert Named(lambda x: x).get_name() == "custom"


def test_fastlcel_wrappers_are_named_as_their_runnable() -> None:
    limiter = fastlcel.RateLimiter(100)
    for wrapper in (
        Lambda(add_one).with_timeout(1),
        Lambda(add_one).with_rate_limit(limiter),
        Lambda(add_one).with_concurrency_limit(fastlcel.ConcurrencyLimit(2)),
        Lambda(add_one).with_cache(),
    ):
        assert wrapper.get_name() == "add_one"
        assert wrapper.get_name("Input") == "add_one_input"
    assert repr(Lambda(add_one).with_timeout(1.5)) == (
        "Timeout(bound=RunnableLambda(add_one), seconds=1.5)"
    )


def test_a_timeout_error_names_the_step_as_langchain_core_would() -> None:
    import time

    slow = Parallel(a=lambda x: time.sleep(1))
    with pytest.raises(StepTimeoutError) as info:
        slow.invoke(1, {"timeout": 0.05})
    assert info.value.step == "RunnableParallel<a>"

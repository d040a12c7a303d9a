"""pickle, cloudpickle and copy of every runnable and limiter; chains sent to a process pool.

A copy is made from the same arguments (a cache starts empty); a limiter copied into another
process is a new limiter, sharing nothing with the original.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from operator import itemgetter
from typing import Any

import cloudpickle
import fastlcel
import pytest
from conftest import run_async
from fastlcel import (
    ConcurrencyLimit,
    Lambda,
    RateLimiter,
    RunnableBranch,
    RunnableGenerator,
    RunnableParallel,
    RunnablePassthrough,
    RunnablePick,
    RunnableSequence,
)


def add_one(x: int) -> int:
    return x + 1


def times_two(x: int) -> int:
    return x * 2


async def async_add_one(x: int) -> int:
    return x + 1


def is_positive(x: int) -> bool:
    return x > 0


def tenfold(chunks: Any) -> Any:
    for chunk in chunks:
        yield chunk * 10


def with_k(x: int, k: int = 0) -> int:
    return x + k


LIMITER = RateLimiter(1000, burst=10)
LIMIT = ConcurrencyLimit(4)

# Runnables of module-level functions (plain pickle needs importable functions), by kind; each
# with an input and its output.
RUNNABLES: dict[str, tuple[Any, Any, Any]] = {
    "lambda": (Lambda(add_one, async_add_one, name="plus"), 1, 2),
    "generator": (RunnableGenerator(tenfold), 1, 10),
    "parallel": (RunnableParallel(a=add_one, b=itemgetter(0)), [5], {"a": None, "b": 5}),
    "sequence": (RunnableSequence(add_one, times_two, name="seq"), 1, 4),
    "passthrough": (RunnablePassthrough(), 3, 3),
    "assign": (RunnablePassthrough.assign(b=itemgetter("a")), {"a": 1}, {"a": 1, "b": 1}),
    "pick": (RunnablePick("a"), {"a": 1}, 1),
    "branch": (RunnableBranch((is_positive, add_one), times_two), -2, -4),
    "binding": (Lambda(with_k).bind(k=2).with_config(tags=["t"]), 1, 3),
    "with_types": (Lambda(add_one).with_types(input_type=int), 1, 2),
    "retry": (Lambda(add_one).with_retry(stop_after_attempt=2), 1, 2),
    "fallbacks": (Lambda(add_one).with_fallbacks([Lambda(times_two)]), 1, 2),
    "map": (Lambda(add_one).map(), [1, 2], [2, 3]),
    "timeout": (Lambda(add_one).with_timeout(5), 1, 2),
    "rate limit": (Lambda(add_one).with_rate_limit(LIMITER), 1, 2),
    "concurrency limit": (Lambda(add_one).with_concurrency_limit(LIMIT), 1, 2),
    "cache": (Lambda(add_one).with_cache(maxsize=3), 1, 2),
}
RUNNABLES["parallel"] = (RunnableParallel(a=add_one, b=times_two), 1, {"a": 2, "b": 2})


@pytest.mark.parametrize("case", RUNNABLES.values(), ids=RUNNABLES.keys())
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_round_trip(case: tuple[Any, Any, Any], dumps) -> None:
    runnable, input, output = case
    copied = pickle.loads(dumps(runnable))
    assert type(copied) is type(runnable)
    assert repr(copied) == repr(runnable)
    assert copied.get_name() == runnable.get_name()
    assert copied.invoke(input) == output


@pytest.mark.parametrize("case", RUNNABLES.values(), ids=RUNNABLES.keys())
def test_copy_and_deepcopy(case: tuple[Any, Any, Any]) -> None:
    runnable, input, output = case
    for made in (copy.copy(runnable), copy.deepcopy(runnable)):
        assert made is not runnable
        assert repr(made) == repr(runnable)
        assert made.invoke(input) == output


def test_cloudpickle_of_lambdas_and_closures() -> None:
    offset = 10
    chain = Lambda(lambda x: x + offset) | {"a": lambda x: x * 2, "b": RunnablePassthrough()}
    copied = pickle.loads(cloudpickle.dumps(chain))
    assert copied.invoke(1) == {"a": 22, "b": 11}
    assert run_async(lambda: copied.ainvoke(1)) == {"a": 22, "b": 11}


def test_a_cache_copy_starts_empty() -> None:
    cached = Lambda(add_one).with_cache()
    cached.invoke(1)
    copied = pickle.loads(pickle.dumps(cached))
    assert copied.cache_info()["size"] == 0
    assert cached.cache_info()["size"] == 1


def test_limiters_round_trip_as_new_limiters() -> None:
    rate = pickle.loads(pickle.dumps(RateLimiter(5, burst=3)))
    assert (rate.requests_per_second, rate.burst) == (5.0, 3)
    limit = ConcurrencyLimit(2)
    chain = Lambda(add_one).with_concurrency_limit(limit)
    copied = pickle.loads(pickle.dumps(chain))
    assert copied.limiter is not limit
    assert copied.limiter.limit == 2
    assert copied.limiter.in_use == 0


class Labelled(fastlcel.RunnableLambda):
    """A subclass with an __init__ and attributes of its own (module level, so picklable)."""

    def __init__(self, func: Any, label: str) -> None:
        super().__init__(func)
        self.label = label

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return f"{self.label}:{super().invoke(input, config, **kwargs)}"


def test_a_subclass_keeps_its_class_and_attributes() -> None:
    labelled = Labelled(add_one, "n")
    copied = pickle.loads(pickle.dumps(labelled))
    assert type(copied) is Labelled
    assert copied.label == "n"
    assert copied.invoke(1) == "n:2"
    assert (Lambda(times_two) | copied).invoke(1) == "n:3"


def run_in_child(payload: bytes, input: Any) -> Any:
    return pickle.loads(payload).invoke(input)


@pytest.mark.timeout(120)
def test_a_chain_runs_in_a_process_pool() -> None:
    chain = (
        Lambda(add_one).with_retry(stop_after_attempt=2)
        | {"a": times_two, "b": Lambda(async_add_one)}
        | RunnablePick("a")
    ).with_rate_limit(LIMITER)
    context = multiprocessing.get_context("spawn")  # pickles everything (fork: test_fork.py)
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        # the runnable itself goes to the pool, as a langchain chain with it would
        assert list(pool.map(run_in_child, [pickle.dumps(chain)] * 3, [1, 2, 3])) == [4, 6, 8]
        assert pool.submit(chain.invoke, 5).result(timeout=60) == 12

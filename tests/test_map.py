"""``map()``: a runnable run on every item of a list input (langchain_core's RunnableEach)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import ModuleType

import pytest
from conftest import run_async


def add_one(x: int) -> int:
    return x + 1


async def async_add_one(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def test_invoke_batch_stream(lcel: ModuleType) -> None:
    each = lcel.RunnableLambda(add_one).map()
    assert each.invoke([1, 2, 3]) == [2, 3, 4]
    assert each.invoke([]) == []
    assert each.batch([[1], [2, 3]]) == [[2], [3, 4]]
    assert list(each.stream([1, 2])) == [[2, 3]]


def test_ainvoke_of_an_async_function(lcel: ModuleType) -> None:
    each = lcel.RunnableLambda(async_add_one).map()
    assert run_async(lambda: each.ainvoke([1, 2])) == [2, 3]


def test_in_a_chain(lcel: ModuleType) -> None:
    chain = lcel.RunnableLambda(lambda n: list(range(n))) | lcel.RunnableLambda(add_one).map()
    assert chain.invoke(3) == [1, 2, 3]


def test_the_items_run_at_once_within_max_concurrency(lcel: ModuleType, peak) -> None:
    def slow(x: int) -> int:
        with peak:
            time.sleep(0.05)
        return x

    each = lcel.RunnableLambda(slow).map()
    assert each.invoke(list(range(8)), {"max_concurrency": 3}) == list(range(8))
    assert 1 < peak.peak <= 3


def test_the_first_error_is_raised(lcel: ModuleType) -> None:
    def fails_on_two(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x

    with pytest.raises(ValueError, match="two"):
        lcel.RunnableLambda(fails_on_two).map().invoke([1, 2, 3])


def test_keyword_arguments_reach_every_item(lcel: ModuleType) -> None:
    def add(x: int, k: int = 0) -> int:
        return x + k

    assert lcel.RunnableLambda(add).bind(k=5).map().invoke([1, 2]) == [6, 7]


def test_map_of_a_map(lcel: ModuleType) -> None:
    assert lcel.RunnableLambda(add_one).map().map().invoke([[1], [2, 3]]) == [[2], [3, 4]]


def test_the_items_share_the_callers_thread_only_when_fast() -> None:
    from fastlcel import Lambda

    threads: set[int] = set()

    def record(x: int) -> int:
        threads.add(threading.get_ident())
        time.sleep(0.02)
        return x

    assert Lambda(record).map().invoke(list(range(6))) == list(range(6))
    assert len(threads) > 1  # slow items run on pool threads, at once

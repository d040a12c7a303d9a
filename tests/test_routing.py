"""Routing: a Lambda whose function returns a runnable runs it on the same input, and
``recursion_limit`` (default 25) stops endless self-routing with RecursionError."""

from __future__ import annotations

import asyncio
from types import ModuleType

import fastlcel
import pytest
from conftest import run_async
from langchain_core import runnables as langchain_runnables

LIMIT_MESSAGE = r"^Recursion limit reached when invoking \w*Lambda\(route\) with input 0\.$"


def router(lcel: ModuleType):
    """Routes on the input: a number goes to a doubler, a string to a chain, else itself."""
    doubler = lcel.RunnableLambda(lambda x: x * 2)
    chain = lcel.RunnableLambda(str.upper) | (lambda s: s + "!")

    def route(x: object):
        if isinstance(x, int):
            return doubler
        if isinstance(x, str):
            return chain
        return x

    return lcel.RunnableLambda(route)


def test_the_returned_runnable_runs_on_the_same_input(lcel: ModuleType) -> None:
    route = router(lcel)
    assert route.invoke(4) == 8
    assert route.invoke("hi") == "HI!"
    assert route.invoke(None) is None
    assert route.batch([1, "a"]) == [2, "A!"]
    assert run_async(lambda: route.ainvoke(5)) == 10
    assert run_async(lambda: route.abatch(["b", 3])) == ["B!", 6]


def test_an_async_function_may_return_a_runnable(lcel: ModuleType) -> None:
    async def route(x: int):
        await asyncio.sleep(0)
        return lcel.RunnableLambda(lambda y: y + 100)

    assert run_async(lambda: lcel.RunnableLambda(route).ainvoke(1)) == 101


@pytest.mark.parametrize("library", ["fastlcel", "langchain"])
def test_the_returned_runnable_may_be_of_either_library(lcel: ModuleType, library: str) -> None:
    other = fastlcel if library == "fastlcel" else langchain_runnables
    route = lcel.RunnableLambda(lambda x: other.RunnableLambda(lambda y: y + 1) | (lambda y: -y))
    assert route.invoke(1) == -2
    assert run_async(lambda: route.ainvoke(1)) == -2


def test_a_sync_function_may_return_an_async_only_runnable(lcel: ModuleType) -> None:
    """langchain awaits the returned runnable's ainvoke; a sync function does not make it sync."""

    async def add_hundred(y: int) -> int:
        await asyncio.sleep(0)
        return y + 100

    route = lcel.RunnableLambda(lambda x: lcel.RunnableLambda(add_hundred))
    assert run_async(lambda: route.ainvoke(1)) == 101
    assert run_async(lambda: route.abatch([1, 2])) == [101, 102]


def test_the_returned_runnable_sees_the_config_with_one_less_recursion(lcel: ModuleType) -> None:
    def inner(_x: object, config: dict) -> tuple:
        return config["tags"], config["recursion_limit"]

    route = lcel.RunnableLambda(lambda x: lcel.RunnableLambda(inner))
    assert route.invoke(0, {"tags": ["t"]}) == (["t"], 24)
    assert route.invoke(0, {"tags": ["t"], "recursion_limit": 7}) == (["t"], 6)
    assert run_async(lambda: route.ainvoke(0, {"tags": ["a"]})) == (["a"], 24)


def endless(lcel: ModuleType, calls: list[object]):
    def route(x: object):
        calls.append(x)
        return self_routing

    self_routing = lcel.RunnableLambda(route)
    return self_routing


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
def test_endless_self_routing_stops_at_the_default_limit_of_25(lcel: ModuleType, how: str) -> None:
    calls: list[object] = []
    route = endless(lcel, calls)

    async def astream() -> list:
        return [chunk async for chunk in route.astream(0)]

    run = {
        "invoke": lambda: route.invoke(0),
        "ainvoke": lambda: run_async(lambda: route.ainvoke(0)),
        "stream": lambda: list(route.stream(0)),
        "astream": lambda: run_async(astream),
    }[how]
    with pytest.raises(RecursionError, match=LIMIT_MESSAGE):
        run()
    assert len(calls) == 26


def test_recursion_limit_comes_from_the_config(lcel: ModuleType) -> None:
    calls: list[object] = []
    with pytest.raises(RecursionError, match=LIMIT_MESSAGE):
        endless(lcel, calls).invoke(0, {"recursion_limit": 5})
    assert len(calls) == 6


def test_recursion_error_in_a_batch_with_return_exceptions(lcel: ModuleType) -> None:
    calls: list[object] = []
    results = endless(lcel, calls).batch([0, 0], {"recursion_limit": 3}, return_exceptions=True)
    assert [type(r) for r in results] == [RecursionError, RecursionError]
    assert len(calls) == 8


def hops(lcel: ModuleType, n: int):
    """A Lambda that routes to a fresh Lambda n times, then returns "done"."""

    def route(_x: object):
        return hops(lcel, n - 1) if n > 0 else "done"

    return lcel.RunnableLambda(route)


@pytest.mark.parametrize(("n", "limit", "ok"), [(3, 3, True), (4, 3, False), (25, 25, True)])
def test_routing_depth_up_to_the_limit_is_allowed(
    lcel: ModuleType, n: int, limit: int, ok: bool
) -> None:
    route = hops(lcel, n)
    config = {"recursion_limit": limit}
    if ok:
        assert route.invoke(0, config) == "done"
        assert run_async(lambda: route.ainvoke(0, config)) == "done"
    else:
        with pytest.raises(RecursionError):
            route.invoke(0, config)
        with pytest.raises(RecursionError):
            run_async(lambda: route.ainvoke(0, config))


def test_sequences_do_not_use_up_the_recursion_limit(lcel: ModuleType) -> None:
    chain = lcel.RunnableSequence(*[lambda x: x + 1] * 30)
    assert chain.invoke(0, {"recursion_limit": 1}) == 30


def test_an_awaited_sync_router_runs_the_returned_runnable_on_its_async_path(
    lcel: ModuleType,
) -> None:
    inner = lcel.RunnableLambda(lambda x: "sync path", afunc=_async_path)
    outer = lcel.RunnableLambda(lambda _: inner)
    assert outer.invoke({}) == "sync path"
    assert run_async(lambda: outer.ainvoke({})) == "async path"
    assert run_async(lambda: outer.abatch([{}, {}])) == ["async path", "async path"]


async def _async_path(_x: object) -> str:
    return "async path"

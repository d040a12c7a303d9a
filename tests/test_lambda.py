"""Lambda: construction, the sync and async paths, config passing, names and repr."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest
from conftest import Impl, run_async
from fastlcel import Lambda


def add_one(x: int) -> int:
    return x + 1


async def async_add_two(x: int) -> int:
    await asyncio.sleep(0)
    return x + 2


class Doubler:
    def __call__(self, x: int) -> int:
        return x * 2


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (add_one, 2),
        (lambda x: x * 10, 10),
        (functools.partial(pow, 2), 2),
        (Doubler(), 2),
    ],
    ids=["def", "lambda", "partial", "callable-object"],
)
def test_invoke_calls_the_function(impl: Impl, func, expected) -> None:
    assert impl.Lambda(func).invoke(1) == expected


def test_invoke_returns_the_function_result_object(impl: Impl) -> None:
    sentinel = object()
    assert impl.Lambda(lambda _x: sentinel).invoke(None) is sentinel


def test_invoke_passes_the_input_object(impl: Impl) -> None:
    payload = {"k": [1, 2]}
    assert impl.Lambda(lambda x: x).invoke(payload) is payload


def test_ainvoke_of_an_async_function(impl: Impl) -> None:
    lam = impl.Lambda(async_add_two)
    assert run_async(lambda: lam.ainvoke(1)) == 3


def test_ainvoke_of_a_sync_function(impl: Impl) -> None:
    lam = impl.Lambda(add_one)
    assert run_async(lambda: lam.ainvoke(1)) == 2


def test_func_and_afunc_each_serve_their_own_path(impl: Impl) -> None:
    def sync_side(x: int) -> str:
        return f"sync {x}"

    async def async_side(x: int) -> str:
        return f"async {x}"

    lam = impl.Lambda(sync_side, afunc=async_side)
    assert lam.invoke(1) == "sync 1"
    assert run_async(lambda: lam.ainvoke(1)) == "async 1"
    assert lam.batch([1, 2]) == ["sync 1", "sync 2"]
    assert run_async(lambda: lam.abatch([1, 2])) == ["async 1", "async 2"]


def test_async_function_runs_on_the_callers_loop(impl: Impl) -> None:
    seen = {}

    async def where(_x: object) -> None:
        seen["loop"] = asyncio.get_running_loop()
        seen["thread"] = threading.get_ident()

    async def main() -> None:
        await impl.Lambda(where).ainvoke(None)
        assert seen["loop"] is asyncio.get_running_loop()
        assert seen["thread"] == threading.get_ident()

    run_async(main)


def test_sync_function_awaited_does_not_run_on_the_loop_thread_nor_block_it(impl: Impl) -> None:
    import time

    seen = {}

    def blocking(_x: object) -> str:
        seen["thread"] = threading.get_ident()
        time.sleep(0.2)
        return "done"

    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            assert await impl.Lambda(blocking).ainvoke(None) == "done"
        finally:
            task.cancel()
        assert seen["thread"] != threading.get_ident()
        assert ticks >= 5, "the loop was blocked while the sync function ran"

    run_async(main)


@pytest.mark.parametrize("bad", [5, "not callable", None, [add_one]], ids=repr)
def test_non_callable_raises_type_error(impl: Impl, bad) -> None:
    with pytest.raises(TypeError):
        impl.Lambda(bad)


FULL_CONFIG = {
    "tags": ["t1", "t2"],
    "metadata": {"user": "ada"},
    "configurable": {"session": "s1"},
    "recursion_limit": 7,
    "run_name": "my-run",
    "max_concurrency": 3,
}


def config_view(config: dict) -> tuple:
    """The parts of a config that both implementations pass to a function unchanged."""
    return (
        type(config) is dict,
        config.get("tags"),
        config.get("metadata", {}).get("user"),
        config.get("configurable"),
        config.get("recursion_limit"),
        config.get("max_concurrency"),
    )


EXPECTED_VIEW = (True, ["t1", "t2"], "ada", {"session": "s1"}, 7, 3)


def test_function_with_a_config_parameter_receives_the_config(impl: Impl) -> None:
    def f(_x: object, config: dict) -> tuple:
        return config_view(config)

    assert impl.Lambda(f).invoke(1, FULL_CONFIG) == EXPECTED_VIEW


def test_keyword_only_config_parameter_receives_the_config(impl: Impl) -> None:
    def f(_x: object, *, config: dict) -> tuple:
        return config_view(config)

    assert impl.Lambda(f).invoke(1, FULL_CONFIG) == EXPECTED_VIEW


def test_async_function_with_a_config_parameter_receives_the_config(impl: Impl) -> None:
    async def f(_x: object, config: dict) -> tuple:
        return config_view(config)

    lam = impl.Lambda(f)
    assert run_async(lambda: lam.ainvoke(1, FULL_CONFIG)) == EXPECTED_VIEW


def test_sync_function_awaited_with_a_config_parameter_receives_the_config(impl: Impl) -> None:
    def f(_x: object, config: dict) -> tuple:
        return config_view(config)

    lam = impl.Lambda(f)
    assert run_async(lambda: lam.ainvoke(1, FULL_CONFIG)) == EXPECTED_VIEW


def test_config_parameter_gets_a_dict_when_no_config_is_given(impl: Impl) -> None:
    def f(_x: object, config: dict) -> bool:
        return isinstance(config, dict)

    assert impl.Lambda(f).invoke(1) is True
    assert impl.Lambda(f).invoke(1, None) is True


def test_function_without_config_parameter_is_called_with_the_input_only(impl: Impl) -> None:
    calls = []

    def f(*args: object, **kwargs: object) -> None:
        calls.append((args, kwargs))

    impl.Lambda(f).invoke(1, {"tags": ["x"]})
    assert calls == [((1,), {})]


def test_name_of_a_def_function(impl: Impl) -> None:
    assert impl.Lambda(add_one).get_name() == "add_one"


def test_explicit_name_wins(impl: Impl) -> None:
    assert impl.Lambda(add_one, name="renamed").get_name() == "renamed"


def test_func_and_afunc_properties() -> None:
    sync_only = Lambda(add_one)
    assert sync_only.func is add_one
    assert sync_only.afunc is None

    async_only = Lambda(async_add_two)
    assert async_only.func is None
    assert async_only.afunc is async_add_two

    both = Lambda(add_one, async_add_two)
    assert both.func is add_one
    assert both.afunc is async_add_two


def test_constructor_keywords(impl: Impl) -> None:
    lam = impl.Lambda(func=add_one, afunc=async_add_two, name="kw")
    assert lam.get_name() == "kw"
    assert lam.invoke(1) == 2
    assert run_async(lambda: lam.ainvoke(1)) == 3


def test_the_same_lambda_serves_concurrent_callers(impl: Impl) -> None:
    lam = impl.Lambda(add_one)
    par = impl.Parallel(a=lam, b=lam, c={"d": lam})
    assert par.invoke(1) == {"a": 2, "b": 2, "c": {"d": 2}}
    assert par.batch([1, 2]) == [{"a": x + 1, "b": x + 1, "c": {"d": x + 1}} for x in (1, 2)]


def _plus(x: int, k: int = 0) -> int:
    return x + k


async def _aplus(x: int, k: int = 0) -> int:
    return x + k


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.invoke(1, None, k=10),
        lambda r: run_async(lambda: r.ainvoke(1, None, k=10)),
        lambda r: r.batch([1], None, k=10)[0],
        lambda r: run_async(lambda: r.abatch([1], None, k=10))[0],
        lambda r: next(iter(r.stream(1, None, k=10))),
        lambda r: next(iter(r.transform(iter([1]), None, k=10))),
        lambda r: dict(r.batch_as_completed([1], None, k=10))[0],
    ],
    ids=["invoke", "ainvoke", "batch", "abatch", "stream", "transform", "batch_as_completed"],
)
def test_keyword_arguments_reach_the_function_from_every_call_method(lcel, call) -> None:
    assert call(lcel.RunnableLambda(_plus, _aplus)) == 11

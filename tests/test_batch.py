"""batch and abatch: order, return_exceptions, per-input configs, on Lambda and Parallel."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import Impl, run_async


def add_one(x: int) -> int:
    return x + 1


async def async_add_one(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def slower_for_small(x: int) -> int:
    time.sleep(0.01 * (5 - x))
    return x


async def async_slower_for_small(x: int) -> int:
    await asyncio.sleep(0.01 * (5 - x))
    return x


def test_lambda_batch(impl: Impl) -> None:
    assert impl.Lambda(add_one).batch([1, 2, 3]) == [2, 3, 4]


def test_lambda_abatch_async(impl: Impl) -> None:
    lam = impl.Lambda(async_add_one)
    assert run_async(lambda: lam.abatch([1, 2, 3])) == [2, 3, 4]


def test_lambda_abatch_sync(impl: Impl) -> None:
    lam = impl.Lambda(add_one)
    assert run_async(lambda: lam.abatch([1, 2, 3])) == [2, 3, 4]


def test_batch_accepts_any_sequence(impl: Impl) -> None:
    assert impl.Lambda(add_one).batch((1, 2, 3)) == [2, 3, 4]
    assert impl.Parallel(a=add_one).batch((1, 2)) == [{"a": 2}, {"a": 3}]
    lam = impl.Lambda(async_add_one)
    assert run_async(lambda: lam.abatch((1, 2, 3))) == [2, 3, 4]


def test_batch_of_nothing(impl: Impl) -> None:
    assert impl.Lambda(add_one).batch([]) == []
    assert impl.Parallel(a=add_one).batch([]) == []
    lam = impl.Lambda(async_add_one)
    assert run_async(lambda: lam.abatch([])) == []


def test_batch_results_are_in_input_order(impl: Impl) -> None:
    inputs = [0, 1, 2, 3, 4]
    assert impl.Lambda(slower_for_small).batch(inputs) == inputs
    lam = impl.Lambda(async_slower_for_small)
    assert run_async(lambda: lam.abatch(inputs)) == inputs


def test_parallel_batch(impl: Impl) -> None:
    par = impl.Parallel(same=slower_for_small, plus=add_one)
    expected = [{"same": x, "plus": x + 1} for x in range(5)]
    assert par.batch(list(range(5))) == expected


def test_parallel_abatch(impl: Impl) -> None:
    par = impl.Parallel(same=async_slower_for_small, plus=add_one)
    expected = [{"same": x, "plus": x + 1} for x in range(5)]
    assert run_async(lambda: par.abatch(list(range(5)))) == expected


def test_batch_passes_each_input_object(impl: Impl) -> None:
    inputs = [{"i": i} for i in range(4)]
    out = impl.Lambda(lambda x: x).batch(inputs)
    assert all(a is b for a, b in zip(out, inputs, strict=True))


class ItemError(Exception):
    pass


def make_failing(raised: dict):
    def fail_on_odd(x: int) -> int:
        if x % 2:
            raised[x] = ItemError(f"item {x}")
            raise raised[x]
        return x

    return fail_on_odd


def make_async_failing(raised: dict):
    async def fail_on_odd(x: int) -> int:
        await asyncio.sleep(0)
        if x % 2:
            raised[x] = ItemError(f"item {x}")
            raise raised[x]
        return x

    return fail_on_odd


def test_batch_return_exceptions_puts_the_exception_in_its_slot(impl: Impl) -> None:
    raised: dict = {}
    out = impl.Lambda(make_failing(raised)).batch([0, 1, 2, 3], return_exceptions=True)
    assert out[0] == 0 and out[2] == 2
    assert out[1] is raised[1]
    assert out[3] is raised[3]


def test_abatch_return_exceptions_puts_the_exception_in_its_slot(impl: Impl) -> None:
    raised: dict = {}
    lam = impl.Lambda(make_async_failing(raised))
    out = run_async(lambda: lam.abatch([0, 1, 2, 3], return_exceptions=True))
    assert out[0] == 0 and out[2] == 2
    assert out[1] is raised[1]
    assert out[3] is raised[3]


def test_abatch_of_sync_function_return_exceptions(impl: Impl) -> None:
    raised: dict = {}
    lam = impl.Lambda(make_failing(raised))
    out = run_async(lambda: lam.abatch([0, 1, 2, 3], return_exceptions=True))
    assert out[0] == 0 and out[2] == 2
    assert out[1] is raised[1]
    assert out[3] is raised[3]


def test_parallel_batch_return_exceptions(impl: Impl) -> None:
    raised: dict = {}
    par = impl.Parallel(checked=make_failing(raised), plus=add_one)
    out = par.batch([0, 1, 2], return_exceptions=True)
    assert out[0] == {"checked": 0, "plus": 1}
    assert out[1] is raised[1]
    assert out[2] == {"checked": 2, "plus": 3}


def test_parallel_abatch_return_exceptions(impl: Impl) -> None:
    raised: dict = {}
    par = impl.Parallel(checked=make_async_failing(raised), plus=add_one)
    out = run_async(lambda: par.abatch([0, 1, 2], return_exceptions=True))
    assert out[0] == {"checked": 0, "plus": 1}
    assert out[1] is raised[1]
    assert out[2] == {"checked": 2, "plus": 3}


def test_batch_without_return_exceptions_raises_the_original(impl: Impl) -> None:
    raised: dict = {}
    with pytest.raises(ItemError) as info:
        impl.Lambda(make_failing(raised)).batch([0, 2, 3, 4])
    assert info.value is raised[3]


def test_abatch_without_return_exceptions_raises_the_original(impl: Impl) -> None:
    raised: dict = {}
    lam = impl.Lambda(make_async_failing(raised))
    with pytest.raises(ItemError) as info:
        run_async(lambda: lam.abatch([0, 2, 3, 4]))
    assert info.value is raised[3]


def test_parallel_batch_without_return_exceptions_raises_the_original(impl: Impl) -> None:
    raised: dict = {}
    par = impl.Parallel(checked=make_failing(raised), plus=add_one)
    with pytest.raises(ItemError) as info:
        par.batch([0, 1, 2])
    assert info.value is raised[1]


def tags_of(_x: object, config: dict) -> list:
    return config.get("tags")


async def async_tags_of(_x: object, config: dict) -> list:
    return config.get("tags")


CONFIGS = [{"tags": ["first"]}, {"tags": ["second"]}, {"tags": ["third"]}]


def test_batch_with_one_config_per_input(impl: Impl) -> None:
    out = impl.Lambda(tags_of).batch([1, 2, 3], CONFIGS)
    assert out == [["first"], ["second"], ["third"]]


def test_abatch_with_one_config_per_input(impl: Impl) -> None:
    lam = impl.Lambda(async_tags_of)
    out = run_async(lambda: lam.abatch([1, 2, 3], CONFIGS))
    assert out == [["first"], ["second"], ["third"]]


def test_parallel_batch_with_one_config_per_input(impl: Impl) -> None:
    tags = (["first"], ["second"], ["third"])
    par = impl.Parallel(tags=tags_of, nested={"tags": tags_of})
    assert par.batch([1, 2, 3], CONFIGS) == [{"tags": t, "nested": {"tags": t}} for t in tags]
    apar = impl.Parallel(tags=tags_of, atags=async_tags_of)
    expected = [{"tags": t, "atags": t} for t in tags]
    assert run_async(lambda: apar.abatch([1, 2, 3], CONFIGS)) == expected


def test_batch_with_a_single_config_applies_it_to_every_input(impl: Impl) -> None:
    out = impl.Lambda(tags_of).batch([1, 2], {"tags": ["all"]})
    assert out == [["all"], ["all"]]


def test_batch_config_list_of_the_wrong_length_is_a_value_error(impl: Impl) -> None:
    with pytest.raises(ValueError):
        impl.Lambda(add_one).batch([1, 2, 3], CONFIGS[:2])


def test_batch_accepts_the_langchain_config_keys(impl: Impl) -> None:
    config = {
        "tags": ["t"],
        "metadata": {"m": 1},
        "configurable": {"c": 2},
        "recursion_limit": 9,
        "run_name": "top",
        "max_concurrency": 2,
    }
    assert impl.Lambda(add_one).batch([1, 2], config) == [2, 3]
    assert impl.Parallel(a=add_one).batch([1, 2], config) == [{"a": 2}, {"a": 3}]
    lam = impl.Lambda(async_add_one)
    assert run_async(lambda: lam.abatch([1, 2], config)) == [2, 3]


def test_batch_of_many_items(impl: Impl) -> None:
    inputs = list(range(300))
    assert impl.Lambda(add_one).batch(inputs) == [x + 1 for x in inputs]
    lam = impl.Lambda(async_add_one)
    assert run_async(lambda: lam.abatch(inputs)) == [x + 1 for x in inputs]

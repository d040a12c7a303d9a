"""with_config and bind: a config and keyword arguments of a runnable's own, merged per call."""

from __future__ import annotations

import asyncio
from types import ModuleType

import fastlcel
import pytest
from conftest import run_async
from fastlcel import Binding, Lambda


def seen_config(_x: object, config: dict) -> dict:
    return {
        "tags": sorted(config.get("tags") or []),
        "metadata": config.get("metadata"),
        "configurable": config.get("configurable"),
    }


def add(x: int, k: int = 0, j: int = 0) -> int:
    return x + k + j


async def async_add(x: int, k: int = 0) -> int:
    await asyncio.sleep(0)
    return x + k


# --------------------------------------------------------------------------- with_config


def test_with_config_merges_with_the_call_config(lcel: ModuleType) -> None:
    own_client, call_client = object(), object()  # not copied into metadata (not primitive)
    bound = lcel.RunnableLambda(seen_config).with_config(
        tags=["own"], metadata={"own": 1, "both": "own"}, configurable={"client": own_client}
    )
    assert isinstance(bound, lcel.RunnableBinding)
    call = {
        "tags": ["call"],
        "metadata": {"call": 2, "both": "call"},
        "configurable": {"other": call_client},
    }
    expected = {
        "tags": ["call", "own"],
        "metadata": {"own": 1, "both": "call", "call": 2},
        "configurable": {"client": own_client, "other": call_client},
    }
    assert bound.invoke(None, call) == expected
    assert run_async(lambda: bound.ainvoke(None, call)) == expected
    assert bound.batch([None], call) == [expected]
    assert run_async(lambda: bound.abatch([None], call)) == [expected]
    assert list(bound.stream(None, call)) == [expected]


def test_with_config_tags_are_united_in_sorted_order_without_duplicates(lcel: ModuleType) -> None:
    bound = lcel.RunnableLambda(lambda x, config: config["tags"]).with_config(tags=["z", "m"])
    assert bound.invoke(None, {"tags": ["a", "z"]}) == ["a", "m", "z"]


def test_with_config_takes_a_dict_or_keywords(lcel: ModuleType) -> None:
    by_dict = lcel.RunnableLambda(seen_config).with_config({"tags": ["d"]}, metadata={"k": 1})
    assert by_dict.invoke(None) == {"tags": ["d"], "metadata": {"k": 1}, "configurable": {}}


def test_with_config_on_a_binding_replaces_its_keys(lcel: ModuleType) -> None:
    """langchain_core's RunnableBinding.with_config is ``{**self.config, **config}``: a key given
    again replaces the earlier value (it is the call config that is merged, not this)."""
    bound = (
        lcel.RunnableLambda(seen_config)
        .with_config(tags=["first"], metadata={"a": 1})
        .with_config(tags=["second"], metadata={"b": 2})
    )
    assert bound.invoke(None) == {"tags": ["second"], "metadata": {"b": 2}, "configurable": {}}


def test_with_config_keys_not_given_again_are_kept(lcel: ModuleType) -> None:
    bound = lcel.RunnableLambda(seen_config).with_config(tags=["t"]).with_config(metadata={"m": 1})
    assert bound.invoke(None) == {"tags": ["t"], "metadata": {"m": 1}, "configurable": {}}


def test_configurable_model_is_copied_into_metadata(lcel: ModuleType) -> None:
    """langchain_core's ensure_config: tracing metadata shows ``configurable``'s "model" and
    "checkpoint_ns" (when str and not already in metadata)."""
    lam = lcel.RunnableLambda(seen_config)
    configurable = {"model": "a", "checkpoint_ns": "ns", "temperature": 0.5}
    seen = lam.invoke(None, {"configurable": configurable, "metadata": {"checkpoint_ns": "kept"}})
    assert seen["metadata"] == {"checkpoint_ns": "kept", "model": "a"}


@pytest.mark.parametrize(
    ("key", "value"), [("recursion_limit", 7), ("max_concurrency", 3)], ids=lambda v: str(v)
)
def test_with_config_scalar_keys_reach_the_function(lcel: ModuleType, key: str, value) -> None:
    bound = lcel.RunnableLambda(lambda x, config: config.get(key)).with_config({key: value})
    assert bound.invoke(None) == value


def test_with_config_on_a_composite_reaches_every_step(lcel: ModuleType) -> None:
    chain = (
        lcel.RunnableLambda(lambda x, config: [config["tags"]])
        | {"inner": lambda x, config: x + [config["tags"]]}
        | lcel.RunnableBranch((lambda d: True, lambda d, config: (d, config["tags"])), str)
    ).with_config(tags=["chain"])
    expected = ({"inner": [["chain"], ["chain"]]}, ["chain"])
    assert chain.invoke(0) == expected
    assert run_async(lambda: chain.ainvoke(0)) == expected


def test_a_binding_inside_a_chain_adds_its_tags_to_its_step_only(lcel: ModuleType) -> None:
    def tags(_x: object, config: dict) -> list:
        return sorted(config.get("tags") or [])

    chain = lcel.RunnableParallel(
        plain=tags, tagged=lcel.RunnableLambda(tags).with_config(tags=["mine"])
    )
    assert chain.invoke(0, {"tags": ["outer"]}) == {"plain": ["outer"], "tagged": ["mine", "outer"]}


# --------------------------------------------------------------------------- function sees config


def test_a_function_with_a_config_parameter_sees_the_callers_tags_and_metadata(
    lcel: ModuleType,
) -> None:
    chain = lcel.RunnableLambda(lambda x: x) | {"deep": lcel.RunnableLambda(seen_config)}
    call = {"tags": ["caller"], "metadata": {"user": "u1"}}
    expected = {"deep": {"tags": ["caller"], "metadata": {"user": "u1"}, "configurable": {}}}
    assert chain.invoke(None, call) == expected
    assert run_async(lambda: chain.ainvoke(None, call)) == expected
    assert list(chain.stream(None, call)) == [expected]


def test_an_async_function_with_a_config_parameter(lcel: ModuleType) -> None:
    async def tags(_x: object, config: dict) -> list:
        return config["tags"]

    bound = lcel.RunnableLambda(tags).with_config(tags=["own"])
    assert run_async(lambda: bound.ainvoke(None)) == ["own"]


# --------------------------------------------------------------------------- bind


def test_bind_passes_keyword_arguments_to_the_function(lcel: ModuleType) -> None:
    bound = lcel.RunnableLambda(add).bind(k=5)
    assert isinstance(bound, lcel.RunnableBinding)
    assert bound.kwargs == {"k": 5}
    assert bound.invoke(1) == 6
    assert run_async(lambda: bound.ainvoke(1)) == 6
    assert bound.batch([1, 2]) == [6, 7]
    assert run_async(lambda: bound.abatch([1, 2])) == [6, 7]
    assert list(bound.stream(1)) == [6]


def test_bind_to_an_async_function(lcel: ModuleType) -> None:
    bound = lcel.RunnableLambda(async_add).bind(k=3)
    assert run_async(lambda: bound.ainvoke(1)) == 4
    assert run_async(lambda: bound.abatch([1, 2])) == [4, 5]


def test_bind_twice_merges_the_keywords(lcel: ModuleType) -> None:
    assert lcel.RunnableLambda(add).bind(k=3).bind(j=10).invoke(1) == 14
    assert lcel.RunnableLambda(add).bind(k=3).bind(k=10).invoke(1) == 11


def test_bind_and_with_config_combine_in_either_order(lcel: ModuleType) -> None:
    def both(x: int, config: dict, k: int = 0) -> tuple:
        return x + k, config["tags"]

    lam = lcel.RunnableLambda(both)
    assert lam.bind(k=3).with_config(tags=["t"]).invoke(1) == (4, ["t"])
    assert lam.with_config(tags=["t"]).bind(k=3).invoke(1) == (4, ["t"])


def test_a_bound_step_inside_a_sequence_and_a_parallel(lcel: ModuleType) -> None:
    bound = lcel.RunnableLambda(add).bind(k=100)
    chain = lcel.RunnableLambda(lambda x: x) | bound | {"same": bound, "plain": lambda x: x}
    assert chain.invoke(1) == {"same": 201, "plain": 101}
    assert run_async(lambda: chain.ainvoke(1)) == {"same": 201, "plain": 101}
    assert chain.batch([0, 1]) == [{"same": 200, "plain": 100}, {"same": 201, "plain": 101}]


def test_bind_to_a_generator_function_streams(lcel: ModuleType) -> None:
    def repeat(x: str, times: int = 1):
        for _ in range(times):
            yield x

    bound = lcel.RunnableLambda(repeat).bind(times=3)
    assert list(bound.stream("ab")) == ["ab", "ab", "ab"]
    assert bound.invoke("ab") == "ababab"


def test_a_wrong_keyword_raises_type_error(lcel: ModuleType) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        lcel.RunnableLambda(add).bind(nope=1).invoke(1)


# --------------------------------------------------------------------------- shape


@pytest.mark.parametrize("order", ["config-then-bind", "bind-then-config"])
def test_a_binding_of_a_binding_is_one_binding(lcel: ModuleType, order: str) -> None:
    lam = lcel.RunnableLambda(add)
    if order == "config-then-bind":
        bound = lam.with_config(tags=["t"]).bind(k=1)
    else:
        bound = lam.bind(k=1).with_config(tags=["t"])
    assert isinstance(bound, lcel.RunnableBinding)
    assert bound.bound is lam
    assert bound.kwargs == {"k": 1}
    assert bound.config == {"tags": ["t"]}


def test_binding_alias() -> None:
    assert fastlcel.RunnableBinding is Binding
    assert isinstance(Lambda(add).bind(k=1), Binding)


def test_bind_reaches_a_generators_sync_and_async_functions(lcel: ModuleType) -> None:
    def gen(chunks, k: int = 0):
        for chunk in chunks:
            yield chunk + k

    async def agen(chunks, k: int = 0):
        async for chunk in chunks:
            yield chunk + k

    bound = lcel.RunnableGenerator(gen, agen).bind(k=100)
    assert bound.invoke(1) == 101
    assert run_async(lambda: bound.ainvoke(1)) == 101


def test_other_attributes_are_the_bound_runnables(lcel: ModuleType) -> None:
    from langchain_core import runnables

    class Described(runnables.RunnableLambda):
        def describe(self, *, config: dict | None = None) -> list[str]:
            return sorted((config or {}).get("tags") or [])

    bound = lcel.RunnableLambda(add).bind(k=1)
    assert bound.func is add
    described = Described(add).with_config(tags=["own"])
    mine = lcel.RunnableBinding(bound=Described(add), config={"tags": ["own"]})
    # a method taking a config gets the binding's merged in
    assert mine.describe(config={"tags": ["call"]}) == described.describe(config={"tags": ["call"]})
    assert mine.describe() == ["own"]

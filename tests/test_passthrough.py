"""Passthrough, assign and pick: the input through, plus computed keys, or some of its keys."""

from __future__ import annotations

import asyncio
import operator
from types import ModuleType

import pytest
from conftest import run_async
from fastlcel import Assign, Lambda, Parallel, Passthrough, Pick

NOT_A_DICT = "The input to RunnablePassthrough.assign() must be a dict."


def add_one(x: int) -> int:
    return x + 1


async def async_total(d: dict) -> int:
    await asyncio.sleep(0)
    return sum(d.values())


# --------------------------------------------------------------------------- Passthrough


def test_passthrough_returns_the_input_object(lcel: ModuleType) -> None:
    payload = {"question": ["why"]}
    pt = lcel.RunnablePassthrough()
    assert pt.invoke(payload) is payload
    assert run_async(lambda: pt.ainvoke(payload)) is payload
    assert all(out is payload for out in pt.batch([payload, payload]))
    assert run_async(lambda: pt.abatch([payload]))[0] is payload


def test_passthrough_func_runs_for_its_side_effect(lcel: ModuleType) -> None:
    seen: list[object] = []
    pt = lcel.RunnablePassthrough(lambda x: seen.append(x) or "ignored")
    assert pt.invoke(1) == 1
    assert run_async(lambda: pt.ainvoke(2)) == 2
    assert pt.batch([3, 4]) == [3, 4]
    assert sorted(seen) == [1, 2, 3, 4]


def test_passthrough_func_with_a_config_parameter_sees_the_config(lcel: ModuleType) -> None:
    seen: list[object] = []

    def record(_x: object, config: dict) -> None:
        seen.append(config.get("tags"))

    pt = lcel.RunnablePassthrough(record)
    assert pt.invoke("x", {"tags": ["t"]}) == "x"
    assert run_async(lambda: pt.ainvoke("y", {"tags": ["u"]})) == "y"
    assert seen == [["t"], ["u"]]


def test_passthrough_next_to_a_transformation(lcel: ModuleType) -> None:
    chain = {"original": lcel.RunnablePassthrough(), "upper": str.upper} | lcel.RunnableLambda(
        lambda d: f"{d['original']}->{d['upper']}"
    )
    assert chain.invoke("hi") == "hi->HI"


# --------------------------------------------------------------------------- assign


def test_assign_adds_keys_computed_from_the_input(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(total=lambda d: d["a"] + d["b"], a=lambda d: -d["a"])
    result = assign.invoke({"a": 1, "b": 2})
    assert result == {"a": -1, "b": 2, "total": 3}
    assert list(result) == ["a", "b", "total"]
    assert isinstance(assign, lcel.RunnableAssign)


def test_assign_leaves_the_input_dict_alone(lcel: ModuleType) -> None:
    payload = {"a": 1}
    result = lcel.RunnablePassthrough.assign(b=lambda d: 2).invoke(payload)
    assert result == {"a": 1, "b": 2}
    assert payload == {"a": 1}


def test_every_assigned_key_sees_the_original_input(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(b=lambda d: "b", c=lambda d: sorted(d))
    assert assign.invoke({"a": 0}) == {"a": 0, "b": "b", "c": ["a"]}


def test_assign_accepts_every_kind_of_step(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(
        getter=operator.itemgetter("a"),
        lam=lcel.RunnableLambda(lambda d: d["a"] + 1),
        nested={"x": operator.itemgetter("a"), "y": lambda d: "y"},
        chain=operator.itemgetter("a") | lcel.RunnableLambda(add_one) | add_one,
    )
    expected = {"a": 1, "getter": 1, "lam": 2, "nested": {"x": 1, "y": "y"}, "chain": 3}
    assert assign.invoke({"a": 1}) == expected
    assert run_async(lambda: assign.ainvoke({"a": 1})) == expected


def test_assign_with_an_async_step(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(total=async_total)
    assert run_async(lambda: assign.ainvoke({"a": 1, "b": 2})) == {"a": 1, "b": 2, "total": 3}
    assert run_async(lambda: assign.abatch([{"a": 1}, {"a": 5}])) == [
        {"a": 1, "total": 1},
        {"a": 5, "total": 5},
    ]


def test_runnable_assign_runs_after_the_runnable(lcel: ModuleType) -> None:
    chain = lcel.RunnableLambda(lambda x: {"x": x}).assign(double=lambda d: d["x"] * 2)
    assert isinstance(chain, lcel.RunnableSequence)
    assert isinstance(chain.last, lcel.RunnableAssign)
    assert chain.invoke(4) == {"x": 4, "double": 8}
    assert chain.assign(triple=lambda d: d["x"] * 3).invoke(1) == {"x": 1, "double": 2, "triple": 3}


def test_assign_batch(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(n=lambda d: len(d))
    assert assign.batch([{}, {"a": 1}]) == [{"n": 0}, {"a": 1, "n": 1}]


@pytest.mark.parametrize("bad", [3, "text", None, [("a", 1)]], ids=repr)
def test_assign_of_a_non_dict_raises_langchains_value_error(lcel: ModuleType, bad) -> None:
    assign = lcel.RunnablePassthrough.assign(b=lambda d: 1)
    with pytest.raises(ValueError) as sync_info:
        assign.invoke(bad)
    with pytest.raises(ValueError) as async_info:
        run_async(lambda: assign.ainvoke(bad))
    with pytest.raises(ValueError) as stream_info:
        list(assign.stream(bad))
    for info in (sync_info, async_info, stream_info):
        assert str(info.value) == NOT_A_DICT


def test_assign_of_a_non_dict_in_a_batch_with_return_exceptions(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(b=lambda d: 1)
    for result in (
        assign.batch([{"a": 0}, 7], return_exceptions=True),
        run_async(lambda: assign.abatch([{"a": 0}, 7], return_exceptions=True)),
    ):
        assert result[0] == {"a": 0, "b": 1}
        assert isinstance(result[1], ValueError)
        assert str(result[1]) == NOT_A_DICT


def test_assign_step_failure_propagates(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(b=operator.itemgetter("missing"))
    with pytest.raises(KeyError, match="missing"):
        assign.invoke({"a": 1})


# --------------------------------------------------------------------------- pick


def test_pick_one_key_returns_its_value(lcel: ModuleType) -> None:
    pick = lcel.RunnablePick("a")
    assert isinstance(pick, lcel.RunnablePick)
    assert pick.invoke({"a": 1, "b": 2}) == 1
    assert pick.invoke({"b": 2}) is None
    assert run_async(lambda: pick.ainvoke({"a": [1]})) == [1]
    assert pick.batch([{"a": 1}, {"a": 2}]) == [1, 2]


def test_pick_several_keys_returns_the_present_ones(lcel: ModuleType) -> None:
    pick = lcel.RunnablePick(["a", "c", "b"])
    assert pick.invoke({"a": 1, "b": 2, "d": 4}) == {"a": 1, "b": 2}
    assert pick.invoke({"d": 4}) is None
    assert run_async(lambda: pick.ainvoke({"c": 3})) == {"c": 3}


def test_runnable_pick(lcel: ModuleType) -> None:
    source = lcel.RunnableLambda(lambda x: {"a": x, "b": x * 2, "c": x * 3})
    assert source.pick("b").invoke(1) == 2
    assert source.pick(["a", "c"]).invoke(1) == {"a": 1, "c": 3}
    assert isinstance(source.pick("a").last, lcel.RunnablePick)


def test_assign_then_pick(lcel: ModuleType) -> None:
    chain = lcel.RunnablePassthrough.assign(b=lambda d: d["a"] + 1).pick(["b"])
    assert chain.invoke({"a": 1}) == {"b": 2}


@pytest.mark.parametrize("keys", ["a", ["a", "b"]], ids=["one", "several"])
def test_pick_of_a_non_dict_raises_langchains_value_error(lcel: ModuleType, keys) -> None:
    pick = lcel.RunnablePick(keys)
    with pytest.raises(ValueError) as sync_info:
        pick.invoke(5)
    with pytest.raises(ValueError) as async_info:
        run_async(lambda: pick.ainvoke(5))
    for info in (sync_info, async_info):
        assert str(info.value) == NOT_A_DICT


# --------------------------------------------------------------------------- itemgetter


def test_itemgetter_is_coerced_wherever_a_runnable_goes(lcel: ModuleType) -> None:
    chain = (
        operator.itemgetter("q")
        | lcel.RunnableLambda(str.upper)
        | {"upper": lcel.RunnablePassthrough(), "first": operator.itemgetter(0)}
        | lcel.RunnablePassthrough.assign(last=lambda d: d["upper"][-1])
    )
    expected = {"upper": "ABC", "first": "A", "last": "C"}
    assert chain.invoke({"q": "abc"}) == expected
    assert run_async(lambda: chain.ainvoke({"q": "abc"})) == expected
    assert chain.batch([{"q": "x"}]) == [{"upper": "X", "first": "X", "last": "X"}]


def test_itemgetter_failure_is_the_original_key_error(lcel: ModuleType) -> None:
    chain = operator.itemgetter("q") | lcel.RunnableLambda(str.upper)
    with pytest.raises(KeyError, match="'q'"):
        chain.invoke({})


# --------------------------------------------------------------------------- fastlcel shapes


def test_assign_holds_a_parallel_mapper() -> None:
    assign = Passthrough.assign(b=add_one)
    assert isinstance(assign, Assign)
    assert isinstance(assign.mapper, Parallel)
    assert list(assign.mapper.steps) == ["b"]


def test_assign_from_a_mapping_or_a_parallel() -> None:
    with pytest.raises(TypeError):
        Assign({"c": 5})
    assert Assign(Parallel(n=len)).invoke({"x": 1}) == {"x": 1, "n": 1}
    assert Assign({"n": len}).invoke({"x": 1}) == {"x": 1, "n": 1}


def test_pick_keys_property() -> None:
    assert Pick("a").keys == "a"
    assert Pick(["a", "b"]).keys == ["a", "b"]
    assert isinstance(Lambda(add_one).pick("a").last, Pick)

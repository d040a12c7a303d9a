"""Branch: the first runnable whose condition holds, else the default; conditions in order."""

from __future__ import annotations

import asyncio
import operator
from types import ModuleType

import fastlcel
import pytest
from conftest import run_async
from fastlcel import Branch, Lambda


def sign_branch(lcel: ModuleType):
    return lcel.RunnableBranch(
        (lambda x: x > 0, lambda x: "positive"),
        (lambda x: x < 0, lcel.RunnableLambda(lambda x: "negative")),
        lambda x: "zero",
    )


def test_the_first_true_condition_wins(lcel: ModuleType) -> None:
    branch = sign_branch(lcel)
    assert [branch.invoke(x) for x in (5, -5, 0)] == ["positive", "negative", "zero"]
    assert branch.batch([5, -5, 0]) == ["positive", "negative", "zero"]
    assert run_async(lambda: branch.ainvoke(-1)) == "negative"
    assert run_async(lambda: branch.abatch([0, 1])) == ["zero", "positive"]


def test_conditions_are_checked_in_order_and_stop_at_the_first_true(lcel: ModuleType) -> None:
    checked: list[str] = []

    def condition(name: str, result: bool):
        def check(_x: object) -> bool:
            checked.append(name)
            return result

        return check

    branch = lcel.RunnableBranch(
        (condition("c1", False), lambda x: "first"),
        (condition("c2", True), lambda x: "second"),
        (condition("c3", True), lambda x: "third"),
        lambda x: "default",
    )
    assert branch.invoke(None) == "second"
    assert checked == ["c1", "c2"]
    checked.clear()
    assert run_async(lambda: branch.ainvoke(None)) == "second"
    assert checked == ["c1", "c2"]


def test_only_the_chosen_runnable_runs(lcel: ModuleType) -> None:
    ran: list[str] = []
    branch = lcel.RunnableBranch(
        (lambda x: False, lambda x: ran.append("a")),
        (lambda x: True, lambda x: ran.append("b") or "b"),
        lambda x: ran.append("default"),
    )
    assert branch.invoke(0) == "b"
    assert ran == ["b"]


def test_condition_truthiness_is_pythons(lcel: ModuleType) -> None:
    branch = lcel.RunnableBranch(
        (operator.itemgetter("items"), lambda d: "has items"), lambda d: "empty"
    )
    assert branch.batch([{"items": [1]}, {"items": []}, {"items": None}]) == [
        "has items",
        "empty",
        "empty",
    ]


def test_the_default_runs_when_no_condition_holds(lcel: ModuleType) -> None:
    branch = lcel.RunnableBranch((lambda x: False, lambda x: 1), {"wrapped": lambda x: x})
    assert branch.invoke("in") == {"wrapped": "in"}


def test_branches_may_be_runnables_dicts_callables_or_sequences(lcel: ModuleType) -> None:
    branch = lcel.RunnableBranch(
        (lambda x: x == "dict", {"kind": lambda x: "dict", "input": lcel.RunnablePassthrough()}),
        (lambda x: x == "seq", lcel.RunnableLambda(str.upper) | (lambda s: s + "!")),
        (lcel.RunnableLambda(lambda x: x == "lam"), lcel.RunnableLambda(len)),
        str.title,
    )
    assert branch.batch(["dict", "seq", "lam", "other"]) == [
        {"kind": "dict", "input": "dict"},
        "SEQ!",
        3,
        "Other",
    ]


def test_async_conditions_and_branches(lcel: ModuleType) -> None:
    async def is_big(x: int) -> bool:
        await asyncio.sleep(0)
        return x > 10

    async def shout(x: int) -> str:
        await asyncio.sleep(0)
        return f"BIG {x}"

    branch = lcel.RunnableBranch((is_big, shout), lambda x: f"small {x}")
    assert run_async(lambda: branch.abatch([1, 100])) == ["small 1", "BIG 100"]


def test_conditions_and_branches_see_the_config(lcel: ModuleType) -> None:
    branch = lcel.RunnableBranch(
        (lambda x, config: "vip" in config["tags"], lambda x, config: ("vip", config["metadata"])),
        lambda x, config: ("plain", config["metadata"]),
    )
    assert branch.invoke(0, {"tags": ["vip"], "metadata": {"m": 1}}) == ("vip", {"m": 1})
    assert run_async(lambda: branch.ainvoke(0, {"metadata": {"m": 2}})) == ("plain", {"m": 2})


def test_a_failing_condition_raises_and_nothing_else_runs(lcel: ModuleType) -> None:
    ran: list[str] = []
    branch = lcel.RunnableBranch(
        (lambda x: 1 / x, lambda x: ran.append("first")),
        (lambda x: True, lambda x: ran.append("second")),
        lambda x: ran.append("default"),
    )
    with pytest.raises(ZeroDivisionError):
        branch.invoke(0)
    with pytest.raises(ZeroDivisionError):
        run_async(lambda: branch.ainvoke(0))
    assert ran == []


def test_a_branch_inside_a_sequence(lcel: ModuleType) -> None:
    chain = (
        lcel.RunnableLambda(lambda x: x - 1)
        | sign_branch(lcel)
        | {"label": lcel.RunnablePassthrough(), "n": len}
    )
    assert chain.batch([1, 2, 0]) == [
        {"label": "zero", "n": 4},
        {"label": "positive", "n": 8},
        {"label": "negative", "n": 8},
    ]


def test_a_single_argument_raises_value_error(lcel: ModuleType) -> None:
    with pytest.raises(ValueError, match="at least two branches"):
        lcel.RunnableBranch(lambda x: x)


@pytest.mark.parametrize("pair", [(lambda x: True,), (lambda x: True, str, str)], ids=["1", "3"])
def test_a_branch_that_is_not_a_pair_raises_value_error(lcel: ModuleType, pair) -> None:
    with pytest.raises(ValueError):
        lcel.RunnableBranch(pair, lambda x: x)


def test_a_default_of_the_wrong_type_raises_type_error(lcel: ModuleType) -> None:
    with pytest.raises(TypeError):
        lcel.RunnableBranch((lambda x: True, lambda x: x), 5)


def test_errors_say_what_was_wrong() -> None:
    with pytest.raises(ValueError, match=r"branch 0 has 1 items; expected a \(condition, runnable"):
        Branch((str,), str)
    with pytest.raises(TypeError, match="default is an int"):
        Branch((str, str), 5)


def test_branches_and_default_are_coerced() -> None:
    branch = Branch((lambda x: True, {"a": str}), str.upper)
    assert fastlcel.RunnableBranch is Branch
    ((condition, runnable),) = branch.branches
    assert isinstance(condition, Lambda)
    assert isinstance(runnable, fastlcel.Parallel)
    assert isinstance(branch.default, Lambda)

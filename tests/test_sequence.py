"""Sequence: `|`, pipe, dicts and callables coerced on either side, flattening, steps, errors."""

from __future__ import annotations

import asyncio
import operator
from types import ModuleType

import fastlcel
import pytest
from conftest import run_async
from fastlcel import Lambda, Parallel, Sequence


def add_one(x: int) -> int:
    return x + 1


def times_two(x: int) -> int:
    return x * 2


def minus_three(x: int) -> int:
    return x - 3


async def async_square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


def test_or_of_two_runnables_is_a_sequence(lcel: ModuleType) -> None:
    a, b = lcel.RunnableLambda(add_one), lcel.RunnableLambda(times_two)
    seq = a | b
    assert isinstance(seq, lcel.RunnableSequence)
    assert seq.steps == [a, b]
    assert seq.first is a
    assert seq.last is b
    assert seq.invoke(3) == 8


def test_pipe_chains_every_argument(lcel: ModuleType) -> None:
    seq = lcel.RunnableLambda(add_one).pipe(times_two, lcel.RunnableLambda(minus_three))
    assert isinstance(seq, lcel.RunnableSequence)
    assert len(seq.steps) == 3
    assert seq.invoke(3) == 5


def test_pipe_with_a_name(lcel: ModuleType) -> None:
    seq = lcel.RunnableLambda(add_one).pipe(times_two, name="doubled")
    assert seq.name == "doubled"
    assert seq.invoke(1) == 4


def test_constructor_with_a_name(lcel: ModuleType) -> None:
    seq = lcel.RunnableSequence(add_one, times_two, name="named")
    assert seq.name == "named"
    assert seq.get_name() == "named"


def test_callables_on_either_side_are_coerced(lcel: ModuleType) -> None:
    lam = lcel.RunnableLambda(times_two)
    assert (add_one | lam).invoke(3) == 8
    assert (lam | add_one).invoke(3) == 7
    assert ((lambda x: x - 1) | lam | (lambda x: -x)).invoke(3) == -4
    assert all(isinstance(step, lcel.RunnableLambda) for step in (add_one | lam).steps)


def test_dict_on_the_left_becomes_a_parallel_first_step(lcel: ModuleType) -> None:
    seq = {"x": add_one, "y": lcel.RunnableLambda(times_two)} | lcel.RunnableLambda(
        lambda d: d["x"] + d["y"]
    )
    assert isinstance(seq, lcel.RunnableSequence)
    assert isinstance(seq.first, lcel.RunnableParallel)
    assert seq.invoke(3) == 10


def test_dict_on_the_right_becomes_a_parallel_last_step(lcel: ModuleType) -> None:
    seq = lcel.RunnableLambda(add_one) | {"double": times_two, "nested": {"same": lambda x: x}}
    assert isinstance(seq.last, lcel.RunnableParallel)
    assert seq.invoke(1) == {"double": 4, "nested": {"same": 2}}


def test_itemgetter_on_either_side(lcel: ModuleType) -> None:
    lam = lcel.RunnableLambda(lambda d: {"k": d["k"] * 10})
    assert (operator.itemgetter("k") | lcel.RunnableLambda(add_one)).invoke({"k": 1}) == 2
    assert (lam | operator.itemgetter("k")).invoke({"k": 2}) == 20
    assert (lam | operator.itemgetter("k", "k")).invoke({"k": 2}) == (20, 20)


def test_coerced_steps_are_runnables(lcel: ModuleType) -> None:
    """Code that walks ``.steps`` calls ``invoke`` on them: every step must be a runnable."""
    seq = operator.itemgetter("k") | lcel.RunnableLambda(add_one) | operator.itemgetter(0)
    first, last = seq.first, seq.last
    assert first.invoke({"k": 5}) == 5
    assert last.invoke([7, 8]) == 7
    assert run_async(lambda: first.ainvoke({"k": 5})) == 5


@pytest.mark.parametrize(
    "build",
    [
        lambda L: (L.RunnableLambda(add_one) | times_two) | (L.RunnableLambda(add_one) | times_two),
        lambda L: L.RunnableLambda(add_one) | (L.RunnableLambda(times_two) | add_one) | times_two,
        lambda L: L.RunnableLambda(add_one).pipe(L.RunnableLambda(times_two) | add_one, times_two),
        lambda L: L.RunnableSequence(add_one, L.RunnableSequence(times_two, add_one), times_two),
        lambda L: add_one | (L.RunnableLambda(times_two) | add_one | times_two),
    ],
    ids=["seq|seq", "a|(b|c)|d", "pipe", "constructor", "f|seq"],
)
def test_nested_sequences_are_flattened(lcel: ModuleType, build) -> None:
    seq = build(lcel)
    assert len(seq.steps) == 4
    assert not any(isinstance(step, lcel.RunnableSequence) for step in seq.steps)
    assert seq.invoke(1) == 10


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_steps_raise_value_error(lcel: ModuleType, n: int) -> None:
    with pytest.raises(ValueError, match=f"must have at least 2 steps, got {n}$"):
        lcel.RunnableSequence(*[add_one] * n)


@pytest.mark.parametrize("bad", [5, "text", None, [add_one]], ids=repr)
def test_unsupported_operand_raises_type_error(lcel: ModuleType, bad) -> None:
    lam = lcel.RunnableLambda(add_one)
    with pytest.raises(TypeError):
        lam | bad  # noqa: B015
    with pytest.raises(TypeError):
        lcel.RunnableSequence(lam, bad)


def test_unsupported_step_error_names_the_position_and_the_type() -> None:
    with pytest.raises(TypeError, match=r"Sequence step 2 is an int; expected a callable"):
        Sequence(add_one, times_two, 5)
    with pytest.raises(TypeError, match=r"Sequence step 1 is a(n)? str"):
        Lambda(add_one) | "text"  # noqa: B015


def test_each_step_gets_the_previous_output(lcel: ModuleType) -> None:
    seen: list[object] = []

    def record(x: object) -> object:
        seen.append(x)
        return (x, len(seen))

    assert (lcel.RunnableLambda(record) | record | record).invoke("in") == (
        (("in", 1), 2),
        3,
    )
    assert seen == ["in", ("in", 1), (("in", 1), 2)]


def test_the_first_failure_stops_the_sequence(lcel: ModuleType) -> None:
    ran: list[str] = []

    def boom(_x: object) -> None:
        raise KeyError("missing")

    seq = lcel.RunnableLambda(add_one) | boom | (lambda x: ran.append("after"))
    with pytest.raises(KeyError, match="missing"):
        seq.invoke(1)
    with pytest.raises(KeyError, match="missing"):
        run_async(lambda: seq.ainvoke(1))
    assert ran == []


def test_ainvoke_mixes_sync_async_and_dict_steps(lcel: ModuleType) -> None:
    seq = lcel.RunnableLambda(add_one) | async_square | {"a": add_one, "b": async_square}
    assert run_async(lambda: seq.ainvoke(2)) == {"a": 10, "b": 81}


def test_batch_and_abatch_keep_the_input_order(lcel: ModuleType) -> None:
    seq = lcel.RunnableLambda(add_one) | times_two | {"v": lambda x: x, "neg": lambda x: -x}
    expected = [{"v": 2 * (i + 1), "neg": -2 * (i + 1)} for i in range(20)]
    assert seq.batch(list(range(20))) == expected
    assert run_async(lambda: seq.abatch(list(range(20)))) == expected


def test_batch_return_exceptions_fills_the_failed_slots(lcel: ModuleType) -> None:
    seq = lcel.RunnableLambda(lambda x: x) | (lambda x: 1 / x)
    for result in (
        seq.batch([1, 0, 2], return_exceptions=True),
        run_async(lambda: seq.abatch([1, 0, 2], return_exceptions=True)),
    ):
        assert result[0] == 1.0
        assert isinstance(result[1], ZeroDivisionError)
        assert result[2] == 0.5


def test_config_reaches_every_step(lcel: ModuleType) -> None:
    def tags(_x: object, config: dict) -> list:
        return config.get("tags")

    seq = lcel.RunnableLambda(tags) | {"inner": tags} | (lambda d, config: (d, config["metadata"]))
    config = {"tags": ["t"], "metadata": {"m": 1}}
    expected = ({"inner": ["t"]}, {"m": 1})
    assert seq.invoke(0, config) == expected
    assert run_async(lambda: seq.ainvoke(0, config)) == expected
    assert seq.batch([0, 0], config) == [expected, expected]


def test_a_long_sequence_runs_without_recursion(lcel: ModuleType) -> None:
    seq = lcel.RunnableSequence(*[add_one] * 500)
    assert seq.invoke(0) == 500
    assert run_async(lambda: seq.ainvoke(0)) == 500


def test_a_sequence_can_be_a_step_of_a_parallel(lcel: ModuleType) -> None:
    par = lcel.RunnableParallel(
        chain=lcel.RunnableLambda(add_one) | times_two, plain=lcel.RunnableLambda(add_one)
    )
    assert par.invoke(1) == {"chain": 4, "plain": 2}


def test_a_sequence_is_reusable_and_immutable(lcel: ModuleType) -> None:
    base = lcel.RunnableLambda(add_one) | times_two
    longer = base | minus_three
    assert len(base.steps) == 2
    assert len(longer.steps) == 3
    assert [base.invoke(1), longer.invoke(1), base.invoke(1)] == [4, 1, 4]


def test_coerced_types() -> None:
    seq = {"a": add_one} | Lambda(times_two) | (lambda d: d)
    assert [type(step) for step in seq.steps] == [Parallel, Lambda, Lambda]
    assert fastlcel.RunnableSequence is Sequence

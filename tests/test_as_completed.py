"""batch_as_completed and abatch_as_completed: ``(index, result)`` pairs as the items finish."""

from __future__ import annotations

import asyncio
import threading
import time
from types import ModuleType
from typing import Any

import pytest
from conftest import PeakCounter, run_async

GATE_TIMEOUT = 5.0


async def alist(pairs: Any) -> list:
    return [pair async for pair in pairs]


def reverse_finisher(n: int):
    """A function whose item i finishes only after the consumer got item i + 1 (so the items
    complete last to first), and the events the consumer sets."""
    got = [threading.Event() for _ in range(n)]

    def step(i: int) -> str:
        if i + 1 < n and not got[i + 1].wait(GATE_TIMEOUT):
            return f"late {i}"
        return f"done {i}"

    return step, got


def test_batch_as_completed_yields_in_completion_order(lcel: ModuleType) -> None:
    step, got = reverse_finisher(4)
    pairs = []
    for index, result in lcel.RunnableLambda(step).batch_as_completed([0, 1, 2, 3]):
        pairs.append((index, result))
        got[index].set()
    assert pairs == [(3, "done 3"), (2, "done 2"), (1, "done 1"), (0, "done 0")]


def test_abatch_as_completed_yields_in_completion_order(lcel: ModuleType) -> None:
    async def main() -> list:
        got = [asyncio.Event() for _ in range(4)]

        async def step(i: int) -> str:
            if i + 1 < 4:
                await asyncio.wait_for(got[i + 1].wait(), GATE_TIMEOUT)
            return f"done {i}"

        pairs = []
        async for index, result in lcel.RunnableLambda(step).abatch_as_completed([0, 1, 2, 3]):
            pairs.append((index, result))
            got[index].set()
        return pairs

    assert run_async(main) == [(3, "done 3"), (2, "done 2"), (1, "done 1"), (0, "done 0")]


def test_abatch_as_completed_of_a_sync_function(lcel: ModuleType) -> None:
    step, got = reverse_finisher(3)

    async def main() -> list:
        pairs = []
        async for index, result in lcel.RunnableLambda(step).abatch_as_completed([0, 1, 2]):
            pairs.append((index, result))
            got[index].set()
        return pairs

    assert run_async(main) == [(2, "done 2"), (1, "done 1"), (0, "done 0")]


@pytest.mark.parametrize(
    "build",
    [
        lambda L: L.RunnableLambda(lambda x: x + 1) | (lambda x: x * 10),
        lambda L: L.RunnableParallel(v=lambda x: x * 10 + 10) | L.RunnablePick("v"),
        lambda L: L.RunnableBranch((lambda x: x < 0, abs), lambda x: (x + 1) * 10),
        lambda L: L.RunnableLambda(lambda x, k: (x + k) * 10).bind(k=1),
        lambda L: (
            L.RunnableLambda(lambda x: {"x": x})
            | L.RunnablePassthrough.assign(v=lambda d: (d["x"] + 1) * 10)
            | L.RunnablePick("v")
        ),
    ],
    ids=["sequence", "parallel", "branch", "binding", "assign"],
)
def test_every_type_has_as_completed(lcel: ModuleType, build) -> None:
    runnable = build(lcel)
    expected = [(0, 10), (1, 20), (2, 30)]
    assert sorted(runnable.batch_as_completed([0, 1, 2])) == expected
    assert sorted(run_async(lambda: alist(runnable.abatch_as_completed([0, 1, 2])))) == expected


def fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


async def async_fails_on_two(x: int) -> int:
    await asyncio.sleep(0)
    return fails_on_two(x)


def test_return_exceptions_puts_the_exception_in_the_pair(lcel: ModuleType) -> None:
    def check(pairs: list) -> None:
        by_index = dict(pairs)
        assert sorted(by_index) == [0, 1, 2, 3]
        assert by_index[0] == 0 and by_index[1] == 1 and by_index[3] == 3
        assert isinstance(by_index[2], ValueError)
        assert str(by_index[2]) == "two"

    check(
        list(
            lcel.RunnableLambda(fails_on_two).batch_as_completed(
                [0, 1, 2, 3], return_exceptions=True
            )
        )
    )
    lam = lcel.RunnableLambda(async_fails_on_two)
    check(run_async(lambda: alist(lam.abatch_as_completed([0, 1, 2, 3], return_exceptions=True))))


def test_without_return_exceptions_the_failure_is_raised(lcel: ModuleType) -> None:
    with pytest.raises(ValueError, match="two"):
        list(lcel.RunnableLambda(fails_on_two).batch_as_completed([2, 0]))
    lam = lcel.RunnableLambda(async_fails_on_two)
    with pytest.raises(ValueError, match="two"):
        run_async(lambda: alist(lam.abatch_as_completed([2, 0])))


def test_no_inputs_yield_nothing(lcel: ModuleType) -> None:
    lam = lcel.RunnableLambda(lambda x: x)
    assert list(lam.batch_as_completed([])) == []
    assert run_async(lambda: alist(lam.abatch_as_completed([]))) == []


def test_one_config_or_one_per_input(lcel: ModuleType) -> None:
    lam = lcel.RunnableLambda(lambda x, config: (x, config["tags"]))
    assert sorted(lam.batch_as_completed([0, 1], {"tags": ["all"]})) == [
        (0, (0, ["all"])),
        (1, (1, ["all"])),
    ]
    configs = [{"tags": ["first"]}, {"tags": ["second"]}]
    assert sorted(lam.batch_as_completed([0, 1], configs)) == [
        (0, (0, ["first"])),
        (1, (1, ["second"])),
    ]
    assert sorted(run_async(lambda: alist(lam.abatch_as_completed([0, 1], configs)))) == [
        (0, (0, ["first"])),
        (1, (1, ["second"])),
    ]


def test_max_concurrency_caps_the_items_in_flight(lcel: ModuleType) -> None:
    peak = PeakCounter()

    def step(x: int) -> int:
        with peak:
            time.sleep(0.01)
        return x

    pairs = list(lcel.RunnableLambda(step).batch_as_completed(range(6), {"max_concurrency": 2}))
    assert sorted(pairs) == [(i, i) for i in range(6)]
    assert peak.peak <= 2


class Stop(BaseException):
    """A BaseException of the user's own (neither an Exception nor a builtin)."""


BASE_EXCEPTIONS = [KeyboardInterrupt, SystemExit, Stop]


def raiser(exc: BaseException):
    """A sync and an async function raising `exc` (the same object) on input 1."""

    def step(x: int) -> int:
        if x == 1:
            raise exc
        return x

    async def astep(x: int) -> int:
        await asyncio.sleep(0)
        return step(x)

    return step, astep


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", BASE_EXCEPTIONS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("sync", [True, False], ids=["def", "async def"])
def test_a_base_exception_ends_every_batch_method_alike(lcel: ModuleType, kind, sync) -> None:
    """A step's KeyboardInterrupt, SystemExit or own BaseException is raised, as the same
    object, by batch, abatch and both as-completed iterators, even with return_exceptions."""
    exc = kind("stop")
    step, astep = raiser(exc)
    lam = lcel.RunnableLambda(step if sync else astep)
    calls = {
        "abatch": lambda: run_async(lambda: lam.abatch([0, 1, 2], return_exceptions=True)),
        "abatch_as_completed": lambda: run_async(
            lambda: alist(lam.abatch_as_completed([0, 1, 2], return_exceptions=True))
        ),
    }
    if sync or lcel.__name__ == "fastlcel":  # langchain_core's sync path takes no async def
        calls["batch"] = lambda: lam.batch([0, 1, 2], return_exceptions=True)
        calls["batch_as_completed"] = lambda: list(
            lam.batch_as_completed([0, 1, 2], return_exceptions=True)
        )
    for name, call in calls.items():
        with pytest.raises(kind) as raised:
            call()
        assert raised.value is exc, name


@pytest.mark.timeout(20)
@pytest.mark.parametrize("sync", [True, False], ids=["def", "async def"])
def test_a_generator_exit_of_a_step_is_raised_as_is(sync) -> None:
    """langchain_core turns it into RuntimeError('coroutine ignored GeneratorExit') on its
    async paths; fastlcel raises the step's own exception on every path."""
    import fastlcel

    exc = GeneratorExit("stop")
    step, astep = raiser(exc)
    lam = fastlcel.Lambda(step if sync else astep)
    for call in [
        lambda: lam.batch([0, 1, 2]),
        lambda: list(lam.batch_as_completed([0, 1, 2])),
        lambda: run_async(lambda: lam.abatch([0, 1, 2])),
        lambda: run_async(lambda: alist(lam.abatch_as_completed([0, 1, 2]))),
    ]:
        with pytest.raises(GeneratorExit) as raised:
            call()
        assert raised.value is exc


BAD_CONFIGS = [
    ({"max_concurrency": 0}, ValueError),
    ({"max_concurrency": "x"}, TypeError),
    ({"max_concurrency": True}, TypeError),
    (0, TypeError),
    ("cfg", TypeError),
    ((), ValueError),  # no config for the one input
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("config", "error"), BAD_CONFIGS, ids=repr)
def test_a_bad_config_is_refused_at_the_call(config, error) -> None:
    """Both iterators check their config when called, as batch does, before any item runs."""
    import fastlcel

    ran = []
    lam = fastlcel.Lambda(lambda x: ran.append(x) or x)
    with pytest.raises(error) as expected:
        lam.batch([1], config)
    for call in (lam.batch_as_completed, lam.abatch_as_completed):
        with pytest.raises(error) as raised:
            call([1], config)
        assert isinstance(raised.value, fastlcel.FastLcelError)
        assert str(raised.value) == str(expected.value)
    assert ran == []

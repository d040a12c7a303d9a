"""Parallel: step coercion, key order, input identity, nesting, config, repr and the aliases."""

from __future__ import annotations

import asyncio
import operator
import threading
import time

import fastlcel
import pytest
from conftest import Impl, run_async
from fastlcel import Lambda, Parallel


def add_one(x: int) -> int:
    return x + 1


def times_two(x: int) -> int:
    return x * 2


async def async_square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


def test_invoke_collects_every_step(impl: Impl) -> None:
    par = impl.Parallel(a=add_one, b=times_two, c=lambda x: str(x))
    assert par.invoke(3) == {"a": 4, "b": 6, "c": "3"}


def test_ainvoke_mixes_sync_and_async_steps(impl: Impl) -> None:
    par = impl.Parallel(a=add_one, b=async_square, c=impl.Lambda(times_two))
    assert run_async(lambda: par.ainvoke(3)) == {"a": 4, "b": 9, "c": 6}


def test_output_keeps_the_declared_key_order_whatever_finishes_first(impl: Impl) -> None:
    def after(seconds: float):
        def step(_x: object) -> float:
            time.sleep(seconds)
            return seconds

        return step

    par = impl.Parallel(z=after(0.06), a=after(0.0), m=after(0.03))
    result = par.invoke(None)
    assert list(result) == ["z", "a", "m"]
    assert result == {"z": 0.06, "a": 0.0, "m": 0.03}


def test_async_output_keeps_the_declared_key_order(impl: Impl) -> None:
    def after(seconds: float):
        async def step(_x: object) -> float:
            await asyncio.sleep(seconds)
            return seconds

        return step

    par = impl.Parallel(z=after(0.06), a=after(0.0), m=after(0.03))
    assert list(run_async(lambda: par.ainvoke(None))) == ["z", "a", "m"]


def test_every_step_gets_the_same_input_object(impl: Impl) -> None:
    payload = {"question": "why"}
    seen = []

    def record(x: object) -> None:
        seen.append(x)

    async def arecord(x: object) -> None:
        seen.append(x)

    impl.Parallel(a=record, b=record, c=record).invoke(payload)
    run_async(lambda: impl.Parallel(a=record, b=arecord, c=arecord).ainvoke(payload))
    assert len(seen) == 6
    assert all(x is payload for x in seen)


def test_mapping_and_keyword_steps_merge_and_keywords_win(impl: Impl) -> None:
    par = impl.Parallel({"a": add_one, "b": times_two}, c=add_one, a=lambda _x: "kw")
    result = par.invoke(1)
    assert result == {"a": "kw", "b": 2, "c": 2}
    assert list(result) == ["a", "b", "c"]


def test_mapping_is_positional_only_so_a_step_may_be_called_mapping(impl: Impl) -> None:
    assert impl.Parallel(mapping={"x": add_one}).invoke(1) == {"mapping": {"x": 2}}


def test_steps_may_be_named_like_parameters(impl: Impl) -> None:
    par = impl.Parallel(input=add_one, config=times_two, kwargs=add_one)
    assert par.invoke(1) == {"input": 2, "config": 2, "kwargs": 2}


def test_mapping_only(impl: Impl) -> None:
    assert impl.Parallel({"a": add_one}).invoke(1) == {"a": 2}


def test_empty_parallel_returns_an_empty_dict(impl: Impl) -> None:
    par = impl.Parallel()
    assert par.invoke(1) == {}
    assert par.batch([1, 2]) == [{}, {}]
    assert run_async(lambda: par.ainvoke(1)) == {}
    assert run_async(lambda: par.abatch([1, 2])) == [{}, {}]


def test_nested_dict_becomes_a_nested_parallel(impl: Impl) -> None:
    par = impl.Parallel(a=add_one, inner={"b": times_two, "deeper": {"c": add_one}})
    expected = {"a": 3, "inner": {"b": 4, "deeper": {"c": 3}}}
    assert par.invoke(2) == expected
    assert run_async(lambda: par.ainvoke(2)) == expected


def test_itemgetter_steps(impl: Impl) -> None:
    par = impl.Parallel(a=operator.itemgetter("x"), both=operator.itemgetter("x", "y"))
    assert par.invoke({"x": 1, "y": 2}) == {"a": 1, "both": (1, 2)}
    assert run_async(lambda: par.ainvoke({"x": 1, "y": 2})) == {"a": 1, "both": (1, 2)}


def test_parallel_as_a_step(impl: Impl) -> None:
    inner = impl.Parallel(b=times_two)
    assert impl.Parallel(a=add_one, inner=inner).invoke(2) == {"a": 3, "inner": {"b": 4}}


def test_langchain_runnable_as_a_step_receives_input_and_config() -> None:
    runnables = pytest.importorskip("langchain_core.runnables")

    def tagged(x: int, config: dict) -> tuple:
        return x + 1, config.get("tags")

    async def atagged(x: int, config: dict) -> tuple:
        return x + 2, config.get("tags")

    par = Parallel(
        sync=runnables.RunnableLambda(tagged),
        both=runnables.RunnableLambda(tagged, afunc=atagged),
        chain=runnables.RunnableLambda(add_one) | runnables.RunnableLambda(times_two),
    )
    config = {"tags": ["lc"]}
    assert par.invoke(1, config) == {"sync": (2, ["lc"]), "both": (2, ["lc"]), "chain": 4}
    assert run_async(lambda: par.ainvoke(1, config)) == {
        "sync": (2, ["lc"]),
        "both": (3, ["lc"]),
        "chain": 4,
    }


class DuckRunnable:
    """Not callable, not a langchain Runnable: only has invoke and ainvoke."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def invoke(self, input: object, config: object = None) -> tuple:
        self.calls.append(("invoke", input, config))
        return ("invoke", input)

    async def ainvoke(self, input: object, config: object = None) -> tuple:
        self.calls.append(("ainvoke", input, config))
        return ("ainvoke", input)


def test_object_with_invoke_and_ainvoke_is_a_step() -> None:
    duck = DuckRunnable()
    par = Parallel(duck=duck)
    assert par.invoke(1, {"tags": ["t"]}) == {"duck": ("invoke", 1)}
    assert run_async(lambda: par.ainvoke(2, {"tags": ["t"]})) == {"duck": ("ainvoke", 2)}
    assert [call[:2] for call in duck.calls] == [("invoke", 1), ("ainvoke", 2)]
    for _, _, config in duck.calls:
        assert config is not None
        assert config.get("tags") == ["t"]


@pytest.mark.parametrize("bad", [5, "text", None, 1.5, [add_one]], ids=repr)
def test_unsupported_step_raises_type_error(impl: Impl, bad) -> None:
    with pytest.raises(TypeError):
        impl.Parallel(summary=bad)


@pytest.mark.parametrize(
    ("bad", "type_name"), [(5, "int"), ("text", "str"), (None, "None"), ([add_one], "list")]
)
def test_unsupported_step_error_names_the_key_and_the_type(bad, type_name) -> None:
    with pytest.raises(TypeError) as info:
        Parallel({"ok": add_one}, summary=bad)
    message = str(info.value)
    assert "summary" in message
    assert type_name in message


@pytest.mark.parametrize("key", [1, None, ("a",), b"a"], ids=repr)
def test_keys_must_be_strings(key) -> None:
    with pytest.raises(TypeError):
        Parallel({key: add_one})


def test_steps_are_coerced_in_declared_order() -> None:
    lam = Lambda(times_two)
    par = Parallel({"b": add_one, "a": lam}, nested={"x": add_one}, getter=operator.itemgetter(0))
    steps = par.steps
    assert list(steps) == ["b", "a", "nested", "getter"]
    assert isinstance(steps["b"], Lambda)
    assert steps["b"].func is add_one
    assert steps["a"] is lam
    assert isinstance(steps["nested"], Parallel)
    assert list(steps["nested"].steps) == ["x"]


def test_config_reaches_every_step() -> None:
    def f(_x: object, config: dict) -> tuple:
        return (
            config.get("tags"),
            config.get("metadata"),
            config.get("configurable"),
            config.get("recursion_limit"),
        )

    config = {
        "tags": ["t"],
        "metadata": {"m": 1},
        "configurable": {"c": 2},
        "recursion_limit": 9,
        "run_name": "top",
        "max_concurrency": 2,
    }
    expected = (["t"], {"m": 1}, {"c": 2}, 9)
    par = Parallel(a=f, nested={"b": f})
    assert par.invoke(0, config) == {"a": expected, "nested": {"b": expected}}
    assert run_async(lambda: par.ainvoke(0, config)) == {"a": expected, "nested": {"b": expected}}


def test_config_tags_reach_steps(impl: Impl) -> None:
    def f(_x: object, config: dict) -> list:
        return config.get("tags")

    async def af(_x: object, config: dict) -> list:
        return config.get("tags")

    par = impl.Parallel(a=f, nested={"c": f})
    assert par.invoke(0, {"tags": ["t"]}) == {"a": ["t"], "nested": {"c": ["t"]}}
    apar = impl.Parallel(a=f, b=af, nested={"c": f, "d": af})
    expected = {"a": ["t"], "b": ["t"], "nested": {"c": ["t"], "d": ["t"]}}
    assert run_async(lambda: apar.ainvoke(0, {"tags": ["t"]})) == expected


def test_steps_run_concurrently(impl: Impl) -> None:
    barrier = threading.Barrier(3, timeout=5)

    def meet(_x: object) -> bool:
        barrier.wait()  # breaks (BrokenBarrierError) unless all three run at once
        return True

    assert impl.Parallel(a=meet, b=meet, c=meet).invoke(None) == {"a": True, "b": True, "c": True}


def test_a_parallel_can_be_invoked_many_times_and_from_many_threads() -> None:
    par = Parallel(a=add_one, b=times_two)
    results: list[dict] = []

    def worker(n: int) -> None:
        for i in range(50):
            results.append(par.invoke(n * 100 + i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 200
    assert all(r == {"a": r["b"] // 2 + 1, "b": r["b"]} for r in results)


def test_aliases_are_the_same_types() -> None:
    from fastlcel import RunnableLambda, RunnableMap, RunnableParallel

    assert RunnableParallel is Parallel
    assert RunnableMap is Parallel
    assert RunnableLambda is Lambda
    assert issubclass(fastlcel.PanicError, fastlcel.FastLcelError)
    assert issubclass(fastlcel.FastLcelError, Exception)

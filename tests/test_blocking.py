"""The loop-blocking detector: an async step holding the event loop longer than a threshold in
one go gets a BlockingStepWarning naming it, once per step (`warn_blocking`, asyncio debug)."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import run_async
from fastlcel import BlockingStepWarning, FastLcelTypeError, FastLcelValueError, Lambda, Parallel

ON = {"warn_blocking": True}


async def blocky(x: Any) -> Any:
    time.sleep(0.2)  # holds the loop
    return x


async def polite(x: Any) -> Any:
    await asyncio.sleep(0.2)
    return x


def caught(make: Callable[[], Awaitable[Any]], debug: bool = False) -> list[Any]:
    """The BlockingStepWarnings raised while `make()` runs on a fresh loop."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")

        async def main() -> Any:
            return await make()

        asyncio.run(main(), debug=debug)
    return [w for w in seen if issubclass(w.category, BlockingStepWarning)]


def test_time_sleep_in_an_async_step_is_named() -> None:
    step = Lambda(blocky)
    [w] = caught(lambda: step.ainvoke(1, ON))
    message = str(w.message)
    assert message.startswith("step 'blocky' held the event loop for ")
    assert 190 <= int(message.split(" for ")[1].split(" ms")[0]) < 5000, message
    assert "(threshold 100 ms)" in message
    assert w.message.step == "blocky"
    assert 0.19 <= w.message.seconds < 5
    # It points at the step's function.
    assert (w.filename, w.lineno) == (__file__, blocky.__code__.co_firstlineno)
    assert issubclass(BlockingStepWarning, RuntimeWarning)


def test_await_asyncio_sleep_is_not_blocking() -> None:
    assert caught(lambda: Lambda(polite).ainvoke(1, ON)) == []


def test_once_per_step() -> None:
    step = Lambda(blocky)

    async def twice() -> Any:
        await step.ainvoke(1, ON)
        return await step.ainvoke(2, ON)

    assert len(caught(twice)) == 1
    # Another runnable of the same function is another step.
    assert len(caught(lambda: Lambda(blocky).ainvoke(1, ON))) == 1


def test_named_inside_composites_and_batches() -> None:
    par = Parallel(fast=polite, slow=Lambda(blocky, name="slow_one"))
    [w] = caught(lambda: par.ainvoke(1, ON))
    assert w.message.step == "slow_one"
    seq = Lambda(polite) | Lambda(blocky, name="second")
    [w] = caught(lambda: seq.ainvoke(1, ON))
    assert w.message.step == "second"
    [w] = caught(lambda: Lambda(blocky, name="batched").abatch([1, 2, 3], ON))
    assert w.message.step == "batched"


def test_a_step_awaiting_a_blocking_runnable_is_not_blamed() -> None:
    inner = Lambda(blocky, name="inner")

    async def outer(x: Any) -> Any:
        return await inner.ainvoke(x, ON)

    [w] = caught(lambda: Lambda(outer).ainvoke(1, ON))
    assert w.message.step == "inner"


def test_a_foreign_runnable_is_named_by_get_name() -> None:
    class Remote:
        def get_name(self) -> str:
            return "RemoteModel"

        async def ainvoke(self, x: Any, config: Any = None) -> Any:
            time.sleep(0.2)
            return x

    [w] = caught(lambda: (Lambda(polite) | Remote()).ainvoke(1, ON))
    assert w.message.step == "RemoteModel"


def test_the_bridged_loop_of_a_sync_call_is_watched_too() -> None:
    with pytest.warns(BlockingStepWarning, match="step 'blocky'"):
        assert Lambda(blocky).invoke(1, ON) == 1


def test_asyncio_debug_mode_turns_it_on() -> None:
    [w] = caught(lambda: Lambda(blocky).ainvoke(1), debug=True)
    assert w.message.step == "blocky"
    # warn_blocking=False keeps it off, even in debug mode.
    assert caught(lambda: Lambda(blocky).ainvoke(1, {"warn_blocking": False}), debug=True) == []


def test_off_by_default() -> None:
    assert caught(lambda: Lambda(blocky).ainvoke(1)) == []
    assert caught(lambda: Lambda(blocky).abatch([1, 2])) == []


def test_the_threshold_is_configurable() -> None:
    assert caught(lambda: Lambda(blocky).ainvoke(1, {"warn_blocking": 0.5})) == []
    [w] = caught(lambda: Lambda(blocky).ainvoke(1, {"warn_blocking": 0.05}))
    assert "(threshold 50 ms)" in str(w.message)


def test_a_with_config_key_watches_that_runnable() -> None:
    chain = Lambda(blocky, name="a") | Lambda(blocky, name="b").with_config(warn_blocking=True)
    assert [w.message.step for w in caught(lambda: chain.ainvoke(1))] == ["b"]


def test_warnings_as_errors_fail_the_step() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlockingStepWarning)
        with pytest.raises(BlockingStepWarning, match="step 'blocky'"):
            run_async(lambda: Lambda(blocky).ainvoke(1, ON))


@pytest.mark.parametrize(
    "value, error, message",
    [
        ("yes", FastLcelTypeError, r"config\['warn_blocking'\] must be True, False, None or"),
        (-1, FastLcelValueError, r"config\['warn_blocking'\] must be a positive number"),
    ],
)
def test_a_bad_value_is_refused_at_the_call(value: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Lambda(blocky).invoke(1, {"warn_blocking": value})

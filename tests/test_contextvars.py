"""contextvars: every step sees the caller's values; a step's writes stay inside that step."""

from __future__ import annotations

import asyncio
import contextvars
import time

import pytest
from conftest import Impl, run_async

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.fixture
def caller_value():
    token = request_id.set("caller")
    yield "caller"
    request_id.reset(token)


def read(_x: object) -> str:
    return request_id.get()


async def aread(_x: object) -> str:
    await asyncio.sleep(0)
    return request_id.get()


def make_writer(name: str):
    """Reads the value it was given, writes its own, and checks nobody overwrote it meanwhile."""

    def write(_x: object) -> tuple:
        before = request_id.get()
        request_id.set(name)
        time.sleep(0.01)
        return before, request_id.get()

    return write


def make_async_writer(name: str):
    async def write(_x: object) -> tuple:
        before = request_id.get()
        request_id.set(name)
        await asyncio.sleep(0.01)
        return before, request_id.get()

    return write


def test_sync_steps_see_the_callers_values(impl: Impl, caller_value: str) -> None:
    par = impl.Parallel({f"s{i}": read for i in range(6)}, nested={"n": read})
    expected = {f"s{i}": caller_value for i in range(6)}
    assert par.invoke(None) == {**expected, "nested": {"n": caller_value}}


def test_async_steps_see_the_callers_values(impl: Impl) -> None:
    par = impl.Parallel(a=aread, b=read, nested={"c": aread, "d": read})

    async def main() -> dict:
        request_id.set("async caller")  # set inside the loop's task context
        return await par.ainvoke(None)

    expected = {"a": "async caller", "b": "async caller"}
    assert run_async(main) == {**expected, "nested": {"c": "async caller", "d": "async caller"}}


def test_batch_items_see_the_callers_values(impl: Impl, caller_value: str) -> None:
    assert impl.Lambda(read).batch([1, 2, 3, 4]) == [caller_value] * 4
    assert impl.Parallel(a=read).batch([1, 2]) == [{"a": caller_value}] * 2


def test_abatch_items_see_the_callers_values(impl: Impl) -> None:
    lam_async = impl.Lambda(aread)
    lam_sync = impl.Lambda(read)

    async def main() -> tuple:
        request_id.set("async caller")
        return await lam_async.abatch([1, 2, 3]), await lam_sync.abatch([1, 2, 3])

    assert run_async(main) == (["async caller"] * 3, ["async caller"] * 3)


def test_lambda_invoke_sees_and_does_not_leak(impl: Impl, caller_value: str) -> None:
    assert impl.Lambda(make_writer("inner")).invoke(None) == (caller_value, "inner")
    assert request_id.get() == caller_value


def test_sync_step_writes_do_not_leak_to_caller_or_siblings(impl: Impl, caller_value: str) -> None:
    names = [f"s{i}" for i in range(6)]
    par = impl.Parallel({name: make_writer(name) for name in names})
    result = par.invoke(None)
    assert result == {name: (caller_value, name) for name in names}
    assert request_id.get() == caller_value


def test_sync_step_writes_do_not_leak_with_max_concurrency_1(impl: Impl, caller_value: str) -> None:
    """Steps run one after another on the same thread must still not see each other's writes."""
    names = [f"s{i}" for i in range(4)]
    par = impl.Parallel({name: make_writer(name) for name in names})
    result = par.invoke(None, {"max_concurrency": 1})
    assert result == {name: (caller_value, name) for name in names}
    assert request_id.get() == caller_value


def test_batch_item_writes_do_not_leak(impl: Impl, caller_value: str) -> None:
    lam = impl.Lambda(make_writer("item"))
    assert lam.batch([1, 2, 3], {"max_concurrency": 1}) == [(caller_value, "item")] * 3
    assert lam.batch([1, 2, 3]) == [(caller_value, "item")] * 3
    assert request_id.get() == caller_value


def test_async_step_writes_do_not_leak(impl: Impl) -> None:
    names = ["a", "b", "c"]
    par = impl.Parallel({name: make_async_writer(name) for name in names}, sync=make_writer("sync"))

    async def main() -> tuple:
        request_id.set("async caller")
        result = await par.ainvoke(None)
        return result, request_id.get()

    result, after = run_async(main)
    assert result == {
        **{name: ("async caller", name) for name in names},
        "sync": ("async caller", "sync"),
    }
    assert after == "async caller"


def test_abatch_item_writes_do_not_leak(impl: Impl) -> None:
    lam = impl.Lambda(make_async_writer("item"))

    async def main() -> tuple:
        request_id.set("async caller")
        result = await lam.abatch([1, 2, 3])
        return result, request_id.get()

    result, after = run_async(main)
    assert result == [("async caller", "item")] * 3
    assert after == "async caller"


def test_pool_threads_do_not_keep_values_between_calls(impl: Impl) -> None:
    """A value written by a step on a pool thread is not seen by a later call from elsewhere."""
    par = impl.Parallel({f"s{i}": make_writer(f"w{i}") for i in range(4)})
    par.invoke(None)
    probe = impl.Parallel({f"s{i}": read for i in range(4)})
    assert probe.invoke(None) == {f"s{i}": "unset" for i in range(4)}

"""with_fallbacks: sync and async steps, invoke/ainvoke/batch/abatch, langchain_core parity."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import AsyncFlaky, Flaky, aoutcome, cancel_while_running, outcome
from fastlcel import Lambda, Parallel
from langchain_core.runnables import Runnable, RunnableLambda


def failing(exc: type[BaseException] = ValueError) -> Flaky:
    return Flaky(None, exc=exc)


def fixed(value: Any) -> Flaky:
    return Flaky(0, result=lambda x: (value, x))


class TestInvoke:
    def test_primary_succeeds(self) -> None:
        fallback = fixed("fallback")
        r = Lambda(fixed("primary")).with_fallbacks([Lambda(fallback)])
        assert r.invoke(1) == ("primary", 1)
        assert fallback.total == 0

    def test_first_fallback_that_succeeds(self) -> None:
        second = fixed("second")
        third = fixed("third")
        r = Lambda(failing()).with_fallbacks([Lambda(failing(KeyError)), Lambda(second), third])
        assert r.invoke(1) == ("second", 1)
        assert third.total == 0

    def test_all_fail_raises_the_first_error(self) -> None:
        primary = failing()
        r = Lambda(primary).with_fallbacks([Lambda(failing(KeyError))])
        with pytest.raises(ValueError) as info:
            r.invoke(1)
        assert info.value is primary.raised[0]

    def test_unhandled_error_is_raised_at_once(self) -> None:
        fallback = fixed("fallback")
        r = Lambda(failing(KeyError)).with_fallbacks(
            [Lambda(fallback)], exceptions_to_handle=(ValueError,)
        )
        with pytest.raises(KeyError):
            r.invoke(1)
        assert fallback.total == 0

    def test_unhandled_error_of_a_fallback_is_raised(self) -> None:
        r = Lambda(failing()).with_fallbacks(
            [Lambda(failing(KeyError)), Lambda(fixed("never"))], exceptions_to_handle=(ValueError,)
        )
        with pytest.raises(KeyError):
            r.invoke(1)

    def test_fallbacks_may_be_plain_callables_and_dicts(self) -> None:
        r = Lambda(failing()).with_fallbacks([{"a": lambda x: x + 1}])
        assert r.invoke(1) == {"a": 2}

    def test_exception_key_passes_a_copy_with_the_error(self) -> None:
        seen: list[dict[str, Any]] = []

        def fallback(d: dict[str, Any]) -> str:
            seen.append(d)
            return f"recovered from {type(d['error']).__name__}"

        primary = failing()
        r = Lambda(primary).with_fallbacks(
            [Lambda(failing(KeyError)), Lambda(fallback)], exception_key="error"
        )
        payload = {"q": "question"}
        assert r.invoke(payload) == "recovered from KeyError"
        assert payload == {"q": "question"}  # the caller's dict is not mutated
        assert seen[0]["q"] == "question"
        assert seen[0] is not payload

    def test_exception_key_needs_a_dict(self) -> None:
        r = Lambda(failing()).with_fallbacks([Lambda(abs)], exception_key="error")
        with pytest.raises(ValueError, match="dict input"):
            r.invoke(1)


class TestAsync:
    @pytest.mark.parametrize("cls", [Flaky, AsyncFlaky])
    def test_first_fallback_that_succeeds(self, cls: type[Flaky]) -> None:
        r = Lambda(cls(None)).with_fallbacks([Lambda(cls(None, exc=KeyError)), cls(0)])
        assert asyncio.run(r.ainvoke(3)) == 3

    def test_sync_primary_async_fallback(self) -> None:
        r = Lambda(failing()).with_fallbacks([Lambda(AsyncFlaky(0, result=lambda x: -x))])
        assert asyncio.run(r.ainvoke(3)) == -3

    @pytest.mark.parametrize("cls", [Flaky, AsyncFlaky])
    def test_all_fail_raises_the_first_error(self, cls: type[Flaky]) -> None:
        primary = cls(None)
        r = Lambda(primary).with_fallbacks([Lambda(cls(None, exc=KeyError))])
        with pytest.raises(ValueError) as info:
            asyncio.run(r.ainvoke(1))
        assert info.value is primary.raised[0]

    def test_unhandled_error_is_raised_at_once(self) -> None:
        fallback = AsyncFlaky(0)
        r = Lambda(AsyncFlaky(None, exc=KeyError)).with_fallbacks(
            [Lambda(fallback)], exceptions_to_handle=(ValueError,)
        )
        with pytest.raises(KeyError):
            asyncio.run(r.ainvoke(1))
        assert fallback.total == 0

    def test_exception_key(self) -> None:
        async def fallback(d: dict[str, Any]) -> Any:
            return d["error"]

        primary = AsyncFlaky(None)
        r = Lambda(primary).with_fallbacks([Lambda(fallback)], exception_key="error")
        payload = {"q": 1}
        assert asyncio.run(r.ainvoke(payload)) is primary.raised[0]
        assert payload == {"q": 1}

    def test_cancelled_is_not_handled(self) -> None:
        fallback = AsyncFlaky(0)

        async def slow(x: Any) -> Any:
            await asyncio.sleep(10)

        r = Lambda(slow).with_fallbacks([Lambda(fallback)], exceptions_to_handle=(BaseException,))
        cancel_while_running(r.ainvoke(1), 0.02)
        assert fallback.total == 0


def shape(results: list[Any]) -> list[Any]:
    return [type(r) if isinstance(r, BaseException) else r for r in results]


class TestBatch:
    @pytest.mark.parametrize("cls", [Flaky, AsyncFlaky])
    def test_each_input_as_in_invoke(self, cls: type[Flaky]) -> None:
        class OddFails(cls):  # type: ignore[valid-type,misc]
            def _step(self, x: Any) -> tuple[bool, Any]:
                self.failures = None if x % 2 else 0
                return super()._step(x)

        class ThreeFails(cls):  # type: ignore[valid-type,misc]
            def _step(self, x: Any) -> tuple[bool, Any]:
                self.failures = None if x == 3 else 0
                return super()._step(x)

        r = Lambda(OddFails(0)).with_fallbacks([Lambda(ThreeFails(0, exc=KeyError, result=str))])
        inputs = [0, 1, 2, 3, 4, 5]
        if cls is Flaky:
            results = r.batch(inputs, return_exceptions=True)
        else:
            results = asyncio.run(r.abatch(inputs, return_exceptions=True))
        # Input 3: the first error (ValueError), as invoke raises.
        assert shape(results) == [0, "1", 2, ValueError, 4, "5"]


# Differential: the same scenario on langchain_core and on fastlcel.
def _scenarios(cls: type[Flaky]) -> dict[str, tuple[Any, list[Any], dict[str, Any]]]:
    return {
        "primary ok": (cls(0), [cls(0, result=str)], {}),
        "second ok": (cls(None), [cls(None, exc=KeyError), cls(0, result=str)], {}),
        "all fail": (cls(None), [cls(None, exc=KeyError), cls(None, exc=TypeError)], {}),
        "unhandled": (
            cls(None, exc=KeyError),
            [cls(0)],
            {"exceptions_to_handle": (ValueError,)},
        ),
        "handled by base class": (
            cls(None, exc=KeyError),
            [cls(0, result=str)],
            {"exceptions_to_handle": (LookupError,)},
        ),
        "unhandled in fallback": (
            cls(None),
            [cls(None, exc=KeyError), cls(0)],
            {"exceptions_to_handle": (ValueError,)},
        ),
    }


SCENARIO_NAMES = list(_scenarios(Flaky))


@pytest.mark.parametrize("name", SCENARIO_NAMES)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "ainvoke-async-steps"])
def test_same_results_as_langchain_core(name: str, mode: str) -> None:
    results = []
    for make in (RunnableLambda, Lambda):
        cls = AsyncFlaky if mode == "ainvoke-async-steps" else Flaky
        primary, fallbacks, kwargs = _scenarios(cls)[name]
        runnable = make(primary).with_fallbacks([make(f) for f in fallbacks], **kwargs)
        if mode == "invoke":
            result = outcome(lambda r=runnable: r.invoke(5))
        else:
            result = asyncio.run(aoutcome(runnable.ainvoke(5)))
        results.append((result, [primary.total] + [f.total for f in fallbacks]))
    assert results[0] == results[1]


def test_exception_key_same_results_as_langchain_core() -> None:
    def fallback(d: dict[str, Any]) -> str:
        return f"{d['q']}: {d['error']!r}"

    results = []
    for make in (RunnableLambda, Lambda):
        runnable = make(failing()).with_fallbacks([make(fallback)], exception_key="error")
        results.append(runnable.invoke({"q": "x"}))
    assert results[0] == results[1] == "x: ValueError(\"{'q': 'x'} failed on call 1\")"


def test_exception_key_langchain_core_mutates_the_input() -> None:
    payloads = []
    for make in (RunnableLambda, Lambda):
        payload = {"q": "x"}
        make(failing()).with_fallbacks([make(lambda d: 1)], exception_key="error").invoke(payload)
        payloads.append(payload)
    lc_payload, our_payload = payloads
    assert "error" in lc_payload  # documented difference
    assert our_payload == {"q": "x"}


@pytest.mark.parametrize("cls", [Flaky, AsyncFlaky])
def test_batch_same_results_as_langchain_core_when_fallbacks_recover(cls: type[Flaky]) -> None:
    inputs = [1, 2, 3]
    results = []
    for make in (RunnableLambda, Lambda):
        runnable = make(cls(None)).with_fallbacks([make(cls(None, exc=KeyError)), make(cls(0))])
        if cls is Flaky:
            results.append(runnable.batch(inputs))
        else:
            results.append(asyncio.run(runnable.abatch(inputs)))
    assert results[0] == results[1] == inputs


class TestComposition:
    def test_inside_parallel(self) -> None:
        p = Parallel(a=Lambda(failing()).with_fallbacks([Lambda(fixed("fb"))]), b=abs)
        assert p.invoke(-1) == {"a": ("fb", -1), "b": 1}
        assert asyncio.run(p.ainvoke(-2)) == {"a": ("fb", -2), "b": 2}

    def test_retry_then_fallback(self) -> None:
        primary = failing()
        r = (
            Lambda(primary)
            .with_retry(wait_exponential_jitter=False, stop_after_attempt=2)
            .with_fallbacks([Lambda(fixed("fb"))])
        )
        assert r.invoke(1) == ("fb", 1)
        assert primary.total == 2


class _Model(RunnableLambda):
    """A langchain_core runnable with a method that returns a runnable, like a chat model's
    ``bind_tools``."""

    def with_tag(self, tag: str) -> Runnable[Any, Any]:
        return self.with_config(tags=[tag])


def test_other_attributes_are_the_runnables_and_apply_to_every_fallback(lcel) -> None:
    def primary(x: int) -> int:
        raise ValueError(x)

    def backup(x: int) -> int:
        return x + 1

    runnable = lcel.RunnableWithFallbacks(runnable=_Model(primary), fallbacks=[_Model(backup)])
    assert runnable.func is primary  # the runnable's own attribute
    tagged = runnable.with_tag("t")  # a method returning a runnable: on every fallback too
    assert isinstance(tagged, lcel.RunnableWithFallbacks)
    assert tagged.runnable.config["tags"] == ["t"]
    assert [f.config["tags"] for f in tagged.fallbacks] == [["t"]]
    assert tagged.invoke(1) == 2

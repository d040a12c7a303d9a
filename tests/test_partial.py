"""Parallel(on_error="collect") partial results and merge strategies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fakes import AsyncFlaky, Flaky
from fastlcel import Lambda, Parallel


def retriever(name: str) -> Any:
    def retrieve(q: str) -> list[str]:
        return [f"{name}:{q}"]

    retrieve.__name__ = name
    return retrieve


class TestCollect:
    @pytest.mark.parametrize("cls", [Flaky, AsyncFlaky])
    def test_rag_fan_out_survives_a_dead_retriever(self, cls: type[Flaky]) -> None:
        dead = cls(None, exc=ConnectionError)
        p = Parallel(
            web=retriever("web"), docs=Lambda(dead), wiki=retriever("wiki"), on_error="collect"
        )
        results = [asyncio.run(p.ainvoke("q"))]
        if cls is Flaky:
            results.append(p.invoke("q"))
        for result in results:
            assert list(result) == ["web", "docs", "wiki"]
            assert result["web"] == ["web:q"] and result["wiki"] == ["wiki:q"]
            assert result["docs"] in dead.raised  # the exception object itself

    def test_every_step_runs(self) -> None:
        slow = Flaky(0, sleep=0.1)
        p = Parallel(bad=Flaky(None), slow=slow, on_error="collect")
        result = p.invoke(1)
        assert result["slow"] == 1 and slow.total == 1

    def test_raise_is_the_default(self) -> None:
        with pytest.raises(ValueError):
            Parallel(bad=Flaky(None), ok=abs).invoke(1)

    def test_batch(self) -> None:
        p = Parallel(bad=Flaky(None), ok=abs, on_error="collect")
        for results in (p.batch([-1, -2]), asyncio.run(p.abatch([-1, -2]))):
            assert [r["ok"] for r in results] == [1, 2]
            assert all(isinstance(r["bad"], ValueError) for r in results)

    def test_abort_is_not_collected(self) -> None:
        class Abort(BaseException):
            pass

        with pytest.raises(Abort):
            Parallel(bad=Flaky(None, exc=Abort), ok=abs, on_error="collect").invoke(1)

    def test_nested(self) -> None:
        inner = Parallel(bad=Flaky(None), ok=abs, on_error="collect")
        result = Parallel(inner=inner, top=abs).invoke(-3)
        assert result["top"] == 3 and result["inner"]["ok"] == 3
        assert isinstance(result["inner"]["bad"], ValueError)

    def test_repr(self) -> None:
        p = Parallel(a=abs, on_error="collect", merge="list")
        assert repr(p) == (
            "RunnableParallel({\n  a: RunnableLambda(abs)\n}, on_error='collect', merge='list')"
        )


class TestMerge:
    def test_list_in_key_order(self) -> None:
        p = Parallel(b=lambda x: x + 1, a=lambda x: x + 2, merge="list")
        assert p.invoke(1) == [2, 3]
        assert asyncio.run(p.ainvoke(1)) == [2, 3]
        assert p.batch([1, 2]) == [[2, 3], [3, 4]]

    def test_callable_takes_the_dict(self) -> None:
        p = Parallel(a=lambda x: x + 1, b=lambda x: x * 10, merge=lambda d: sorted(d.items()))
        assert p.invoke(1) == [("a", 2), ("b", 10)]
        assert asyncio.run(p.ainvoke(1)) == [("a", 2), ("b", 10)]

    def test_collect_and_merge(self) -> None:
        def best(results: dict[str, Any]) -> list[str]:
            return [d for docs in results.values() if isinstance(docs, list) for d in docs]

        p = Parallel(
            a=retriever("a"),
            dead=Flaky(None),
            b=retriever("b"),
            on_error="collect",
            merge=best,
        )
        assert p.invoke("q") == ["a:q", "b:q"]
        assert asyncio.run(p.ainvoke("q")) == ["a:q", "b:q"]

    def test_a_failing_merge_raises(self) -> None:
        def merge(d: dict[str, Any]) -> Any:
            raise KeyError("merge failed")

        p = Parallel(a=abs, merge=merge)
        with pytest.raises(KeyError):
            p.invoke(1)
        with pytest.raises(KeyError):
            asyncio.run(asyncio.wait_for(p.ainvoke(1), 5))

    def test_failing_merge_of_a_sync_step_awaited(self) -> None:
        def slowish(x: Any) -> Any:
            time.sleep(0.01)
            return x

        def merge(d: dict[str, Any]) -> Any:
            raise KeyError("merge failed")

        with pytest.raises(KeyError):
            asyncio.run(asyncio.wait_for(Parallel(a=slowish, merge=merge).ainvoke(1), 5))


class TestReservedNames:
    def test_steps_named_like_options_go_in_the_mapping(self) -> None:
        p = Parallel({"merge": lambda x: x + 1, "on_error": lambda x: x + 2}, other=abs)
        assert p.invoke(-1) == {"merge": 0, "on_error": 1, "other": 1}

    def test_a_step_passed_as_on_error_is_an_error_that_says_so(self) -> None:
        with pytest.raises(ValueError, match=r"pass it in the mapping"):
            Parallel(on_error=lambda x: x)  # type: ignore[arg-type]

    def test_bad_merge(self) -> None:
        with pytest.raises(ValueError, match="'dict', 'list' or a function"):
            Parallel(a=abs, merge="tuple")  # type: ignore[arg-type]

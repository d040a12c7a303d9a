"""with_cache: memoization, LRU bound, ttl, single-flight across threads and event loops."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from typing import Any

import pytest
from fakes import AsyncFlaky, Flaky
from fastlcel import Cached, Lambda, Parallel


def counted(result: Any = None, sleep: float = 0.0) -> Flaky:
    return Flaky(0, result=(lambda x: x) if result is None else result, sleep=sleep)


class TestMemo:
    def test_hit_skips_the_step(self) -> None:
        step = counted(lambda x: [x])
        r = Lambda(step).with_cache()
        first = r.invoke(1)
        assert r.invoke(1) is first  # the same object, not a copy
        assert r.invoke(2) == [2]
        assert step.total == 2
        assert r.cache_info() == {"hits": 1, "misses": 2, "size": 2, "maxsize": 128}

    def test_async(self) -> None:
        step = AsyncFlaky(0, result=lambda x: x * 2)
        r = Lambda(step).with_cache()

        async def main() -> list[Any]:
            return [await r.ainvoke(1), await r.ainvoke(1), await r.ainvoke(2)]

        assert asyncio.run(main()) == [2, 2, 4]
        assert step.total == 2

    def test_sync_and_async_share_the_cache(self) -> None:
        step = counted()
        r = Lambda(step).with_cache()
        assert r.invoke(5) == 5
        assert asyncio.run(r.ainvoke(5)) == 5
        assert r.batch([5, 5]) == [5, 5]
        assert asyncio.run(r.abatch([5])) == [5]
        assert step.total == 1

    def test_key_function_for_unhashable_inputs(self) -> None:
        step = counted(lambda d: d["q"].upper())
        r = Lambda(step).with_cache(key=lambda d: d["q"])
        assert r.invoke({"q": "a", "n": 1}) == "A"
        assert r.invoke({"q": "a", "n": 2}) == "A"
        assert step.total == 1

    def test_unhashable_input_says_what_to_do(self) -> None:
        r = Lambda(abs).with_cache()
        with pytest.raises(TypeError, match=r"not hashable; pass with_cache\(key=\.\.\.\)"):
            r.invoke({"q": 1})

    def test_lru_bound(self) -> None:
        step = counted()
        r = Lambda(step).with_cache(maxsize=2)
        r.invoke(1)
        r.invoke(2)
        r.invoke(1)  # 1 is now the most recently used
        r.invoke(3)  # evicts 2
        r.invoke(1)
        assert step.total == 3
        r.invoke(2)
        assert step.total == 4
        assert r.cache_info()["size"] == 2

    def test_unbounded(self) -> None:
        r = Lambda(abs).with_cache(maxsize=None)
        r.batch(list(range(300)))
        assert r.cache_info()["size"] == 300

    def test_ttl(self) -> None:
        step = counted()
        r = Lambda(step).with_cache(ttl=0.05)
        r.invoke(1)
        r.invoke(1)
        assert step.total == 1
        time.sleep(0.08)
        r.invoke(1)
        assert step.total == 2

    def test_errors_are_not_cached(self) -> None:
        step = Flaky(1)
        r = Lambda(step).with_cache()
        with pytest.raises(ValueError):
            r.invoke(1)
        assert r.invoke(1) == 1
        assert r.invoke(1) == 1
        assert step.total == 2

    def test_cache_clear(self) -> None:
        step = counted()
        r = Lambda(step).with_cache()
        r.invoke(1)
        r.cache_clear()
        r.invoke(1)
        assert step.total == 2

    def test_type_and_repr(self) -> None:
        r = Lambda(abs).with_cache(maxsize=10, ttl=1.5)
        assert isinstance(r, Cached)
        assert repr(r) == "Cached(bound=RunnableLambda(abs), maxsize=10, ttl=1.5)"

    def test_arguments(self) -> None:
        with pytest.raises(ValueError, match="maxsize"):
            Lambda(abs).with_cache(maxsize=0)
        with pytest.raises(ValueError, match="ttl"):
            Lambda(abs).with_cache(ttl=-1)
        with pytest.raises(TypeError, match="key must be a function"):
            Lambda(abs).with_cache(key="q")  # type: ignore[arg-type]


class TestSingleFlight:
    def test_50_concurrent_identical_sync_calls_run_once(self) -> None:
        step = counted(sleep=0.2)
        r = Lambda(step).with_cache()
        assert r.batch([7] * 50) == [7] * 50
        assert step.total == 1

    def test_50_threads(self) -> None:
        step = counted(sleep=0.2)
        r = Lambda(step).with_cache()
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(r.invoke(3))) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [3] * 50
        assert step.total == 1

    def test_threads_with_keys_whose_eq_lets_other_threads_run(self) -> None:
        # A key's __eq__ that releases the GIL (I/O, logging) lets threads interleave inside one
        # store operation: an eviction may find its key gone meanwhile, and no call may be left
        # waiting for a computation that no one runs.
        class Key:
            def __init__(self, v: int) -> None:
                self.v = v

            def __hash__(self) -> int:
                return self.v % 3  # collisions: __eq__ runs on lookups and evictions

            def __eq__(self, other: object) -> bool:
                time.sleep(0)
                return isinstance(other, Key) and self.v == other.v

        r = Lambda(lambda k: k.v).with_cache(maxsize=4)
        errors: list[BaseException] = []

        def work(seed: int) -> None:
            try:
                for i in range(200):
                    v = (i * 7 + seed) % 10
                    assert r.invoke(Key(v)) == v
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a call was left waiting"
        assert errors == []
        assert r.cache_info()["size"] == 4

    def test_50_concurrent_identical_async_calls_run_once(self) -> None:
        step = AsyncFlaky(0, sleep=0.1)
        r = Lambda(step).with_cache()

        async def main() -> list[Any]:
            return await asyncio.gather(*(r.ainvoke(9) for _ in range(50)))

        assert asyncio.run(main()) == [9] * 50
        assert step.total == 1

    def test_sync_step_awaited_concurrently_runs_once(self) -> None:
        step = counted(sleep=0.1)
        r = Lambda(step).with_cache()
        assert asyncio.run(r.abatch([4] * 50)) == [4] * 50
        assert step.total == 1

    def test_threads_and_event_loop_coalesce(self) -> None:
        step = counted(sleep=0.2)
        r = Lambda(step).with_cache()
        results: list[Any] = []
        thread = threading.Thread(target=lambda: results.extend(r.batch([1] * 10)))
        thread.start()
        time.sleep(0.05)
        results.extend(asyncio.run(r.abatch([1] * 10)))
        thread.join()
        assert results == [1] * 20
        assert step.total == 1

    def test_waiters_get_the_leaders_error(self) -> None:
        step = Flaky(None, sleep=0.1)
        r = Lambda(step).with_cache()
        results = r.batch([1] * 10, return_exceptions=True)
        assert step.total == 1
        assert all(res is step.raised[0] for res in results)

    def test_async_waiters_get_the_leaders_error(self) -> None:
        step = AsyncFlaky(None, sleep=0.05)
        r = Lambda(step).with_cache()
        results = asyncio.run(r.abatch([1] * 10, return_exceptions=True))
        assert step.total == 1
        assert all(res is step.raised[0] for res in results)

    def test_a_cancelled_leader_hands_over(self) -> None:
        starts: list[Any] = []

        async def step(x: Any) -> Any:
            starts.append(x)
            await asyncio.sleep(0.1)
            return x

        r = Lambda(step).with_cache()

        async def main() -> Any:
            leader = asyncio.ensure_future(r.ainvoke(1))
            await asyncio.sleep(0.01)
            waiter = asyncio.ensure_future(r.ainvoke(1))
            await asyncio.sleep(0.01)
            leader.cancel()
            return await waiter

        assert asyncio.run(main()) == 1
        assert starts == [1, 1]  # the waiter computed it after the leader was cancelled


class TestComposition:
    def test_shared_by_parallel_branches(self) -> None:
        step = counted(sleep=0.05)
        embed = Lambda(step).with_cache()
        p = Parallel(a=embed, b=embed, c={"d": embed})
        assert p.invoke(2) == {"a": 2, "b": 2, "c": {"d": 2}}
        assert asyncio.run(p.ainvoke(2)) == {"a": 2, "b": 2, "c": {"d": 2}}
        assert step.total == 1

    def test_cache_over_retry(self) -> None:
        step = Flaky(1)
        r = Lambda(step).with_retry(wait_exponential_jitter=False).with_cache()
        assert r.invoke(1) == 1
        assert r.invoke(1) == 1
        assert step.total == 2


def test_the_collector_frees_a_cycle_through_the_cache() -> None:
    class Holder:
        r: Any = None

    def make_cycle() -> weakref.ref[Holder]:
        holder = Holder()
        holder.r = Lambda(lambda x: holder).with_cache()
        holder.r.invoke(1)  # the cache holds holder, holder holds the runnable
        return weakref.ref(holder)

    ref = make_cycle()
    gc.collect()
    assert ref() is None

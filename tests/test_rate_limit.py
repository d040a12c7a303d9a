"""RateLimiter and ConcurrencyLimit: shared across runnables, threads and event loops."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fakes import InFlight, Ticker
from fastlcel import ConcurrencyLimit, Lambda, Parallel, RateLimiter


class Stamps:
    """Records when each call started."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, x: Any) -> Any:
        with self._lock:
            self.times.append(time.perf_counter())
        return x

    async def acall(self, x: Any) -> Any:
        return self(x)

    def span(self) -> float:
        return max(self.times) - min(self.times)


class TestRateLimiter:
    @pytest.mark.slow
    def test_20_per_second_over_100_calls_takes_5_seconds(self) -> None:
        stamps = Stamps()
        started = time.perf_counter()
        results = Lambda(stamps).batch(list(range(100)), {"rate_limiter": RateLimiter(20)})
        elapsed = time.perf_counter() - started
        assert results == list(range(100))
        assert 4.8 <= elapsed < 6.5  # 99 intervals of 50 ms
        assert 4.8 <= stamps.span() < 6.5

    def test_100_per_second_over_30_calls(self) -> None:
        stamps = Stamps()
        r = Lambda(stamps).with_rate_limit(RateLimiter(100))
        started = time.perf_counter()
        assert r.batch(list(range(30))) == list(range(30))
        assert 0.28 <= time.perf_counter() - started < 1.0

    def test_burst_starts_at_once_then_paces(self) -> None:
        stamps = Stamps()
        r = Lambda(stamps).with_rate_limit(RateLimiter(20, burst=5))
        for i in range(7):
            r.invoke(i)
        t0 = stamps.times[0]
        assert stamps.times[4] - t0 < 0.03
        assert 0.04 <= stamps.times[5] - t0 < 0.15
        assert 0.09 <= stamps.times[6] - t0 < 0.2

    def test_shared_by_runnables_and_threads(self) -> None:
        limiter = RateLimiter(100)
        stamps = Stamps()
        a = Lambda(stamps).with_rate_limit(limiter)
        b = Parallel(x=stamps).with_rate_limit(limiter)
        threads = [
            threading.Thread(target=lambda r=r: [r.invoke(i) for i in range(10)]) for r in (a, b, a)
        ]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(stamps.times) == 30
        assert 0.28 <= time.perf_counter() - started < 1.0

    def test_asyncio_does_not_block_the_loop(self) -> None:
        stamps = Stamps()
        r = Lambda(stamps.acall).with_rate_limit(RateLimiter(50))

        async def main() -> tuple[list[Any], int]:
            async with Ticker(0.01) as ticker:
                results = await r.abatch(list(range(15)))
            return results, ticker.ticks

        started = time.perf_counter()
        results, ticks = asyncio.run(main())
        assert results == list(range(15))
        assert 0.27 <= time.perf_counter() - started < 1.0
        assert ticks >= 15

    def test_shared_by_threads_and_event_loops(self) -> None:
        limiter = RateLimiter(100)
        stamps = Stamps()
        sync = Lambda(stamps).with_rate_limit(limiter)
        async_ = Lambda(stamps.acall).with_rate_limit(limiter)
        thread = threading.Thread(target=lambda: sync.batch(list(range(15))))
        started = time.perf_counter()
        thread.start()
        asyncio.run(async_.abatch(list(range(15))))
        thread.join()
        assert len(stamps.times) == 30
        assert 0.28 <= time.perf_counter() - started < 1.0

    def test_config_key_applies_to_each_batch_input_once(self) -> None:
        stamps = Stamps()
        p = Parallel(a=stamps, b=stamps)
        started = time.perf_counter()
        p.batch([1, 2, 3, 4, 5], {"rate_limiter": RateLimiter(50)})
        assert 0.07 <= time.perf_counter() - started < 0.5  # 4 intervals, not 9
        assert len(stamps.times) == 10

    def test_sync_step_awaited_with_config_key(self) -> None:
        stamps = Stamps()
        started = time.perf_counter()
        asyncio.run(Lambda(stamps).abatch(list(range(6)), {"rate_limiter": RateLimiter(50)}))
        assert 0.09 <= time.perf_counter() - started < 0.6

    def test_acquire_directly(self) -> None:
        limiter = RateLimiter(50)
        started = time.perf_counter()
        for _ in range(4):
            limiter.acquire()
        assert 0.055 <= time.perf_counter() - started < 0.3

        async def main() -> None:
            for _ in range(4):
                await limiter.aacquire()

        started = time.perf_counter()
        asyncio.run(main())
        assert 0.055 <= time.perf_counter() - started < 0.3

    def test_arguments(self) -> None:
        with pytest.raises(ValueError, match="requests_per_second"):
            RateLimiter(0)
        with pytest.raises(ValueError, match="burst"):
            RateLimiter(1, burst=0)
        with pytest.raises(TypeError, match="with_concurrency_limit"):
            Lambda(abs).with_rate_limit(ConcurrencyLimit(2))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"config\['rate_limiter'\]"):
            Lambda(abs).invoke(1, {"rate_limiter": 5})
        assert repr(RateLimiter(2.5, burst=3)) == "RateLimiter(requests_per_second=2.5, burst=3)"


class TestConcurrencyLimit:
    def test_nested_fan_out_stays_under_the_cap(self) -> None:
        limit = ConcurrencyLimit(3)
        calls = InFlight(0.05)
        leaf = Lambda(calls.sync).with_concurrency_limit(limit)
        inner = Parallel(a=leaf, b=leaf, c=leaf, d=leaf)
        outer = Parallel(x=inner, y=inner, z=inner)
        outer.batch([1, 2])
        assert calls.calls == 24
        assert calls.peak == 3
        assert limit.in_use == 0

    def test_nested_async_fan_out_stays_under_the_cap(self) -> None:
        limit = ConcurrencyLimit(3)
        calls = InFlight(0.02)
        leaf = Lambda(calls.async_).with_concurrency_limit(limit)
        outer = Parallel(x={"a": leaf, "b": leaf}, y={"a": leaf, "b": leaf})
        asyncio.run(outer.abatch([1, 2, 3]))
        assert calls.calls == 12
        assert calls.peak == 3
        assert limit.in_use == 0

    def test_shared_by_threads_and_an_event_loop(self) -> None:
        limit = ConcurrencyLimit(2)
        calls = InFlight(0.02)
        sync = Lambda(calls.sync).with_concurrency_limit(limit)
        async_ = Lambda(calls.async_).with_concurrency_limit(limit)
        thread = threading.Thread(target=lambda: sync.batch(list(range(8))))
        thread.start()
        asyncio.run(async_.abatch(list(range(8))))
        thread.join()
        assert calls.calls == 16
        assert calls.peak == 2
        assert limit.in_use == 0

    def test_config_key(self) -> None:
        calls = InFlight(0.02)
        Lambda(calls.sync).batch(list(range(10)), {"concurrency_limit": ConcurrencyLimit(2)})
        assert calls.peak == 2

    def test_a_cancelled_waiter_leaks_no_permit(self) -> None:
        limit = ConcurrencyLimit(1)
        calls = InFlight(0.1)
        r = Lambda(calls.async_).with_concurrency_limit(limit)

        async def main() -> None:
            holder = asyncio.ensure_future(r.ainvoke(1))
            waiters = [asyncio.ensure_future(r.ainvoke(i)) for i in range(3)]
            await asyncio.sleep(0.02)
            waiters[0].cancel()
            waiters[1].cancel()
            assert await holder == 1
            assert await waiters[2] == 2
            for w in waiters[:2]:
                with pytest.raises(asyncio.CancelledError):
                    await w

        asyncio.run(main())
        assert calls.calls == 2
        assert limit.in_use == 0

    def test_permit_released_on_error(self) -> None:
        limit = ConcurrencyLimit(1)

        def boom(x: Any) -> Any:
            raise ValueError(x)

        r = Lambda(boom).with_concurrency_limit(limit)
        for _ in range(3):
            with pytest.raises(ValueError):
                r.invoke(1)
            with pytest.raises(ValueError):
                asyncio.run(r.ainvoke(1))
        assert limit.in_use == 0

    def test_arguments(self) -> None:
        with pytest.raises(ValueError, match="positive int"):
            ConcurrencyLimit(0)
        with pytest.raises(TypeError, match="with_rate_limit"):
            Lambda(abs).with_concurrency_limit(RateLimiter(1))  # type: ignore[arg-type]
        assert repr(ConcurrencyLimit(4)) == "ConcurrencyLimit(4)"
        assert ConcurrencyLimit(4).limit == 4

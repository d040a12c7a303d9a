"""Stress: never hang, whatever the load. Run by ``.ci/run`` once (default Python), not by the
main suite: ``python -m pytest -m stress`` (about a minute on 2 cores).

Nested fan-outs of 2,000 and 10,000 blocking items (far past the pool's 512 threads), 12-level
recursive batches, a 10,000-key Parallel, a batch of 1,000,000 and an abatch of 100,000 with
bounded memory, the pool's hard limit; each under a timeout, with generous time bounds only
(the machine may be shared)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import Child, run_async
from fastlcel import Lambda, Parallel

pytestmark = pytest.mark.stress

STEP = 0.05


def sleeper(x: int) -> int:
    time.sleep(STEP)
    return x + 1


def nested(n: int) -> tuple[Any, list[int], list[dict]]:
    """A step that fans out inside itself (two blocking steps), its n inputs, the results."""
    inner = Parallel(a=sleeper, b=sleeper)
    items = list(range(n))
    return Lambda(lambda x: inner.invoke(x)), items, [{"a": x + 1, "b": x + 1} for x in items]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n", [2_000, 10_000])
def test_nested_fan_outs_of_blocking_items(n: int) -> None:
    outer, items, expected = nested(n)
    started = time.monotonic()
    assert outer.batch(items) == expected
    # 2 * n sleeps of 0.05 s on 512 threads: 0.4 s for 2,000 at best.
    assert time.monotonic() - started < n / 2_000 * 20


@pytest.mark.timeout(120)
def test_nested_fan_outs_awaited_and_as_a_parallel() -> None:
    outer, items, expected = nested(2_000)
    assert run_async(lambda: outer.abatch(items)) == expected
    wide = Parallel({f"k{i}": outer for i in items})
    assert wide.invoke(1) == {f"k{i}": {"a": 2, "b": 2} for i in items}
    pairs = Lambda(lambda x: sorted(Parallel(a=sleeper).batch_as_completed([x, x]))).batch(items)
    assert pairs == [[(0, {"a": x + 1}), (1, {"a": x + 1})] for x in items]


@pytest.mark.timeout(120)
def test_recursive_batches_twelve_levels_deep() -> None:
    def level(depth: int) -> int:
        if depth == 0:
            time.sleep(0.01)
            return 1
        return sum(Lambda(level).batch([depth - 1, depth - 1]))

    assert Lambda(level).invoke(12) == 4_096


@pytest.mark.timeout(120)
def test_a_ten_thousand_key_parallel_of_blocking_steps() -> None:
    wide = Parallel({f"k{i}": sleeper for i in range(10_000)})
    started = time.monotonic()
    assert wide.invoke(1) == {f"k{i}": 2 for i in range(10_000)}
    assert time.monotonic() - started < 60


@pytest.mark.timeout(120)
def test_a_batch_of_a_million() -> None:
    items = list(range(1_000_000))
    assert Lambda(lambda x: x + 1).batch(items) == [x + 1 for x in items]


@pytest.mark.timeout(120)
def test_timeouts_nested_past_the_thread_limit() -> None:
    """Each caller waits with a deadline, so its step gets a thread of its own beyond the
    pool's 512: 2,000 items under three nested timeouts finish, none fires early."""
    step = Lambda(sleeper)
    for _ in range(3):
        step = Lambda(lambda x, inner=step: inner.invoke(x)).with_timeout(60)
    items = list(range(2_000))
    assert step.batch(items) == [x + 1 for x in items]


@pytest.mark.timeout(120)
def test_an_async_chain_with_sync_parts_called_from_blocking_steps() -> None:
    async def aleaf(x: int) -> int:
        await asyncio.sleep(STEP)
        return x

    chain = Parallel(p=Lambda(aleaf) | sleeper, q=Lambda(aleaf) | Parallel(r=sleeper, s=sleeper))
    items = list(range(2_000))
    expected = [{"p": x + 1, "q": {"r": x + 1, "s": x + 1}} for x in items]
    assert Lambda(lambda x: chain.invoke(x)).batch(items) == expected


@pytest.mark.timeout(120)
def test_an_abatch_of_a_hundred_thousand_in_bounded_memory(tmp_path) -> None:
    """Run three times in a fresh process: the peak stays bounded and nothing accumulates."""
    child = Child(
        """
        import asyncio, gc, resource
        from fastlcel import Lambda

        def rss_mib():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 / 2**20

        async def step(x):
            await asyncio.sleep(0)
            return x

        after = []
        for runnable in (Lambda(step), Lambda(lambda x: x)):
            for _ in range(3):
                result = asyncio.run(runnable.abatch(range(100_000)))
                assert result == list(range(100_000))
                del result
                gc.collect()
                after.append(rss_mib())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(" ".join(f"{x:.0f}" for x in after), f"{peak:.0f}")
        """,
        tmp_path,
    )
    returncode, out, err, _ = child.finish(timeout=100)
    assert returncode == 0, err
    *after, peak = (float(x) for x in out.split())
    assert peak < 1024, f"peak RSS {peak} MiB"
    # The third run of each ends where the first did (no growth per run).
    assert after[2] - after[0] < 32 and after[5] - after[3] < 32, after


@pytest.mark.timeout(120)
def test_the_hard_limit_raises_a_clear_error(tmp_path) -> None:
    """Past the hard limit (lowered here), a caller waiting with a deadline gets an error
    naming the cause instead of waiting for a thread that cannot come."""
    child = Child(
        """
        import time, fastlcel
        from fastlcel import Lambda

        fastlcel._core._debug_set_hard_limit(520)
        step = Lambda(lambda x: time.sleep(0.5) or x)
        for _ in range(2):
            step = Lambda(lambda x, inner=step: inner.invoke(x)).with_timeout(60)
        try:
            step.batch(list(range(600)))
        except fastlcel.FastLcelError as exc:
            print(type(exc).__name__, exc)
        """,
        tmp_path,
    )
    returncode, out, err, _ = child.finish(timeout=100)
    assert returncode == 0, err
    assert out.startswith("FastLcelError fastlcel could not start a thread"), out
    assert "hard limit" in out

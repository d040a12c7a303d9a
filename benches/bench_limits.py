"""The state behind `RateLimiter` and `with_cache`, in isolation: what one acquire, one cache hit,
one miss and one eviction cost, uncontended and under 8 threads, side by side with the
hand-written Python floor (a GCRA under a `threading.Lock`; `functools.lru_cache`).

    python benches/bench_limits.py [--quick] [--json FILE]
    python benches/bench_limits.py --ab DIR_A DIR_B [--rounds 5] [--quick]

Every figure is ns per operation: the median of interleaved rounds, with the range (min-max).
The limiter makes no one wait (1e9 requests/s), so only its bookkeeping is timed, except in the
"queued" cases: 200 calls at once on a limiter of 1,000/s, timed in process CPU per call (what
waking the waiters costs; the wall time is the rate's 0.2 s).

The cases run in a child process that imports neither langchain_core nor langsmith (with either
imported, every call looks for tracing: ~3 µs per invoke, which would hide the state). `--ab`
runs them alternately in child processes with `PYTHONPATH=DIR_A` and `PYTHONPATH=DIR_B` (each a
directory holding a built `fastlcel` package: `python/fastlcel` with the build's `.so`) and
prints fastlcel's figures side by side, one median per process: how the notes at the top of
src/limit/rate.rs and src/runnable/cache.rs compare the hand-written state with governor and
moka.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

THREADS = 8


class PyGcra:
    """The hand-written Python floor: GCRA's one timestamp under a lock (what rate.rs does)."""

    def __init__(self, rps: float, burst: int) -> None:
        self.interval = 1.0 / rps
        self.tolerance = self.interval * (burst - 1)
        self.tat: float | None = None
        self.lock = threading.Lock()

    def acquire(self) -> None:
        now = time.monotonic()
        with self.lock:
            slot = now if self.tat is None else max(self.tat, now)
            self.tat = slot + self.interval
        delay = slot - self.tolerance - now
        if delay > 0:
            time.sleep(delay)


def per_op(loop: Callable[[int], None], n: int) -> float:
    started = time.perf_counter()
    loop(n)
    return (time.perf_counter() - started) / n


WAITERS, RATE = 200, 1000.0  # every call waits its turn: 0.2 s per sample


def cpu_per_op(loop: Callable[[int], None], n: int) -> float:
    """Process CPU time (all threads) per call of WAITERS calls queued on one limiter."""
    started = time.process_time()
    loop(WAITERS)
    return (time.process_time() - started) / WAITERS


def queued_threads(acquire: Callable[[], Any]) -> Callable[[int], None]:
    """n calls from 64 threads, each waiting for its slot."""
    pool = ThreadPoolExecutor(64)

    def loop(n: int) -> None:
        list(pool.map(lambda _: acquire(), range(n)))

    return loop


def queued_tasks(runnable: Any) -> Callable[[int], None]:
    """`abatch` of n items through a rate-limited async step: n tasks waiting on the loop."""

    def loop(n: int) -> None:
        asyncio.run(runnable.abatch(list(range(n))))

    return loop


def threaded(loop: Callable[[int], None], n: int) -> float:
    """Wall time per operation of THREADS threads doing n operations each."""
    barrier = threading.Barrier(THREADS + 1)

    def work() -> None:
        barrier.wait()
        loop(n)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return (time.perf_counter() - started) / (n * THREADS)


def acquire_loop(acquire: Callable[[], Any]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            acquire()

    return loop


def aacquire_loop(limiter: Any) -> Callable[[int], None]:
    def loop(n: int) -> None:
        async def run() -> None:
            aacquire = limiter.aacquire
            for _ in range(n):
                await aacquire()

        asyncio.run(run())

    return loop


def call_loop(
    func: Callable[[int], int], keys: Callable[[int], Iterable[int]]
) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for i in keys(n):
            func(i)

    return loop


def ainvoke_loop(runnable: Any) -> Callable[[int], None]:
    def loop(n: int) -> None:
        async def run() -> None:
            ainvoke = runnable.ainvoke
            for i in range(n):
                await ainvoke(i % 64)

        asyncio.run(run())

    return loop


def step(x: int) -> int:
    return x + 1


async def astep(x: int) -> int:
    return x + 1


class Fresh:
    """Keys never seen before by this contender (a miss each), however often it is sampled."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, n: int) -> range:
        start = self.next
        self.next += n
        return range(start, start + n)


def hot(n: int) -> Iterable[int]:
    """64 keys, all cached after warm-up: a hit each."""
    return itertools.islice(itertools.cycle(range(64)), n)


def cases() -> list[tuple[str, list[tuple[str, Callable[[int], float], Callable[[int], None]]]]]:
    """(case, [(contender, timer, loop)]): the first contender is fastlcel."""
    from fastlcel import Lambda, RateLimiter

    lim, plim = RateLimiter(1e9, burst=1_000_000), PyGcra(1e9, burst=1_000_000)
    bare = Lambda(step)
    limited = Lambda(step).with_rate_limit(RateLimiter(1e9, burst=1_000_000))
    hit = Lambda(step).with_cache(maxsize=128)
    hit8 = Lambda(step).with_cache(maxsize=128)
    hit_lru = functools.lru_cache(maxsize=128)(step)
    hit_dict: dict[int, int] = {}

    def dict_memo(x: int) -> int:
        try:
            return hit_dict[x]
        except KeyError:
            value = hit_dict[x] = step(x)
            return value

    for i in range(64):
        hit.invoke(i), hit8.invoke(i), hit_lru(i), dict_memo(i)
    miss = Lambda(step).with_cache(maxsize=None)
    miss_lru = functools.lru_cache(maxsize=None)(step)
    evict = Lambda(step).with_cache(maxsize=128)
    evict_lru = functools.lru_cache(maxsize=128)(step)
    return [
        (
            "acquire(), 1 thread",
            [
                ("fastlcel", per_op, acquire_loop(lim.acquire)),
                ("python GCRA", per_op, acquire_loop(plim.acquire)),
            ],
        ),
        (
            f"acquire(), {THREADS} threads",
            [
                ("fastlcel", threaded, acquire_loop(lim.acquire)),
                ("python GCRA", threaded, acquire_loop(plim.acquire)),
            ],
        ),
        ("await aacquire()", [("fastlcel", per_op, aacquire_loop(lim))]),
        (
            f"CPU per call, {WAITERS} queued on 64 threads",
            [
                ("fastlcel", cpu_per_op, queued_threads(RateLimiter(RATE).acquire)),
                ("python GCRA", cpu_per_op, queued_threads(PyGcra(RATE, 1).acquire)),
            ],
        ),
        (
            f"CPU per call, {WAITERS} queued tasks",
            [
                (
                    "fastlcel",
                    cpu_per_op,
                    queued_tasks(Lambda(astep).with_rate_limit(RateLimiter(RATE))),
                )
            ],
        ),
        (
            "with_rate_limit invoke (bare Lambda: floor)",
            [
                ("fastlcel", per_op, call_loop(limited.invoke, range)),
                ("bare Lambda", per_op, call_loop(bare.invoke, range)),
            ],
        ),
        (
            "cache hit, invoke",
            [
                ("fastlcel", per_op, call_loop(hit.invoke, hot)),
                ("bare Lambda", per_op, call_loop(bare.invoke, hot)),
                ("lru_cache", per_op, call_loop(hit_lru, hot)),
                ("dict memo", per_op, call_loop(dict_memo, hot)),
            ],
        ),
        (
            f"cache hit, invoke, {THREADS} threads",
            [
                ("fastlcel", threaded, call_loop(hit8.invoke, hot)),
                ("lru_cache", threaded, call_loop(hit_lru, hot)),
            ],
        ),
        ("cache hit, ainvoke", [("fastlcel", per_op, ainvoke_loop(hit))]),
        (
            "cache miss + insert (unbounded)",
            [
                ("fastlcel", per_op, call_loop(miss.invoke, Fresh())),
                ("lru_cache", per_op, call_loop(miss_lru, Fresh())),
            ],
        ),
        (
            "cache miss + insert + evict (maxsize 128)",
            [
                ("fastlcel", per_op, call_loop(evict.invoke, Fresh())),
                ("lru_cache", per_op, call_loop(evict_lru, Fresh())),
            ],
        ),
    ]


def run(quick: bool) -> dict[str, dict[str, list[float]]]:
    """Each case's contenders, round-robin; ns per operation, one sample per round."""
    rounds, n, n_threaded = (3, 20_000, 5_000) if quick else (9, 100_000, 20_000)
    out: dict[str, dict[str, list[float]]] = {}
    for case, contenders in cases():
        samples: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        for _, timer, loop in contenders:
            timer(loop, 1_000)  # warm-up
        for r in range(rounds):
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for name, timer, loop in order:
                count = n_threaded if timer is threaded else n
                samples[name].append(timer(loop, count) * 1e9)
        out[case] = samples
    return out


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.0f} ({min(values):.0f}-{max(values):.0f})"


def child(quick: bool, pythonpath: str | None, out: Path) -> dict[str, dict[str, list[float]]]:
    """Runs the cases in a fresh process, which imports neither langchain_core nor langsmith
    (with either imported, every call looks for tracing: ~3 µs per invoke, hiding the state)."""
    cmd = [sys.executable, __file__, "--child", str(out)] + (["--quick"] if quick else [])
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    subprocess.run(cmd, env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--json", help="write the samples (ns/op) here")
    parser.add_argument("--ab", nargs=2, metavar="DIR", help="compare two builds (see above)")
    parser.add_argument("--rounds", type=int, default=5, help="processes per side with --ab")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.child).write_text(json.dumps(run(args.quick)))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_core import OthersLoad, busy_cores

    print(
        f"load {os.getloadavg()[0]:.2f}, other processes' cores before: "
        f"{busy_cores() or 0.0:.1f} of {os.cpu_count()}"
    )
    others = OthersLoad()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples.json"
        if not args.ab:
            results = child(args.quick, None, out)
            print(f"\n{'case':<44} {'contender':<12} {'ns/op median (range)':>26}")
            for case, samples in results.items():
                for i, (name, values) in enumerate(samples.items()):
                    print(f"{case if i == 0 else '':<44} {name:<12} {fmt(values):>26}")
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
        else:
            dirs = [str(Path(d).resolve()) for d in args.ab]
            # Per side and case: one figure per process, its median (processes differ more
            # than rounds do).
            figures: list[dict[str, list[float]]] = [{}, {}]
            for r in range(args.rounds):
                for side in (0, 1) if r % 2 == 0 else (1, 0):
                    for case, samples in child(args.quick, dirs[side], out).items():
                        fig = statistics.median(samples["fastlcel"])
                        figures[side].setdefault(case, []).append(fig)
            print(f"\nA = {dirs[0]}\nB = {dirs[1]}\n{args.rounds} processes each, alternating")
            print(f"\n{'case':<44} {'A ns/op median (range)':>26} {'B ns/op median (range)':>26}")
            for case, a in figures[0].items():
                print(f"{case:<44} {fmt(a):>26} {fmt(figures[1][case]):>26}")
            if args.json:
                Path(args.json).write_text(json.dumps(figures, indent=1))
    cores = others.cores() or 0.0
    print(f"\nother processes' cores during the run: {cores:.1f} of {os.cpu_count()}")
    if cores > 0.2:
        print("WARNING: the machine was busy; the figures are noisy")


if __name__ == "__main__":
    main()

"""fastlcel against langchain_core and plain-Python peers, side by side in one run.

    python benches/bench_core.py [--quick] [--json FILE] [--only TEXT]

Every contender of a case does the same work on the same input and must return the same result
(checked once, on its warm-up call). Each contender is warmed up, then sampled repeatedly; the
contenders of a case are sampled in turn (round-robin, rotating the order), so that a slow drift of
the machine hits them all alike. Fast operations are looped timeit-style until one sample lasts
``sample_seconds``; the table shows the median time of ONE operation (one fan-out, one batch). The
ratio is peer time / fastlcel time: "152x" means fastlcel is 152 times faster than that peer.
The garbage collector stays enabled (it is part of the real cost), but ``gc.collect()`` runs before
every sample so that no contender pays for another's garbage. See benches/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import langchain_core
from langchain_core.runnables import RunnableLambda, RunnableParallel

try:
    from fastlcel import Lambda, Parallel
except ImportError as exc:  # the extension is not built yet: time the peers only
    Lambda = Parallel = None  # type: ignore[assignment,misc]
    FASTLCEL_IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    FASTLCEL_IMPORT_ERROR = None


# --------------------------------------------------------------------------- timing machinery


@dataclass(frozen=True)
class Settings:
    sample_seconds: float  # a fast operation is looped until one sample lasts this long
    budget_seconds: float  # sampling time per contender, split into repeats
    min_repeats: int
    max_repeats: int


FULL = Settings(sample_seconds=0.05, budget_seconds=2.0, min_repeats=3, max_repeats=25)
QUICK = Settings(sample_seconds=0.01, budget_seconds=0.25, min_repeats=1, max_repeats=7)


@dataclass
class Contender:
    label: str
    op: Callable[[], Any]  # one operation; returns the result, or an awaitable of it
    is_async: bool = False
    ours: bool = False
    min_ratio: float | None = None  # target on a peer: peer time / our time >= min_ratio
    max_seconds: float | None = None  # target on ours: our median time <= max_seconds
    # filled in by the runner
    loops: int = 1
    repeats: int = 0
    samples: list[float] = field(default_factory=list)  # seconds per operation
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples and not self.error else None

    @property
    def spread(self) -> float | None:
        """Interquartile range relative to the median."""
        if self.median is None or len(self.samples) < 4:
            return None
        q1, _, q3 = statistics.quantiles(self.samples, n=4)
        return (q3 - q1) / self.median

    @property
    def target(self) -> str:
        if self.min_ratio is not None:
            return f">= {self.min_ratio:g}x"
        if self.max_seconds is not None:
            return f"<= {format_seconds(self.max_seconds)}"
        return ""


@dataclass
class Case:
    number: str  # the target's number in the issue, or "" for a case shown for information
    title: str
    expected: Any
    contenders: list[Contender]

    @property
    def ours(self) -> Contender | None:
        return next((c for c in self.contenders if c.ours), None)

    def ratio(self, peer: Contender) -> float | None:
        ours = self.ours
        if peer.ours or ours is None or ours.median is None or peer.median is None:
            return None
        return peer.median / ours.median

    def verdict(self, contender: Contender) -> str:
        if contender.min_ratio is None and contender.max_seconds is None:
            return ""
        ours = self.ours
        if ours is None:
            return "n/a"  # fastlcel not importable
        if ours.error or contender.error:
            return "FAIL"
        if contender.max_seconds is not None:
            return "PASS" if ours.median <= contender.max_seconds else "FAIL"
        return "PASS" if self.ratio(contender) >= contender.min_ratio else "FAIL"


async def _time_async(op: Callable[[], Any], loops: int) -> tuple[float, Any]:
    result = None
    start = time.perf_counter()
    for _ in range(loops):
        result = await op()
    return time.perf_counter() - start, result


class Runner:
    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop

    def timed(self, c: Contender, loops: int) -> tuple[float, Any]:
        """Seconds for ``loops`` operations (async ones awaited inside the loop), last result."""
        gc.collect()
        if c.is_async:
            return self.loop.run_until_complete(_time_async(c.op, loops))
        op = c.op
        result = None
        start = time.perf_counter()
        for _ in range(loops):
            result = op()
        return time.perf_counter() - start, result

    def warm_up(self, c: Contender, expected: Any) -> None:
        """Check the result, then choose loops (timeit's autorange) and repeats."""
        s = self.settings
        elapsed, result = self.timed(c, 1)
        if result != expected:
            raise AssertionError(f"wrong result: {_short(result)} != {_short(expected)}")
        if elapsed > 2 * s.budget_seconds:
            # Seconds-long (a slow peer in --quick): set-up costs are lost in the noise, so the
            # checked call is also the first sample.
            c.samples.append(elapsed)
            c.repeats = s.min_repeats - 1
            return
        if elapsed < s.sample_seconds:
            elapsed, _ = self.timed(c, 1)  # the first call may have paid for lazy set-up
        loops = 1
        # Only operations far below the sample length are looped, so that two contenders of
        # about the same speed are sampled alike (one operation per sample, same garbage).
        while elapsed < (s.sample_seconds if loops > 1 else s.sample_seconds / 5):
            # aim a little past the sample length; at least double, at most 100x per step
            per_op = max(elapsed / loops, 1e-9)
            loops = min(max(math.ceil(1.2 * s.sample_seconds / per_op), 2 * loops), 100 * loops)
            elapsed, _ = self.timed(c, loops)
        c.loops = loops
        c.repeats = max(s.min_repeats, min(s.max_repeats, round(s.budget_seconds / elapsed)))

    def run(self, case: Case) -> None:
        active = []
        for c in case.contenders:
            try:
                self.warm_up(c, case.expected)
                active.append(c)
            except Exception as exc:  # report it in the table, keep timing the others
                c.error = f"{type(exc).__name__}: {exc}"
        # Rounds: in each, the contenders take turns (the order rotates). A contender with fewer
        # repeats than there are rounds sits some out, spread evenly over the case.
        rounds = max((c.repeats for c in active), default=0)
        for r in range(rounds):
            shift = r % max(len(active), 1)
            for c in active[shift:] + active[:shift]:
                if c.error or (r * c.repeats) // rounds == ((r + 1) * c.repeats) // rounds:
                    continue
                try:
                    elapsed, _ = self.timed(c, c.loops)
                except Exception as exc:
                    c.error = f"{type(exc).__name__}: {exc}"
                else:
                    c.samples.append(elapsed / c.loops)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- formatting


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def render_table(cases: list[Case]) -> str:
    header = (
        f"{'case / contender':<50} {'median':>10} {'±IQR':>5} {'ratio':>7}  {'target':<10} result"
    )
    lines = [header, "-" * len(header)]
    for case in cases:
        tag = f"{case.number}." if case.number else "-"
        lines.append(f"{tag:<3}{case.title}")
        for c in case.contenders:
            spread = f"{c.spread:.0%}" if c.spread is not None else ""
            lines.append(
                f"     {c.label:<45} {format_seconds(c.median):>10} {spread:>5} "
                f"{format_ratio(case.ratio(c)):>7}  {c.target:<10} {case.verdict(c)}".rstrip()
            )
            if c.error:
                lines.append(f"       error: {c.error}")
    verdicts = [case.verdict(c) for case in cases for c in case.contenders]
    lines.append("-" * len(header))
    lines.append(
        f"targets: {verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL"
        + (f", {verdicts.count('n/a')} n/a (fastlcel not importable)" if "n/a" in verdicts else "")
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the cases


def ident(x: Any) -> Any:
    return x


def sleep_100ms(x: Any) -> Any:
    time.sleep(0.1)
    return x


def sleep_10ms(x: Any) -> Any:
    time.sleep(0.01)
    return x


async def aident(x: Any) -> Any:
    return x


async def asleep_100ms(x: Any) -> Any:
    await asyncio.sleep(0.1)
    return x


def threadpool_fanout(
    pool: ThreadPoolExecutor, steps: dict[str, Callable[[Any], Any]]
) -> Callable[[Any], dict[str, Any]]:
    """The hand-written peer: submit every step to a persistent pool, collect a dict."""

    def invoke(x: Any) -> dict[str, Any]:
        futures = {key: pool.submit(fn, x) for key, fn in steps.items()}
        return {key: future.result() for key, future in futures.items()}

    return invoke


def _bound(fn: Callable[[Any], Any], arg: Any) -> Callable[[], Any]:
    return lambda: fn(arg)


def ours(label: str, make_op: Callable[[], Callable[[], Any]], **kw: Any) -> list[Contender]:
    """Our contender, or none while the extension cannot be imported."""
    if FASTLCEL_IMPORT_ERROR is not None:
        return []
    return [Contender(f"fastlcel {label}", make_op(), ours=True, **kw)]


class Document:
    """A plain class instance as input (steps then return a non-builtin object, like a message)."""


def case_parallel_trivial(n: int, pool: ThreadPoolExecutor, x: Any = None) -> Case:
    steps = {f"k{i}": (lambda x: x) for i in range(n)}
    headline = n == 10 and x is None
    what = "dict input" if x is None else f"input a {type(x).__name__} instance"
    if x is None:
        x = {"question": "What is LCEL?"}  # the usual input of a RunnableParallel
    lc = RunnableParallel(steps)
    return Case(
        number="1" if headline else "",
        title=f"Parallel.invoke, {n} trivial sync steps (lambda x: x), {what}",
        expected={key: x for key in steps},
        contenders=[
            *ours("Parallel.invoke", lambda: _bound(Parallel(steps).invoke, x)),
            Contender(
                "langchain_core RunnableParallel.invoke",
                _bound(lc.invoke, x),
                min_ratio=150.0 if headline else None,
            ),
            Contender(
                "ThreadPoolExecutor(64) persistent, submit+dict",
                _bound(threadpool_fanout(pool, steps), x),
                min_ratio=10.0 if headline else None,
            ),
            Contender(
                "sequential dict comprehension (floor)",
                lambda: {key: fn(x) for key, fn in steps.items()},
            ),
        ],
    )


def case_parallel_sleep(pool: ThreadPoolExecutor) -> Case:
    steps = {f"k{i}": sleep_100ms for i in range(50)}
    x = 7
    lc = RunnableParallel(steps)
    return Case(
        number="2",
        title="Parallel.invoke, 50 steps of time.sleep(0.1), default config (ideal 100 ms)",
        expected={key: x for key in steps},
        contenders=[
            *ours("Parallel.invoke", lambda: _bound(Parallel(steps).invoke, x), max_seconds=0.11),
            Contender("langchain_core RunnableParallel.invoke", _bound(lc.invoke, x)),
            Contender(
                "ThreadPoolExecutor(64) persistent, submit+dict",
                _bound(threadpool_fanout(pool, steps), x),
            ),
        ],
    )


def case_abatch_async(afn: Callable[[Any], Any], n: int, number: str, what: str) -> Case:
    items = list(range(n))
    lc = RunnableLambda(afn)
    return Case(
        number=number,
        title=f"Lambda(async fn).abatch, {n:,} items, {what}",
        expected=items,
        contenders=[
            *ours("Lambda(afn).abatch", lambda: _bound(Lambda(afn).abatch, items), is_async=True),
            Contender(
                "langchain_core RunnableLambda(afn).abatch",
                _bound(lc.abatch, items),
                is_async=True,
            ),
            Contender(
                "asyncio.gather(*coroutines)",
                lambda: asyncio.gather(*[afn(x) for x in items]),
                is_async=True,
                min_ratio=1.0 if number else None,
            ),
        ],
    )


def case_abatch_sync() -> Case:
    items = list(range(1000))
    lc = RunnableLambda(sleep_10ms)
    return Case(
        number="4",
        title="Lambda(sync fn).abatch, 1,000 items of time.sleep(0.01) (ideal 10 ms)",
        expected=items,
        contenders=[
            *ours(
                "Lambda(fn).abatch", lambda: _bound(Lambda(sleep_10ms).abatch, items), is_async=True
            ),
            Contender(
                "langchain_core RunnableLambda(fn).abatch",
                _bound(lc.abatch, items),
                is_async=True,
                min_ratio=15.0,
            ),
            Contender(
                "asyncio.gather(*[asyncio.to_thread(fn, x)])",
                lambda: asyncio.gather(*[asyncio.to_thread(sleep_10ms, x) for x in items]),
                is_async=True,
            ),
        ],
    )


def case_batch_trivial(pool: ThreadPoolExecutor) -> Case:
    items = list(range(1000))
    lc = RunnableLambda(ident)
    return Case(
        number="5",
        title="Lambda(ident).batch, 1,000 trivial items",
        expected=items,
        contenders=[
            *ours("Lambda(fn).batch", lambda: _bound(Lambda(ident).batch, items)),
            Contender(
                "langchain_core RunnableLambda(fn).batch", _bound(lc.batch, items), min_ratio=50.0
            ),
            Contender(
                "ThreadPoolExecutor(64) persistent, list(map)",
                lambda: list(pool.map(ident, items)),
            ),
            Contender("list comprehension (floor)", lambda: [ident(x) for x in items]),
        ],
    )


async def asleep_10ms(x: Any) -> Any:
    await asyncio.sleep(0.01)
    return x


class LoopThread:
    """An event loop running in a thread of its own (for `run_coroutine_threadsafe`)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


def case_bridge_invoke(loop_thread: LoopThread) -> Case:
    return Case(
        number="6",
        title="Lambda(async fn).invoke from sync code (fastlcel's bridged event loop)",
        expected=0,
        contenders=[
            *ours("Lambda(afn).invoke", lambda: _bound(Lambda(aident).invoke, 0)),
            Contender("asyncio.run(afn(x))", lambda: asyncio.run(aident(0)), min_ratio=2.0),
            Contender(
                "run_coroutine_threadsafe on a loop thread",
                lambda: loop_thread.run(aident(0)),
            ),
        ],
    )


def case_bridge_batch() -> Case:
    items = list(range(1000))
    return Case(
        number="7",
        title="Lambda(async fn).batch from sync code, 1,000 x asyncio.sleep(0.01)",
        expected=items,
        contenders=[
            *ours("Lambda(afn).batch", lambda: _bound(Lambda(asleep_10ms).batch, items)),
            *(
                []
                if FASTLCEL_IMPORT_ERROR
                else [
                    Contender(
                        "fastlcel Lambda(afn).abatch, awaited",
                        _bound(Lambda(asleep_10ms).abatch, items),
                        is_async=True,
                        min_ratio=1 / 1.2,
                    )
                ]
            ),
            Contender(
                "asyncio.gather(*coroutines), awaited",
                lambda: asyncio.gather(*[asleep_10ms(x) for x in items]),
                is_async=True,
            ),
        ],
    )


def sleep_50ms(x: Any) -> Any:
    time.sleep(0.05)
    return x


def case_nested_fan_out() -> Case:
    """Blocking steps that fan out inside themselves, four times more than the pool's 512
    threads: each waiting step runs its own fan-out's steps when no thread is left."""
    items = list(range(2000))
    flat_items = list(range(4000))
    inner_lc = RunnableParallel(a=sleep_50ms, b=sleep_50ms)
    outer_lc = RunnableLambda(lambda x: inner_lc.invoke(x))

    def nested_ours() -> Callable[[], Any]:
        inner = Parallel(a=sleep_50ms, b=sleep_50ms)
        return _bound(Lambda(lambda x: inner.invoke(x)).batch, items)

    flat = [] if FASTLCEL_IMPORT_ERROR else [_bound(Lambda(sleep_50ms).batch, flat_items)]
    return Case(
        number="8",
        title="Lambda(step).batch, 2,000 steps each invoking Parallel(2 x time.sleep(0.05))",
        expected=[{"a": x, "b": x} for x in items],
        contenders=[
            *ours("nested batch", nested_ours),
            *(
                Contender(
                    "fastlcel flat batch of the same 4,000 sleeps",
                    # The same sleeps, shaped like the nested results for the result check.
                    lambda op=op: [{"a": x, "b": x} for x in op()[:2000]],
                    min_ratio=1 / 2.5,
                )
                for op in flat
            ),
            Contender("langchain_core RunnableLambda(step).batch", _bound(outer_lc.batch, items)),
        ],
    )


def build_cases(pool: ThreadPoolExecutor) -> list[Case]:
    return [
        *(case_parallel_trivial(n, pool) for n in (3, 10, 50)),
        case_parallel_trivial(10, pool, Document()),
        case_parallel_sleep(pool),
        case_abatch_async(
            asleep_100ms, 10_000, "3", "each await asyncio.sleep(0.1) (ideal 100 ms)"
        ),
        case_abatch_async(aident, 10_000, "", "trivial async fn"),
        case_abatch_sync(),
        case_batch_trivial(pool),
        case_bridge_invoke(LoopThread()),
        case_bridge_batch(),
        case_nested_fan_out(),
    ]


# --------------------------------------------------------------------------- run and report


def versions() -> dict[str, str]:
    try:
        ours_version = importlib.metadata.version("fastlcel")
    except importlib.metadata.PackageNotFoundError:
        ours_version = "unknown"
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "langchain_core": langchain_core.__version__,
        "fastlcel": ours_version if FASTLCEL_IMPORT_ERROR is None else "not importable",
    }


def fastlcel_build() -> dict[str, str] | None:
    """Which compiled core was timed (a rebuild between runs changes the hash)."""
    if FASTLCEL_IMPORT_ERROR is not None:
        return None
    import fastlcel._core as core

    path = Path(core.__file__)
    return {
        "path": str(path),
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(path.stat().st_mtime)),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def _all_busy_cpu_seconds() -> float | None:
    """CPU time used by every process since boot, idle and iowait excluded (Linux only)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class OthersLoad:
    """Cores kept busy by OTHER processes since creation: all CPU time minus this process's."""

    def __init__(self) -> None:
        self.start = (_all_busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter())

    def cores(self) -> float | None:
        busy, own, wall = _all_busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter()
        if busy is None or self.start[0] is None:
            return None
        return max(0.0, (busy - self.start[0] - (own - self.start[1])) / (wall - self.start[2]))


def busy_cores(interval: float = 0.5) -> float | None:
    """Cores kept busy by other processes over a short pause of this one."""
    probe = OthersLoad()
    time.sleep(interval)
    return probe.cores()


def machine() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "loadavg_1m_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "busy_cores_before": busy_cores(),
        "git_commit": commit,
    }


def _cores(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def to_json(cases: list[Case], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "cases": [
            {
                "number": case.number,
                "title": case.title,
                "contenders": [
                    {
                        "label": c.label,
                        "ours": c.ours,
                        "median_s": c.median,
                        "iqr_rel": c.spread,
                        "ratio_peer_over_ours": case.ratio(c),
                        "target": c.target or None,
                        "verdict": case.verdict(c) or None,
                        "loops": c.loops,
                        "repeats": c.repeats,
                        "samples_s": c.samples,
                        "error": c.error,
                    }
                    for c in case.contenders
                ],
            }
            for case in cases
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 30 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--only", metavar="TEXT", help="run the cases whose title contains TEXT")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    faulthandler.enable()  # a crash in native code still says where

    meta: dict[str, Any] = {
        "versions": versions(),
        "fastlcel_build": fastlcel_build(),
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "settings": vars(settings),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if FASTLCEL_IMPORT_ERROR:
        print(
            f"fastlcel is not importable ({FASTLCEL_IMPORT_ERROR}): timing the peers only",
            file=sys.stderr,
        )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pool = ThreadPoolExecutor(max_workers=64)
    wall, others = time.perf_counter(), OthersLoad()
    try:
        cases = build_cases(pool)
        if args.only:
            cases = [case for case in cases if args.only.lower() in case.title.lower()]
        runner = Runner(settings, loop)
        for case in cases:
            print(f"running: {case.title}", file=sys.stderr, flush=True)
            runner.run(case)
    finally:
        pool.shutdown()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    report(cases, meta, wall, others, args.json)
    return 0


def report(
    cases: list[Case], meta: dict[str, Any], wall: float, others: OthersLoad, json_path: str | None
) -> None:
    """Completes ``meta`` for a run that started at ``wall`` (perf_counter) and prints the header,
    a warning when other processes were busy, and the table; writes the JSON if asked."""
    m = meta["machine"]
    meta["wall_s"] = time.perf_counter() - wall
    m["busy_cores_during"] = others.cores()
    m["loadavg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    m["busy_cores_after"] = busy_cores()
    v = meta["versions"]
    print(
        f"fastlcel {v['fastlcel']} | langchain_core {v['langchain_core']} | {v['python']} | "
        f"nproc {m['nproc']} | load {m['loadavg_1m_start']:.2f} -> {m['loadavg_1m_end']:.2f}, "
        f"other processes' cores before/during/after {_cores(m['busy_cores_before'])}/"
        f"{_cores(m['busy_cores_during'])}/{_cores(m['busy_cores_after'])} | "
        f"{meta['mode']} run, {meta['wall_s']:.0f} s"
    )
    print("median time of one operation; ratio = peer / fastlcel (higher: fastlcel faster)")
    busy = [m[k] for k in ("busy_cores_before", "busy_cores_during", "busy_cores_after")]
    if max((b for b in busy if b is not None), default=0.0) > 0.2:
        print(
            f"WARNING: other processes kept up to {max(b for b in busy if b is not None):.1f} of"
            f" {m['nproc']} cores busy around or during this run; its numbers are noisy"
        )
    print(render_table(cases))
    if json_path:
        Path(json_path).write_text(json.dumps(to_json(cases, meta), indent=2) + "\n")
        print(f"wrote {json_path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

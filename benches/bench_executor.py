"""Steps on processes and clusters (``Lambda(func, executor=...)``): fastlcel against the
executor's own ``map`` (or ``ray.get`` of a list of tasks), the hand-written glue
``Lambda(lambda x: pool.submit(f, x).result())``, langchain_core and a plain loop, side by side.

    python benches/bench_executor.py [--quick] [--json FILE] [--only TEXT] [--no-ray]

The timing machinery and the table are bench_core.py's (see its docstring and benches/README.md):
every contender must return the same result, is warmed up, then sampled round-robin; the table
shows the median time of ONE batch and the ratio peer time / fastlcel time (0.95x: fastlcel 5%
slower). The pools are made once, outside the timing. Ray cases run when ``ray`` is importable
(a local cluster, ``ray.init(num_cpus=2)``). Under the table: the CPU time this process spends on
one batch of 1,000 trivial items (the per-item overhead, which other processes' load barely
moves, unlike wall times), and its peak OS threads during one such batch.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import functools
import gc
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from bench_core import (
    FASTLCEL_IMPORT_ERROR,
    FULL,
    QUICK,
    Case,
    Contender,
    OthersLoad,
    Runner,
    _bound,
    fastlcel_build,
    machine,
    ours,
    report,
    versions,
)
from fastlcel.compare._sampler import Sampler
from fastlcel.compare._workloads import calibrate_cpu_work, cpu_sync
from langchain_core.runnables import RunnableLambda

if FASTLCEL_IMPORT_ERROR is None:
    from fastlcel import Lambda, RayExecutor
else:  # time the peers only; bench_core reports why
    Lambda = RayExecutor = None  # type: ignore[assignment,misc]

CPU_ITEMS = 64
CPU_ITEM_SECONDS = 0.017
TRIVIAL_ITEMS = 1000


def inc(x: int) -> int:
    return x + 1


def glued(executor: Executor, fn: Callable[[Any], Any]) -> Any:
    """The hand-written way: a fastlcel pool thread blocks in ``.result()`` per call in flight."""
    return Lambda(lambda x: executor.submit(fn, x).result())


def glue(executor: Executor, fn: Callable[[Any], Any], items: list[int]) -> list[Contender]:
    if FASTLCEL_IMPORT_ERROR is not None:
        return []
    label = "glue: Lambda(lambda x: pool.submit(f, x).result())"
    return [Contender(label, _bound(glued(executor, fn).batch, items))]


def case_cpu(pool: ProcessPoolExecutor, processes: int) -> Case:
    work = calibrate_cpu_work(CPU_ITEM_SECONDS * CPU_ITEMS, CPU_ITEMS)
    cpu = functools.partial(cpu_sync, work)
    items = list(range(CPU_ITEMS))
    return Case(
        number="1",
        title=f"{CPU_ITEMS} CPU-bound items of ~{CPU_ITEM_SECONDS * 1000:.0f} ms, "
        f"ProcessPoolExecutor({processes})",
        expected=[cpu(i) for i in items],
        contenders=[
            *ours(
                "Lambda(executor=pool).batch",
                lambda: _bound(Lambda(cpu, executor=pool).batch, items),
            ),
            Contender(
                "ProcessPoolExecutor.map, same pool",
                lambda: list(pool.map(cpu, items)),
                min_ratio=1 / 1.1,
            ),
            *ours(
                "Lambda(executor=pool).abatch",
                lambda: _bound(Lambda(cpu, executor=pool).abatch, items),
                is_async=True,
            ),
            *glue(pool, cpu, items),
            Contender(
                "langchain_core RunnableLambda.batch (threads)",
                _bound(RunnableLambda(cpu).batch, items),
            ),
            Contender("sequential list comprehension", lambda: [cpu(i) for i in items]),
        ],
    )


def case_trivial(title: str, executor: Any, peers: list[Contender], number: str) -> Case:
    items = list(range(TRIVIAL_ITEMS))
    return Case(
        number=number,
        title=title,
        expected=[inc(i) for i in items],
        contenders=[
            *ours(
                "Lambda(executor=...).batch",
                lambda: _bound(Lambda(inc, executor=executor).batch, items),
            ),
            *peers,
            *ours(
                "Lambda(executor=...).abatch",
                lambda: _bound(Lambda(inc, executor=executor).abatch, items),
                is_async=True,
            ),
            *glue(executor, inc, items),
        ],
    )


async def run_in_executor(pool: Executor) -> list[int]:
    """asyncio's own way to await a pool: a wrapped future per call, gathered."""
    loop = asyncio.get_running_loop()
    return await asyncio.gather(*(loop.run_in_executor(pool, inc, x) for x in range(TRIVIAL_ITEMS)))


async def await_refs(remote_fn: Any) -> list[int]:
    """Ray's asyncio way: its object refs are awaitable."""
    return await asyncio.gather(*(remote_fn.remote(x) for x in range(TRIVIAL_ITEMS)))


def ray_futures(remote_fn: Any) -> list[int]:
    """A Ray future per task through Ray's own completion callback (``ObjectRef.future()``):
    what ``RayExecutor`` did before it followed its tasks in rounds (see ``_ray._Completer``)."""
    futures = [remote_fn.remote(x).future() for x in range(TRIVIAL_ITEMS)]
    return [future.result() for future in futures]


def driver_cpu(ops: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median CPU seconds of this process (all its threads) per call of each op, interleaved."""
    samples: dict[str, list[float]] = {label: [] for label in ops}
    for _ in range(rounds):
        for label, op in ops.items():
            gc.collect()
            started = time.process_time()
            op()
            samples[label].append(time.process_time() - started)
    return {label: statistics.median(values) for label, values in samples.items()}


def cpu_report(
    executors: dict[str, Any], peers: dict[str, dict[str, Callable[[], Any]]], rounds: int
) -> list[str]:
    """``peers``: executor name -> {label: a batch of the same items with its own API}."""
    items = list(range(TRIVIAL_ITEMS))
    lines = [
        f"CPU time of this process per batch of {TRIVIAL_ITEMS:,} trivial items "
        f"(median of {rounds}):"
    ]
    for name, executor in executors.items():
        step = Lambda(inc, executor=executor)
        ops = {
            "fastlcel Lambda(executor=...).batch": _bound(step.batch, items),
            "fastlcel Lambda(executor=...).abatch": lambda s=step: asyncio.run(s.abatch(items)),
            **peers[name],
        }
        for label, seconds in driver_cpu(ops, rounds).items():
            lines.append(f"  {name:<26} {label:<51} {seconds * 1000:.0f} ms")
    return lines


def threads_added(op: Callable[[], Any]) -> tuple[int | None, int | None]:
    """(threads before, peak threads during) one call of ``op``."""
    with Sampler(interval=0.001) as sampler:
        op()
    return sampler.baseline_threads, sampler.peak_threads


def threads_report(executors: dict[str, Any]) -> list[str]:
    """Peak threads during one batch, fastlcel's first: the glue leaves its threads in
    fastlcel's pool (idle for 60 s), so it is measured last, on one executor."""
    items = list(range(TRIVIAL_ITEMS))
    runs = [(name, "fastlcel Lambda(executor=...)", inc) for name in executors]
    first = next(iter(executors))
    runs.append((first, "glue Lambda(lambda x: pool.submit(f, x).result())", None))
    lines = [f"peak OS threads of this process during one batch of {TRIVIAL_ITEMS:,} items:"]
    for name, label, fn in runs:
        executor = executors[name]
        step = Lambda(fn, executor=executor) if fn else glued(executor, inc)
        step.batch(items[:4])  # fastlcel's event loop and the executor's threads, started
        before, peak = threads_added(_bound(step.batch, items))
        lines.append(f"  {name:<26} {label:<51} {peak} (before: {before})")
    return lines


def start_ray(processes: int) -> Any:
    try:
        import ray
    except ImportError:
        return None
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster
    ray.init(num_cpus=processes, include_dashboard=False, log_to_driver=False)
    return ray


def build_cases(pool: ProcessPoolExecutor, processes: int, ray: Any) -> list[Case]:
    cases = [
        case_cpu(pool, processes),
        case_trivial(
            f"{TRIVIAL_ITEMS:,} trivial items, ProcessPoolExecutor({processes})",
            pool,
            [
                Contender(
                    "ProcessPoolExecutor.map, same pool",
                    lambda: list(pool.map(inc, range(TRIVIAL_ITEMS))),
                    min_ratio=1 / 1.3,
                ),
                Contender(
                    "asyncio.gather of loop.run_in_executor(pool, ...)",
                    functools.partial(run_in_executor, pool),
                    is_async=True,
                ),
            ],
            "2",
        ),
    ]
    if ray is not None:
        remote_inc = ray.remote(inc)
        cases.append(
            case_trivial(
                f"{TRIVIAL_ITEMS:,} trivial items, Ray (local, num_cpus={processes})",
                RayExecutor() if RayExecutor else None,  # type: ignore[truthy-function]
                [
                    Contender(
                        "ray.get([f.remote(x) for x in xs])",
                        lambda: ray.get([remote_inc.remote(x) for x in range(TRIVIAL_ITEMS)]),
                        min_ratio=1 / 1.2,
                    ),
                    Contender(
                        "f.remote(x).future() each, then wait (Ray's callbacks)",
                        functools.partial(ray_futures, remote_inc),
                    ),
                    Contender(
                        "asyncio.gather of the refs (await ref)",
                        functools.partial(await_refs, remote_inc),
                        is_async=True,
                    ),
                ],
                "3",
            )
        )
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 30 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--only", metavar="TEXT", help="run the cases whose title contains TEXT")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray case")
    args = parser.parse_args(argv)
    # Batches of processes take 0.1-1 s: more samples than bench_core gives such operations.
    settings = QUICK if args.quick else replace(FULL, budget_seconds=6.0, min_repeats=5)
    faulthandler.enable()
    processes = 2
    meta: dict[str, Any] = {
        "bench": "executor",
        "versions": versions(),
        "fastlcel_build": fastlcel_build(),
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "settings": vars(settings),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if FASTLCEL_IMPORT_ERROR:
        print(f"fastlcel is not importable ({FASTLCEL_IMPORT_ERROR}): timing the peers only")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["fastlcel.compare._workloads"])
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    ray = None if args.no_ray else start_ray(processes)
    wall, others = time.perf_counter(), OthersLoad()
    try:
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            list(pool.map(time.sleep, [0.2] * processes))  # every worker started
            executors = {f"ProcessPoolExecutor({processes})": pool}
            if ray is not None:
                executors[f"RayExecutor (num_cpus={processes})"] = RayExecutor()
            threads = [] if FASTLCEL_IMPORT_ERROR else threads_report(executors)
            peers: dict[str, dict[str, Callable[[], Any]]] = {
                f"ProcessPoolExecutor({processes})": {
                    "pool.map": lambda: list(pool.map(inc, range(TRIVIAL_ITEMS)))
                }
            }
            if ray is not None:
                remote_inc = ray.remote(inc)
                peers[f"RayExecutor (num_cpus={processes})"] = {
                    "ray.get([f.remote(x) for x in xs])": lambda: ray.get(
                        [remote_inc.remote(x) for x in range(TRIVIAL_ITEMS)]
                    ),
                    "f.remote(x).future() each, then wait": functools.partial(
                        ray_futures, remote_inc
                    ),
                }
            rounds = 3 if args.quick else 9
            cpu = [] if FASTLCEL_IMPORT_ERROR else cpu_report(executors, peers, rounds)
            cases = build_cases(pool, processes, ray)
            if args.only:
                cases = [case for case in cases if args.only.lower() in case.title.lower()]
            runner = Runner(settings, loop)
            for case in cases:
                print(f"running: {case.title}", file=sys.stderr, flush=True)
                runner.run(case)
    finally:
        loop.close()
        if ray is not None:
            ray.shutdown()
    report(cases, meta, wall, others, args.json)
    print("\n".join(cpu + threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())

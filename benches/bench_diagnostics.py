"""The loop-blocking detector and the progress bar: what each costs on and off, side by side with
the peers in one run.

    python benches/bench_diagnostics.py [--quick] [--json FILE] [--only TEXT]

The timing machinery and the table are bench_core.py's (see its docstring and benches/README.md).
"ours" in each case is fastlcel with the feature off (no config key, as every other bench runs),
so every ratio is peer / feature-off time; the rows "warn_blocking=True" and "progress=..." are
the same call with it on. After the table, the cost per awaited step (detector) and per item
(progress) is printed from the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
    ident,
    machine,
    ours,
    report,
    versions,
)
from langchain_core.runnables import RunnableLambda, RunnableSequence

if FASTLCEL_IMPORT_ERROR is None:
    from fastlcel import Lambda, Sequence
try:
    from tqdm import tqdm
    from tqdm.asyncio import tqdm as atqdm
except ImportError:  # pip install 'fastlcel[progress]'
    tqdm = atqdm = None  # type: ignore[assignment,misc]

DEVNULL = open(os.devnull, "w")  # noqa: SIM115 (the bars draw here: their work, not the terminal's)


async def aident(x: Any) -> Any:
    return x


def ten_awaits() -> Any:
    async def by_hand(x: Any) -> Any:
        for _ in range(10):
            x = await aident(x)
        return x

    return by_hand


def case_detector_sequence() -> Case:
    steps = [aident] * 10
    lc = RunnableSequence(*[RunnableLambda(f) for f in steps])
    by_hand = ten_awaits()
    x = 1
    seq = Sequence(*steps) if FASTLCEL_IMPORT_ERROR is None else None
    return Case(
        number="",
        title="Sequence of 10 async Lambdas, ainvoke: the detector on an awaited step",
        expected=x,
        contenders=[
            *ours(
                "Sequence.ainvoke, detector off",
                lambda: _bound(seq.ainvoke, x),
                is_async=True,
            ),
            *ours_extra(
                "fastlcel Sequence.ainvoke, warn_blocking=False",
                lambda: lambda: seq.ainvoke(x, {"warn_blocking": False}),
            ),
            *ours_extra(
                "fastlcel Sequence.ainvoke, warn_blocking=True",
                lambda: lambda: seq.ainvoke(x, {"warn_blocking": True}),
            ),
            Contender(
                "langchain_core RunnableSequence.ainvoke", _bound(lc.ainvoke, x), is_async=True
            ),
            Contender("10 awaits written by hand (floor)", _bound(by_hand, x), is_async=True),
        ],
    )


def case_detector_abatch() -> Case:
    items = list(range(10_000))
    lc = RunnableLambda(aident)
    return Case(
        number="",
        title="Lambda(async fn).abatch, 10,000 trivial items: the detector per item",
        expected=items,
        contenders=[
            *ours(
                "Lambda(afn).abatch, detector off",
                lambda: _bound(Lambda(aident).abatch, items),
                is_async=True,
            ),
            *ours_extra(
                "fastlcel Lambda(afn).abatch, warn_blocking=False",
                lambda: (lambda r: lambda: r.abatch(items, {"warn_blocking": False}))(
                    Lambda(aident)
                ),
            ),
            *ours_extra(
                "fastlcel Lambda(afn).abatch, warn_blocking=True",
                lambda: (lambda r: lambda: r.abatch(items, {"warn_blocking": True}))(
                    Lambda(aident)
                ),
            ),
            Contender(
                "langchain_core RunnableLambda(afn).abatch", _bound(lc.abatch, items), is_async=True
            ),
            Contender(
                "asyncio.gather(*coroutines)",
                lambda: asyncio.gather(*[aident(x) for x in items]),
                is_async=True,
            ),
        ],
    )


def case_progress_batch(pool: ThreadPoolExecutor) -> Case:
    items = list(range(10_000))
    lc = RunnableLambda(ident)
    bar = {"file": DEVNULL}
    peers = []
    if tqdm is not None:
        peers.append(
            Contender(
                "list(tqdm(ThreadPoolExecutor(64).map(fn, xs)))",
                lambda: list(tqdm(pool.map(ident, items), total=len(items), file=DEVNULL)),
            )
        )
    return Case(
        number="",
        title="Lambda(ident).batch, 10,000 trivial items: the progress bar (tqdm to /dev/null)",
        expected=items,
        contenders=[
            *ours("Lambda(fn).batch, no bar", lambda: _bound(Lambda(ident).batch, items)),
            *(
                ours_extra(
                    "fastlcel Lambda(fn).batch, progress=tqdm",
                    lambda: (lambda r: lambda: r.batch(items, {"progress": bar}))(Lambda(ident)),
                    is_async=False,
                )
                if tqdm is not None
                else []
            ),
            Contender("langchain_core RunnableLambda.batch", _bound(lc.batch, items)),
            Contender("ThreadPoolExecutor(64).map, no bar", lambda: list(pool.map(ident, items))),
            *peers,
            Contender("list comprehension (floor)", lambda: [ident(x) for x in items]),
        ],
    )


def case_progress_abatch() -> Case:
    items = list(range(10_000))
    bar = {"file": DEVNULL}
    peers = []
    if atqdm is not None:
        peers.append(
            Contender(
                "tqdm.asyncio.tqdm.gather(*coroutines)",
                lambda: atqdm.gather(*[aident(x) for x in items], file=DEVNULL),
                is_async=True,
            )
        )
    return Case(
        number="",
        title="Lambda(async fn).abatch, 10,000 trivial items: the progress bar (tqdm)",
        expected=items,
        contenders=[
            *ours(
                "Lambda(afn).abatch, no bar",
                lambda: _bound(Lambda(aident).abatch, items),
                is_async=True,
            ),
            *(
                ours_extra(
                    "fastlcel Lambda(afn).abatch, progress=tqdm",
                    lambda: (lambda r: lambda: r.abatch(items, {"progress": bar}))(Lambda(aident)),
                )
                if atqdm is not None
                else []
            ),
            Contender(
                "asyncio.gather(*coroutines), no bar",
                lambda: asyncio.gather(*[aident(x) for x in items]),
                is_async=True,
            ),
            *peers,
        ],
    )


def ours_extra(label: str, make_op: Any, is_async: bool = True) -> list[Contender]:
    """Another fastlcel row (the feature on), compared like a peer."""
    if FASTLCEL_IMPORT_ERROR is not None:
        return []
    return [Contender(label, make_op(), is_async=is_async)]


def per_unit(cases: list[Case]) -> None:
    """The cost of each feature per awaited step / item, from the medians: the detector against
    the same call with ``warn_blocking=False`` (the same config dict to parse), a bar against no
    bar."""
    units = {"10 async Lambdas": 10, "10,000": 10_000}
    for case in cases:
        explicit_off = [c for c in case.contenders if c.label.endswith("warn_blocking=False")]
        off = explicit_off[0] if explicit_off else case.ours
        if off is None or off.median is None:
            continue
        n = next(v for k, v in units.items() if k in case.title)
        for c in case.contenders:
            if c.median is not None and ("=True" in c.label or "progress=" in c.label):
                extra = (c.median - off.median) / n
                print(
                    f"{c.label}: {extra * 1e9:+.0f} ns per {'step' if n == 10 else 'item'}"
                    f" ({c.median / off.median:.2f}x the call without it)"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 30 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--only", metavar="TEXT", help="run the cases whose title contains TEXT")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    faulthandler.enable()
    meta: dict[str, Any] = {
        "bench": "diagnostics",
        "versions": versions(),
        "fastlcel_build": fastlcel_build(),
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "settings": vars(settings),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if tqdm is None:
        print("tqdm is not installed: the progress rows are left out", file=sys.stderr)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pool = ThreadPoolExecutor(max_workers=64)
    wall, others = time.perf_counter(), OthersLoad()
    try:
        cases = [
            case_detector_sequence(),
            case_detector_abatch(),
            case_progress_batch(pool),
            case_progress_abatch(),
        ]
        if args.only:
            cases = [case for case in cases if args.only.lower() in case.title.lower()]
        runner = Runner(settings, loop)
        for case in cases:
            print(f"running: {case.title}", file=sys.stderr, flush=True)
            runner.run(case)
    finally:
        pool.shutdown()
        loop.close()
    report(cases, meta, wall, others, args.json)
    per_unit(cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())

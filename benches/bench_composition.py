"""LCEL composition (Sequence, Parallel inside a Sequence, assign/pick/branch glue): fastlcel
against langchain_core and plain Python, side by side in one run.

    python benches/bench_composition.py [--quick] [--json FILE] [--only TEXT]

The timing machinery and the table are bench_core.py's (see its docstring and benches/README.md):
every contender must return the same result, is warmed up, then sampled round-robin; the table
shows the median time of ONE operation and the ratio peer time / fastlcel time.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import sys
import time
from collections.abc import Callable
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
from langchain_core import runnables as langchain_runnables

if FASTLCEL_IMPORT_ERROR is None:
    import fastlcel
else:  # time the peers only; bench_core reports why
    fastlcel = None  # type: ignore[assignment]


def add_one(x: int) -> int:
    return x + 1


def ident(x: Any) -> Any:
    return x


def total(d: dict[str, int]) -> int:
    return sum(d.values())


# --------------------------------------------------------------------------- the programs
# Each builder takes the namespace a program imports its runnables from (fastlcel or
# langchain_core.runnables) and returns the same LCEL program built from it.


def ten_lambdas(lib: Any) -> Any:
    return lib.RunnableSequence(*[lib.RunnableLambda(add_one) for _ in range(10)])


def sequence_with_parallel(lib: Any) -> Any:
    fan_out = lib.RunnableParallel({f"k{i}": lib.RunnableLambda(add_one) for i in range(5)})
    return lib.RunnableLambda(add_one) | fan_out | lib.RunnableLambda(total)


def glue(lib: Any) -> Any:
    """Typical glue around a model call: wrap, assign, pick, route."""
    return (
        lib.RunnableParallel(question=lib.RunnablePassthrough())
        | lib.RunnablePassthrough.assign(length=lambda d: len(d["question"]))
        | lib.RunnableBranch(
            (lambda d: d["length"] > 10, lib.RunnablePick("question")),
            lib.RunnablePick("length"),
        )
    )


async def aadd_one(x: int) -> int:
    return x + 1


def ten_async_lambdas(lib: Any) -> Any:
    return lib.RunnableSequence(*[lib.RunnableLambda(aadd_one) for _ in range(10)])


async def awaits_ten(x: int) -> int:
    """The same ten awaits written by hand."""
    x = await aadd_one(x)
    x = await aadd_one(x)
    x = await aadd_one(x)
    x = await aadd_one(x)
    x = await aadd_one(x)
    x = await aadd_one(x)
    x = await aadd_one(x)
    x = await aadd_one(x)
    x = await aadd_one(x)
    return await aadd_one(x)


async def _alist(chunks: Any) -> list[Any]:
    return [chunk async for chunk in chunks]


def python_ten(x: int) -> int:
    for fn in [add_one] * 10:
        x = fn(x)
    return x


def python_with_parallel(x: int) -> int:
    y = add_one(x)
    return total({f"k{i}": add_one(y) for i in range(5)})


def both(
    method: str,
    build: Callable[[Any], Any],
    call: Callable[[Any], Callable[[], Any]],
    *,
    is_async: bool = False,
    min_ratio: float | None = None,
) -> list[Contender]:
    """Our contender and langchain_core's: the same program, ``call`` applied to each."""
    return [
        *ours(f"Sequence.{method}", lambda: call(build(fastlcel)), is_async=is_async),
        Contender(
            f"langchain_core RunnableSequence.{method}",
            call(build(langchain_runnables)),
            is_async=is_async,
            min_ratio=min_ratio,
        ),
    ]


def _stream(runnable: Any, x: Any) -> Callable[[], list[Any]]:
    return lambda: list(runnable.stream(x))


def build_cases() -> list[Case]:
    items = list(range(100))
    return [
        Case(
            number="1",
            title="Sequence of 10 trivial Lambdas, invoke",
            expected=10,
            contenders=[
                *both(
                    "invoke",
                    ten_lambdas,
                    lambda chain: _bound(chain.invoke, 0),
                    min_ratio=50.0,
                ),
                Contender("plain Python loop over the functions (floor)", _bound(python_ten, 0)),
            ],
        ),
        Case(
            number="",
            title="Sequence of 10 trivial Lambdas, ainvoke",
            expected=10,
            contenders=both("ainvoke", ten_lambdas, lambda c: _bound(c.ainvoke, 0), is_async=True),
        ),
        Case(
            number="2",
            title="Sequence of 10 async Lambdas, ainvoke",
            expected=10,
            contenders=[
                *both("ainvoke", ten_async_lambdas, lambda c: _bound(c.ainvoke, 0), is_async=True),
                Contender(
                    "the same ten awaits written by hand (floor)",
                    _bound(awaits_ten, 0),
                    is_async=True,
                    min_ratio=1 / 3,
                ),
            ],
        ),
        Case(
            number="3",
            title="Sequence of 10 trivial Lambdas, stream",
            expected=[10],
            contenders=both("stream", ten_lambdas, lambda c: _stream(c, 0), min_ratio=50.0),
        ),
        Case(
            number="4",
            title="Sequence of 10 trivial Lambdas, astream",
            expected=[10],
            contenders=both(
                "astream",
                ten_lambdas,
                lambda c: lambda: _alist(c.astream(0)),
                is_async=True,
                min_ratio=30.0,
            ),
        ),
        Case(
            number="5",
            title="Lambda | Parallel of 5 Lambdas | Lambda, batch of 100 inputs",
            expected=[python_with_parallel(x) for x in items],
            contenders=[
                *both(
                    "batch",
                    sequence_with_parallel,
                    lambda chain: _bound(chain.batch, items),
                    min_ratio=20.0,
                ),
                Contender(
                    "list comprehension (floor)",
                    lambda: [python_with_parallel(x) for x in items],
                ),
            ],
        ),
        Case(
            number="",
            title="Lambda | Parallel of 5 Lambdas | Lambda, abatch of 100 inputs",
            expected=[python_with_parallel(x) for x in items],
            contenders=both(
                "abatch",
                sequence_with_parallel,
                lambda c: _bound(c.abatch, items),
                is_async=True,
            ),
        ),
        Case(
            number="",
            title="glue: {question: Passthrough} | assign | Branch(Pick, Pick), invoke",
            expected="what is LCEL made of?",
            contenders=both("invoke", glue, lambda c: _bound(c.invoke, "what is LCEL made of?")),
        ),
    ]


# --------------------------------------------------------------------------- run and report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 20 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--only", metavar="TEXT", help="run the cases whose title contains TEXT")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    faulthandler.enable()

    meta: dict[str, Any] = {
        "bench": "composition",
        "versions": versions(),
        "fastlcel_build": fastlcel_build(),
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "settings": vars(settings),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if FASTLCEL_IMPORT_ERROR:
        print(f"fastlcel is not importable ({FASTLCEL_IMPORT_ERROR}): timing the peers only")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    wall, others = time.perf_counter(), OthersLoad()
    try:
        cases = build_cases()
        if args.only:
            cases = [case for case in cases if args.only.lower() in case.title.lower()]
        runner = Runner(settings, loop)
        for case in cases:
            print(f"running: {case.title}", file=sys.stderr, flush=True)
            runner.run(case)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    report(cases, meta, wall, others, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

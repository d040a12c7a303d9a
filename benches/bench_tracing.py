"""Tracing: fastlcel and langchain_core with the same callback handler, and with LangSmith
tracing to a local server, side by side in one run.

    python benches/bench_tracing.py [--quick] [--json FILE] [--only TEXT]

The timing machinery and the table are bench_core.py's (see its docstring and benches/README.md).
Before timing, each case checks that both libraries open the same number of runs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import sys
import time
from collections.abc import Callable
from pathlib import Path
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
from langchain_core.callbacks import BaseCallbackHandler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from langsmith_server import Server  # noqa: E402 (the tests' local LangSmith server)

if FASTLCEL_IMPORT_ERROR is None:
    import fastlcel
else:  # time the peers only; bench_core reports why
    fastlcel = None  # type: ignore[assignment]


class CountRuns(BaseCallbackHandler):
    """A no-op handler that counts the runs it is told about."""

    def __init__(self) -> None:
        self.runs = 0

    def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
        self.runs += 1


def ten_steps(lib: Any) -> Any:
    return lib.RunnableParallel({f"k{i}": lib.RunnableLambda(_ident) for i in range(10)})


def rag_shape(lib: Any) -> Any:
    return (
        lib.RunnableParallel(context=_double, question=lib.RunnablePassthrough())
        | lib.RunnableLambda(_prompt)
        | {"answer": _ident, "length": len}
    )


def _ident(x: Any) -> Any:
    return x


def _double(x: str) -> str:
    return x + x


def _prompt(d: dict[str, str]) -> str:
    return f"{d['question']} / {d['context']}"


def _with(runnable: Any, config: dict[str, Any]) -> Callable[[Any], Any]:
    return lambda x: runnable.invoke(x, config)


def callback_calls_alone(handlers: list[Any], x: Any) -> dict[str, Any]:
    """The calls into langchain_core's callback system that langchain_core's own Parallel of
    10 Lambdas makes, and nothing else (no executor, no config handling, no step): the floor
    of any implementation that opens its runs through those managers, as fastlcel does."""
    from contextvars import copy_context

    from langchain_core.callbacks import CallbackManager
    from langchain_core.runnables.config import _set_config_context

    def configure(callbacks: Any) -> Any:
        return CallbackManager.configure(callbacks, None, False, None, None, None, None)

    run = configure(handlers).on_chain_start(None, x, name="RunnableParallel")
    out = {}
    for i in range(10):
        key = f"k{i}"
        step = configure(run.get_child(f"map:key:{key}")).on_chain_start(None, x, name="_ident")
        child = {"callbacks": step.get_child(), "tags": [], "metadata": {}, "configurable": {}}
        copy_context().run(_set_config_context, child)
        step.on_chain_end(x)
        out[key] = x
    run.on_chain_end(out)
    return out


def runs_per_call(runnable: Any, x: Any) -> int:
    counter = CountRuns()
    runnable.invoke(x, {"callbacks": [counter]})
    return counter.runs


def traced_to(client: Any, call: Callable[[], Any]) -> Callable[[], Any]:
    from langsmith.run_helpers import tracing_context

    def op() -> Any:
        with tracing_context(enabled=True, client=client, project_name="bench"):
            return call()

    return op


def posted_per_call(server: Server, client: Any, call: Callable[[], Any]) -> int:
    before = server.posted
    traced_to(client, call)()
    client.flush()
    return server.posted - before


# --------------------------------------------------------------------------------- the cases


def build_cases(server: Server, client: Any) -> list[Case]:
    x = {"question": "What is LCEL?"}
    counter = CountRuns()
    config = {"callbacks": [counter]}
    lc_parallel = ten_steps(langchain_runnables)
    lc_rag = rag_shape(langchain_runnables)
    cases = [
        Case(
            number="1",
            title="Parallel.invoke, 10 trivial steps, a no-op handler counting runs",
            expected={f"k{i}": x for i in range(10)},
            contenders=[
                *ours("Parallel.invoke", lambda: _bound(_with(ten_steps(fastlcel), config), x)),
                Contender(
                    "langchain_core RunnableParallel.invoke",
                    _bound(_with(lc_parallel, config), x),
                    min_ratio=10.0,
                ),
                # What langchain_core's managers alone cost: the ratio no implementation that
                # opens its runs through them can pass.
                Contender(
                    "langchain_core's callback calls alone (floor)",
                    lambda: callback_calls_alone(config["callbacks"], x),
                ),
            ],
        ),
        Case(
            number="",
            title="Parallel.invoke, 10 trivial steps, no handler (for comparison)",
            expected={f"k{i}": x for i in range(10)},
            contenders=[
                *ours("Parallel.invoke", lambda: _bound(ten_steps(fastlcel).invoke, x)),
                Contender("langchain_core RunnableParallel.invoke", _bound(lc_parallel.invoke, x)),
            ],
        ),
    ]
    question = "What is LCEL?"
    prompt = _prompt({"question": question, "context": _double(question)})
    expected = {"answer": prompt, "length": len(prompt)}
    cases.append(
        Case(
            number="2",
            title="Parallel | Lambda | Parallel (8 runs), invoke, LangSmith tracing to a "
            "local server",
            expected=expected,
            contenders=[
                *ours(
                    "Sequence.invoke",
                    lambda: traced_to(client, _bound(rag_shape(fastlcel).invoke, question)),
                ),
                Contender(
                    "langchain_core RunnableSequence.invoke",
                    traced_to(client, _bound(lc_rag.invoke, question)),
                    min_ratio=1.0,
                ),
                *(
                    []
                    if fastlcel is None
                    else [
                        Contender(
                            "fastlcel Sequence.invoke untraced (its own share)",
                            _bound(rag_shape(fastlcel).invoke, question),
                        )
                    ]
                ),
            ],
        )
    )
    if fastlcel is not None:
        for lib, name in ((fastlcel, "fastlcel"), (langchain_runnables, "langchain_core")):
            runs = runs_per_call(ten_steps(lib), x)
            posted = posted_per_call(server, client, _bound(rag_shape(lib).invoke, question))
            print(f"{name}: {runs} runs per Parallel call, {posted} runs posted per traced call")
            if runs != 11:
                raise SystemExit(f"{name} opened {runs} runs for a Parallel of 10, not 11")
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 20 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--only", metavar="TEXT", help="run the cases whose title contains TEXT")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    faulthandler.enable()
    import langsmith

    server = Server(keep_runs=False)
    client = langsmith.Client(api_url=server.url, api_key="bench")
    meta: dict[str, Any] = {
        "bench": "tracing",
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
        cases = build_cases(server, client)
        if args.only:
            cases = [case for case in cases if args.only.lower() in case.title.lower()]
        runner = Runner(settings, loop)
        for case in cases:
            print(f"running: {case.title}", file=sys.stderr, flush=True)
            runner.run(case)
            client.flush()
    finally:
        loop.close()
        client.flush()
        server.close()
    report(cases, meta, wall, others, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

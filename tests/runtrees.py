"""Run trees as langchain_core's callback system records them, in a form two libraries' runs of
the same program can be compared in: names, run types, tags, metadata, inputs, outputs and
errors, children as a set (steps that run at once may start in any order)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_core.tracers.schemas import Run


def _error(error: str | None) -> str | None:
    """The exception line of a recorded traceback (its frames differ between libraries)."""
    if error is None:
        return None
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else error


def _value(value: Any) -> str:
    """A value's repr with dict keys sorted (chunks of concurrent steps add up in any order)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_value(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return repr(type(value)(_value(v) for v in value))
    return repr(value)


def canonical(run: Run) -> tuple[Any, ...]:
    children = sorted((canonical(child) for child in run.child_runs), key=repr)
    return (
        run.name,
        run.run_type,
        tuple(sorted(run.tags or [])),
        _value((run.extra or {}).get("metadata", {})),
        _value(run.inputs),
        _value(run.outputs),
        _error(run.error),
        tuple(children),
    )


def trees(collector: RunCollectorCallbackHandler) -> list[tuple[Any, ...]]:
    return sorted((canonical(run) for run in collector.traced_runs), key=repr)


def render(tree: tuple[Any, ...], depth: int = 0) -> str:
    """A readable tree for assertion messages."""
    name, run_type, tags, metadata, inputs, outputs, error, children = tree
    line = f"{'  ' * depth}{name} [{run_type}] tags={list(tags)} in={inputs} "
    line += f"err={error}" if error else f"out={outputs}"
    return "\n".join([line, *(render(child, depth + 1) for child in children)])


async def _alist(chunks: Any) -> list[Any]:
    return [chunk async for chunk in chunks]


async def _apairs(pairs: Any) -> list[Any]:
    return sorted([pair async for pair in pairs], key=lambda pair: pair[0])


CALLS: dict[str, Callable[[Any, Any, dict[str, Any]], Any]] = {
    "invoke": lambda r, x, config: r.invoke(x, config),
    "ainvoke": lambda r, x, config: asyncio.run(r.ainvoke(x, config)),
    "batch": lambda r, x, config: r.batch([x, x], config),
    "abatch": lambda r, x, config: asyncio.run(r.abatch([x, x], config)),
    "stream": lambda r, x, config: list(r.stream(x, config)),
    "astream": lambda r, x, config: asyncio.run(_alist(r.astream(x, config))),
    "batch_as_completed": lambda r, x, config: sorted(
        r.batch_as_completed([x, x], config), key=lambda pair: pair[0]
    ),
    "abatch_as_completed": lambda r, x, config: asyncio.run(
        _apairs(r.abatch_as_completed([x, x], config))
    ),
}


def record(runnable: Any, x: Any, how: str, **config: Any) -> tuple[Any, list[tuple[Any, ...]]]:
    """The outcome (value or exception repr) and the run trees of one call."""
    collector = RunCollectorCallbackHandler()
    try:
        outcome = CALLS[how](runnable, x, {"callbacks": [collector], **config})
    except Exception as exc:  # compared as part of the outcome
        outcome = f"raised {exc!r}"
    return outcome, trees(collector)

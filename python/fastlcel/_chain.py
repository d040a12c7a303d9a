"""Async control flow and streaming for the composite runnables.

The Rust core runs every sync path (``invoke``, ``batch``) and the fan-outs of ``ainvoke`` and
``abatch``. What is here is sequential async control flow (a Sequence awaiting one step after
another, a Branch awaiting its condition) and generator plumbing for ``stream``/``transform``:
code whose cost is the awaited step or the produced chunk, not the glue.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import queue
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from fastlcel._core import (
    Assign,
    Binding,
    Branch,
    FastLcelTypeError,
    FastLcelValueError,
    Generator,
    Lambda,
    Parallel,
    Passthrough,
    Pick,
    Runnable,
    Sequence,
    _ensure_config,
)


class AddableDict(dict):  # type: ignore[type-arg]
    """A dict whose ``+`` merges keys, adding values present in both (langchain_core's)."""

    def __add__(self, other: dict[Any, Any]) -> AddableDict:
        merged = AddableDict(self)
        for key, value in other.items():
            if key in merged and merged[key] is not None and value is not None:
                merged[key] = merged[key] + value
            elif key not in merged or value is not None:
                merged[key] = value
        return merged

    def __radd__(self, other: dict[Any, Any]) -> AddableDict:
        return AddableDict(other) + self


def _is_runnable(obj: object) -> bool:
    if isinstance(obj, Runnable):
        return True
    base = sys.modules.get("langchain_core.runnables.base")
    return base is not None and isinstance(obj, base.Runnable)


def _child_config(config: dict[str, Any] | None, this: str, input: Any) -> dict[str, Any]:
    config = dict(config or {})
    limit = config.get("recursion_limit", 25)
    if limit <= 0:
        msg = f"Recursion limit reached when invoking {this} with input {input!r}."
        raise RecursionError(msg)
    config["recursion_limit"] = limit - 1
    return config


async def _ainvoke(step: Any, input: Any, config: dict[str, Any] | None) -> Any:
    ainvoke = getattr(step, "ainvoke", None)
    if ainvoke is None:  # operator.itemgetter and other plain callables
        return step(input)
    return await ainvoke(input, config)


# --- async control flow (called from Rust to make a step's awaitable) ---------------------------


async def sequence(steps: tuple[Any, ...], input: Any, config: dict[str, Any]) -> Any:
    for step in steps:
        input = await _ainvoke(step, input, config)
    return input


async def assign(mapper: Parallel, input: Any, config: dict[str, Any]) -> Any:
    if not isinstance(input, dict):
        msg = "The input to RunnablePassthrough.assign() must be a dict."
        raise FastLcelValueError(msg)
    return {**input, **(await mapper.ainvoke(input, config))}


async def branch(
    branches: list[tuple[Any, Any]], default: Any, input: Any, config: dict[str, Any]
) -> Any:
    for condition, runnable in branches:
        if await _ainvoke(condition, input, config):
            return await _ainvoke(runnable, input, config)
    return await _ainvoke(default, input, config)


async def binding(bound: Any, input: Any, config: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """A Binding whose bound runnable is awaited: kwargs reach a Lambda's async function or a
    foreign runnable's ``ainvoke``; other fastlcel runnables take none."""
    if isinstance(bound, Lambda) and bound.afunc is not None and kwargs:
        output = bound.afunc(input, **_config_kwarg(bound.afunc, config), **kwargs)
        return await lambda_result(output, input, config, bound.name)
    if isinstance(bound, Runnable):
        return await bound.ainvoke(input, config)
    return await bound.ainvoke(input, config, **kwargs)


# Outputs that need no follow-up, recognised by exact type (the common case, kept cheap).
_PLAIN = frozenset({str, int, float, bool, dict, list, tuple, type(None)})


async def lambda_result(
    awaitable: Any, input: Any, config: dict[str, Any] | None, name: str
) -> Any:
    """Awaits a Lambda's async function and finishes its output (see lambda_followup)."""
    if inspect.isasyncgen(awaitable):
        return await _asum(awaitable)
    output = await awaitable
    if type(output) in _PLAIN:
        return output
    return await lambda_followup(output, input, config, name)


async def lambda_followup(output: Any, input: Any, config: dict[str, Any] | None, name: str) -> Any:
    """A Lambda's output, finished: the chunks of an async generator summed; a runnable it
    returned run in its place on the same input (one less ``recursion_limit``)."""
    if inspect.isasyncgen(output):
        return await _asum(output)
    if _is_runnable(output):
        return await output.ainvoke(input, _child_config(config, f"Lambda({name})", input))
    return output


def _config_kwarg(func: Any, config: dict[str, Any] | None) -> dict[str, Any]:
    try:
        takes = "config" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes = False
    return {"config": _ensure_config(config)} if takes else {}


async def _asum(chunks: AsyncIterator[Any]) -> Any:
    total = None
    async for chunk in chunks:
        total = chunk if total is None else total + chunk
    return total


def _sum(chunks: Iterable[Any]) -> Any:
    total = None
    for chunk in chunks:
        total = chunk if total is None else total + chunk
    return total


# --- sync streaming ---------------------------------------------------------------------------


def stream(runnable: Any, input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
    return transform(runnable, iter([input]), config, **kwargs)


def transform(
    runnable: Any, chunks: Iterable[Any], config: Any = None, **kwargs: Any
) -> Iterator[Any]:
    """Chunks of ``runnable``'s output for a stream of input chunks (langchain semantics:
    a step that cannot stream takes the sum of its input chunks and yields one chunk)."""
    if isinstance(runnable, Sequence):
        for step in runnable.steps:
            chunks = transform(step, chunks, config)
        yield from chunks
    elif isinstance(runnable, Parallel):
        yield from _transform_parallel(runnable, chunks, config)
    elif isinstance(runnable, Passthrough):
        yield from _transform_passthrough(runnable, chunks, config)
    elif isinstance(runnable, Pick):
        for chunk in chunks:
            picked = runnable.invoke(chunk, config)
            if picked is not None:
                yield picked
    elif isinstance(runnable, Assign):
        yield from _transform_assign(runnable, chunks, config)
    elif isinstance(runnable, Branch):
        final = _sum(chunks)
        yield from stream(_choose_branch(runnable, final, config), final, config)
    elif isinstance(runnable, Binding):
        merged = runnable._merge_config(config)
        yield from transform(runnable.bound, chunks, merged, **{**runnable.kwargs, **kwargs})
    elif isinstance(runnable, Generator):
        if runnable.func is None:
            msg = f"{runnable!r} has only an async generator function; use astream() instead"
            raise FastLcelTypeError(msg)
        func = runnable.func
        yield from func(iter(chunks), **_config_kwarg(func, config), **kwargs)
    elif isinstance(runnable, Lambda):
        yield from _transform_lambda(runnable, chunks, config, kwargs)
    elif isinstance(runnable, Runnable):
        yield runnable.invoke(_sum(chunks), config)
    elif hasattr(runnable, "transform"):
        yield from runnable.transform(chunks, config, **kwargs)
    else:  # operator.itemgetter and other plain callables
        yield runnable(_sum(chunks))


def _transform_lambda(
    lam: Lambda, chunks: Iterable[Any], config: Any, kwargs: dict[str, Any]
) -> Iterator[Any]:
    final = _sum(chunks)
    if lam.func is None:
        msg = f"{lam!r} has only an async function; use astream() instead"
        raise FastLcelTypeError(msg)
    output = lam.func(final, **_config_kwarg(lam.func, config), **kwargs)
    if inspect.isgenerator(output) and inspect.isgeneratorfunction(lam.func):
        yield from output
    elif _is_runnable(output):
        yield from stream(output, final, _child_config(config, repr(lam), final))
    else:
        yield output


def _transform_passthrough(
    passthrough: Passthrough, chunks: Iterable[Any], config: Any
) -> Iterator[Any]:
    final = None
    for chunk in chunks:
        final = chunk if final is None else final + chunk
        yield chunk
    passthrough.invoke(final, config)  # its function, if any, sees the whole input


def _transform_assign(assign: Assign, chunks: Iterable[Any], config: Any) -> Iterator[Any]:
    """The input chunks (less the keys the mapper computes) as they come, then the mapper's."""
    mapper = assign.mapper
    computed = set(mapper.steps)
    for_input, for_mapper = _safetee(chunks, 2)
    mapped = _transform_parallel(mapper, for_mapper, config)
    for chunk in for_input:
        if not isinstance(chunk, dict):
            msg = "The input to RunnablePassthrough.assign() must be a dict."
            raise FastLcelValueError(msg)
        kept = AddableDict({k: v for k, v in chunk.items() if k not in computed})
        if kept:
            yield kept
    yield from mapped


def _choose_branch(branch: Branch, input: Any, config: Any) -> Any:
    for condition, runnable in branch.branches:
        if _invoke(condition, input, config):
            return runnable
    return branch.default


def _invoke(step: Any, input: Any, config: Any) -> Any:
    invoke = getattr(step, "invoke", None)
    return step(input) if invoke is None else invoke(input, config)


_DONE = object()


def _safetee(chunks: Iterable[Any], n: int) -> list[Iterator[Any]]:
    """``itertools.tee`` that several threads may consume at once."""
    source = iter(chunks)
    lock = threading.Lock()
    buffers: list[collections.deque[Any]] = [collections.deque() for _ in range(n)]

    def copy(buffer: collections.deque[Any]) -> Iterator[Any]:
        while True:
            if not buffer:
                with lock:
                    if not buffer:
                        try:
                            chunk = next(source)
                        except StopIteration:
                            return
                        for other in buffers:
                            other.append(chunk)
            yield buffer.popleft()

    return [copy(buffer) for buffer in buffers]


def _transform_parallel(parallel: Any, chunks: Iterable[Any], config: Any) -> Iterator[Any]:
    """One-key dicts, in the order the steps produce chunks. Each step transforms its own copy
    of the input stream in a thread (in a copy of the caller's context)."""
    steps = parallel.steps
    out: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def run(key: str, step: Any, copy: Iterator[Any]) -> None:
        try:
            for chunk in transform(step, copy, config):
                out.put((key, chunk))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            out.put((_DONE, exc))
            return
        out.put((_DONE, None))

    copies = _safetee(chunks, len(steps))
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(run, key, step, copy),
            daemon=True,
            name=f"fastlcel-stream-{key}",
        )
        for (key, step), copy in zip(steps.items(), copies)
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    while running:
        key, chunk = out.get()
        if key is _DONE:
            running -= 1
            if chunk is not None:
                raise chunk
            continue
        yield AddableDict({key: chunk})


# --- async streaming --------------------------------------------------------------------------


async def _aiter(chunks: Any) -> AsyncIterator[Any]:
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


async def asingle(value: Any) -> AsyncIterator[Any]:
    yield value


def astream(runnable: Any, input: Any, config: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
    return atransform(runnable, asingle(input), config, **kwargs)


async def atransform(
    runnable: Any, chunks: Any, config: Any = None, **kwargs: Any
) -> AsyncIterator[Any]:
    """The async counterpart of :func:`transform`."""
    chunks = _aiter(chunks)
    if isinstance(runnable, Sequence):
        for step in runnable.steps:
            chunks = atransform(step, chunks, config)
        async for chunk in chunks:
            yield chunk
    elif isinstance(runnable, Parallel):
        async for chunk in _atransform_parallel(runnable, chunks, config):
            yield chunk
    elif isinstance(runnable, Passthrough):
        final = None
        async for chunk in chunks:
            final = chunk if final is None else final + chunk
            yield chunk
        await runnable.ainvoke(final, config)
    elif isinstance(runnable, Pick):
        async for chunk in chunks:
            picked = runnable.invoke(chunk, config)
            if picked is not None:
                yield picked
    elif isinstance(runnable, Assign):
        async for chunk in _atransform_assign(runnable, chunks, config):
            yield chunk
    elif isinstance(runnable, Branch):
        final = await _asum(chunks)
        chosen = runnable.default
        for condition, candidate in runnable.branches:
            if await _ainvoke(condition, final, config):
                chosen = candidate
                break
        async for chunk in astream(chosen, final, config):
            yield chunk
    elif isinstance(runnable, Binding):
        merged = runnable._merge_config(config)
        async for chunk in atransform(
            runnable.bound, chunks, merged, **{**runnable.kwargs, **kwargs}
        ):
            yield chunk
    elif isinstance(runnable, Generator):
        if runnable.afunc is not None:
            afunc = runnable.afunc
            async for chunk in afunc(chunks, **_config_kwarg(afunc, config), **kwargs):
                yield chunk
        else:
            async for chunk in _pooled(transform(runnable, [await _asum(chunks)], config)):
                yield chunk
    elif isinstance(runnable, Lambda):
        async for chunk in _atransform_lambda(runnable, chunks, config, kwargs):
            yield chunk
    elif isinstance(runnable, Runnable):
        yield await runnable.ainvoke(await _asum(chunks), config)
    elif hasattr(runnable, "atransform"):
        async for chunk in runnable.atransform(chunks, config, **kwargs):
            yield chunk
    else:
        yield runnable(await _asum(chunks))


async def _atransform_assign(assign: Assign, chunks: AsyncIterator[Any], config: Any) -> Any:
    """The input chunks (less the keys the mapper computes) as they come, then the mapper's."""
    mapper = assign.mapper
    computed = set(mapper.steps)
    for_mapper: asyncio.Queue[Any] = asyncio.Queue()

    async def mapper_input() -> AsyncIterator[Any]:
        while (chunk := await for_mapper.get()) is not _DONE:
            yield chunk

    mapped = _atransform_parallel(mapper, mapper_input(), config)
    async for chunk in chunks:
        if not isinstance(chunk, dict):
            msg = "The input to RunnablePassthrough.assign() must be a dict."
            raise FastLcelValueError(msg)
        for_mapper.put_nowait(chunk)
        kept = AddableDict({k: v for k, v in chunk.items() if k not in computed})
        if kept:
            yield kept
    for_mapper.put_nowait(_DONE)
    async for chunk in mapped:
        yield chunk


async def _atransform_lambda(
    lam: Lambda, chunks: AsyncIterator[Any], config: Any, kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    final = await _asum(chunks)
    if lam.afunc is None:
        # The sync function runs on the pool (never on the loop); a generator it returns is
        # iterated there chunk by chunk.
        func = lam.func
        call = Lambda(lambda _: [func(final, **_config_kwarg(func, config), **kwargs)])
        [output] = await call.ainvoke(None)
        if inspect.isgenerator(output):
            async for chunk in _pooled(output):
                yield chunk
            return
    else:
        output = lam.afunc(final, **_config_kwarg(lam.afunc, config), **kwargs)
        if inspect.isasyncgen(output):
            async for chunk in output:
                yield chunk
            return
        output = await output
    if _is_runnable(output):
        async for chunk in astream(output, final, _child_config(config, repr(lam), final)):
            yield chunk
    else:
        yield output


async def _pooled(chunks: Iterator[Any]) -> AsyncIterator[Any]:
    """Iterates a sync iterator on fastlcel's pool, one chunk per hop, off the event loop."""
    step = Lambda(lambda it: next(it, _DONE))
    while (chunk := await step.ainvoke(chunks)) is not _DONE:
        yield chunk


async def _atransform_parallel(
    parallel: Any, chunks: AsyncIterator[Any], config: Any
) -> AsyncIterator[Any]:
    """One-key dicts as the steps produce chunks; each step gets its own copy of the input."""
    steps = parallel.steps
    feeds: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in steps]
    out: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()

    async def broadcast() -> None:
        async for chunk in chunks:
            for feed in feeds:
                feed.put_nowait(chunk)
        for feed in feeds:
            feed.put_nowait(_DONE)

    async def drain(feed: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        while (chunk := await feed.get()) is not _DONE:
            yield chunk

    async def run(key: str, step: Any, feed: asyncio.Queue[Any]) -> None:
        try:
            async for chunk in atransform(step, drain(feed), config):
                out.put_nowait((key, chunk))
        except BaseException as exc:
            out.put_nowait((_DONE, exc))
            raise
        out.put_nowait((_DONE, None))

    tasks = [asyncio.ensure_future(broadcast())]
    tasks += [asyncio.ensure_future(run(k, s, f)) for (k, s), f in zip(steps.items(), feeds)]
    try:
        running = len(steps)
        while running:
            key, chunk = await out.get()
            if key is _DONE:
                running -= 1
                if chunk is not None:
                    raise chunk
                continue
            yield AddableDict({key: chunk})
        await tasks[0]  # the input's own failure, if any
    finally:
        for task in tasks:
            task.cancel()
        # Retrieve what the cancelled tasks raised, so that asyncio does not log it.
        await asyncio.gather(*tasks, return_exceptions=True)


# --- as completed -----------------------------------------------------------------------------


def batch_as_completed(
    runnable: Any, inputs: Iterable[Any], config: Any = None, return_exceptions: bool = False
) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` as items finish; the items run as one batch on the pool."""
    inputs = list(inputs)
    configs = config if isinstance(config, (list, tuple)) else [config] * len(inputs)
    done: queue.Queue[tuple[int, Any, bool]] = queue.Queue()

    def item(pair: tuple[int, Any]) -> None:
        index, value = pair
        try:
            done.put((index, runnable.invoke(value, configs[index]), True))
        except Exception as exc:
            done.put((index, exc, False))
            if not return_exceptions:
                raise

    batch_config = configs[0] if configs else None
    # The batch's caller is this thread, in the consumer's context (contextvars).
    worker = threading.Thread(
        target=contextvars.copy_context().run,
        args=(_swallow, Lambda(item).batch, list(enumerate(inputs)), batch_config),
        daemon=True,
        name="fastlcel-as-completed",
    )
    worker.start()
    for _ in inputs:
        index, result, ok = done.get()
        if not ok and not return_exceptions:
            raise result
        yield index, result


def _swallow(batch: Any, items: list[Any], config: Any) -> None:
    try:
        batch(items, config)
    except Exception:  # already handed to the consumer through the queue
        pass


async def abatch_as_completed(
    runnable: Any, inputs: Iterable[Any], config: Any = None, return_exceptions: bool = False
) -> AsyncIterator[tuple[int, Any]]:
    """The async counterpart of :func:`batch_as_completed` (tasks on the running loop)."""
    inputs = list(inputs)
    configs = config if isinstance(config, (list, tuple)) else [config] * len(inputs)
    done: asyncio.Queue[tuple[int, Any, bool]] = asyncio.Queue()

    async def item(pair: tuple[int, Any]) -> None:
        index, value = pair
        try:
            done.put_nowait((index, await runnable.ainvoke(value, configs[index]), True))
        except Exception as exc:
            done.put_nowait((index, exc, False))
            if not return_exceptions:
                raise

    batch_config = configs[0] if configs else None
    everything = asyncio.ensure_future(
        Lambda(item).abatch(list(enumerate(inputs)), batch_config, return_exceptions=True)
    )
    try:
        for _ in inputs:
            index, result, ok = await done.get()
            if not ok and not return_exceptions:
                raise result
            yield index, result
    finally:
        everything.cancel()

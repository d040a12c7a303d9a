"""stream, astream, transform and atransform on every runnable type, chunk by chunk."""

from __future__ import annotations

import asyncio
import functools
import operator
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from conftest import run_async
from fastlcel import AddableDict
from langchain_core.runnables.utils import AddableDict as LangchainAddableDict

GATE_TIMEOUT = 5.0  # seconds a step waits for the consumer before giving up ("late")


async def alist(chunks: Any) -> list:
    return [chunk async for chunk in chunks]


def astream(runnable: Any, input: Any, config: Any = None) -> list:
    return run_async(lambda: alist(runnable.astream(input, config)))


def atransform(runnable: Any, chunks: list) -> list:
    async def source():
        for chunk in chunks:
            await asyncio.sleep(0)
            yield chunk

    return run_async(lambda: alist(runnable.atransform(source())))


def abc(_x: object):
    yield from ["a", "b", "c"]


async def async_abc(_x: object):
    for chunk in ["a", "b", "c"]:
        await asyncio.sleep(0)
        yield chunk


# --------------------------------------------------------------------------- generator functions


def test_a_generator_function_streams_chunk_by_chunk_and_invoke_sums(lcel: ModuleType) -> None:
    lam = lcel.RunnableLambda(abc)
    assert lam.invoke(None) == "abc"
    assert list(lam.stream(None)) == ["a", "b", "c"]
    assert list(lam.transform(iter([None]))) == ["a", "b", "c"]
    assert lam.batch([None, None]) == ["abc", "abc"]


def test_an_async_generator_function(lcel: ModuleType) -> None:
    lam = lcel.RunnableLambda(async_abc)
    assert run_async(lambda: lam.ainvoke(None)) == "abc"
    assert astream(lam, None) == ["a", "b", "c"]
    assert atransform(lam, [None]) == ["a", "b", "c"]


def test_a_plain_function_yields_one_chunk(lcel: ModuleType) -> None:
    lam = lcel.RunnableLambda(lambda x: x * 2)
    assert list(lam.stream(21)) == [42]
    assert astream(lam, 21) == [42]


def test_a_generator_of_dicts_sums_with_addition(lcel: ModuleType) -> None:
    def parts(_x: object):
        yield AddableDict(a="x")
        yield AddableDict(a="y", b=1)

    assert lcel.RunnableLambda(parts).invoke(None) == {"a": "xy", "b": 1}


# --------------------------------------------------------------------------- incremental streaming


def gated_chain(lcel: ModuleType, kind: str, step: Callable[..., Any]) -> Any:
    """A runnable of type ``kind`` whose output streams from ``step``."""
    if kind == "lambda":
        return lcel.RunnableLambda(step)
    if kind == "sequence":
        return lcel.RunnableLambda(lambda x: x) | step | lcel.RunnablePassthrough()
    if kind == "parallel":
        return lcel.RunnableParallel(k=step)
    if kind == "branch":
        return lcel.RunnableBranch((lambda x: True, step), lambda x: "default")
    if kind == "binding":
        return lcel.RunnableLambda(step).with_config(tags=["t"])
    if kind == "router":
        return lcel.RunnableLambda(lambda x: lcel.RunnableLambda(step))
    if kind == "assign":
        return lcel.RunnablePassthrough.assign(k=step)
    if kind == "pick":
        return lcel.RunnablePassthrough.assign(k=step) | lcel.RunnablePick("k")
    raise AssertionError(kind)


EXPECTED_GATED = {
    "lambda": ["a", "b"],
    "sequence": ["a", "b"],
    "parallel": [{"k": "a"}, {"k": "b"}],
    "branch": ["a", "b"],
    "binding": ["a", "b"],
    "router": ["a", "b"],
    "assign": [{"in": 1}, {"k": "a"}, {"k": "b"}],
    "pick": ["a", "b"],
}


@pytest.mark.parametrize("kind", list(EXPECTED_GATED))
def test_stream_yields_each_chunk_before_the_next_is_produced(lcel: ModuleType, kind: str) -> None:
    """The step yields "b" only once the consumer holds "a" (else, after a timeout, "late")."""
    got_first = threading.Event()

    def gated(_x: object):
        yield "a"
        yield "b" if got_first.wait(GATE_TIMEOUT) else "late"

    chunks = []
    for chunk in gated_chain(lcel, kind, gated).stream({"in": 1}):
        chunks.append(chunk)
        if chunk in ("a", {"k": "a"}):
            got_first.set()
    assert chunks == EXPECTED_GATED[kind]


@pytest.mark.parametrize("kind", list(EXPECTED_GATED))
def test_astream_yields_each_chunk_before_the_next_is_produced(lcel: ModuleType, kind: str) -> None:
    async def main() -> list:
        got_first = asyncio.Event()

        async def gated(_x: object):
            yield "a"
            try:
                await asyncio.wait_for(got_first.wait(), GATE_TIMEOUT)
            except asyncio.TimeoutError:
                yield "late"
            else:
                yield "b"

        chunks = []
        async for chunk in gated_chain(lcel, kind, gated).astream({"in": 1}):
            chunks.append(chunk)
            if chunk in ("a", {"k": "a"}):
                got_first.set()
        return chunks

    assert run_async(main) == EXPECTED_GATED[kind]


# --------------------------------------------------------------------------- Parallel


def test_parallel_stream_yields_one_key_dicts_in_completion_order(lcel: ModuleType) -> None:
    """ "a" yields, then "b" (which waits for the consumer to hold a's first chunk), then "a"."""
    got = {"a1": threading.Event(), "b1": threading.Event()}

    def first(_x: object):
        yield "a1"
        yield "a2" if got["b1"].wait(GATE_TIMEOUT) else "late"

    def second(_x: object):
        yield "b1" if got["a1"].wait(GATE_TIMEOUT) else "late"

    par = lcel.RunnableParallel(a=first, b=second)
    chunks = []
    for chunk in par.stream(None):
        chunks.append(chunk)
        for value in chunk.values():
            if value in got:
                got[value].set()
    assert chunks == [{"a": "a1"}, {"b": "b1"}, {"a": "a2"}]
    assert functools.reduce(operator.add, chunks) == {"a": "a1a2", "b": "b1"}


def test_parallel_astream_yields_one_key_dicts_in_completion_order(lcel: ModuleType) -> None:
    async def main() -> list:
        got = {"a1": asyncio.Event(), "b1": asyncio.Event()}

        async def first(_x: object):
            yield "a1"
            await asyncio.wait_for(got["b1"].wait(), GATE_TIMEOUT)
            yield "a2"

        async def second(_x: object):
            await asyncio.wait_for(got["a1"].wait(), GATE_TIMEOUT)
            yield "b1"

        chunks = []
        async for chunk in lcel.RunnableParallel(a=first, b=second).astream(None):
            chunks.append(chunk)
            for value in chunk.values():
                if value in got:
                    got[value].set()
        return chunks

    assert run_async(main) == [{"a": "a1"}, {"b": "b1"}, {"a": "a2"}]


@pytest.mark.parametrize("how", ["stream", "astream"])
def test_the_sum_of_parallel_chunks_is_the_invoke_result(lcel: ModuleType, how: str) -> None:
    gen = lcel.RunnableLambda(abc if how == "stream" else async_abc)
    par = lcel.RunnableParallel(
        gen=gen,
        plain=lambda x: x + 1,
        nested={"inner": gen, "n": lambda x: -x},
        chain=lcel.RunnableLambda(lambda x: x) | gen,
    )
    chunks = list(par.stream(1)) if how == "stream" else astream(par, 1)
    assert all(isinstance(chunk, dict) and len(chunk) == 1 for chunk in chunks)
    assert [chunk["gen"] for chunk in chunks if "gen" in chunk] == ["a", "b", "c"]
    expected = {"gen": "abc", "plain": 2, "nested": {"inner": "abc", "n": -1}, "chain": "abc"}
    assert run_async(lambda: par.ainvoke(1)) == expected
    assert functools.reduce(operator.add, chunks) == expected


def test_parallel_transform_feeds_each_step_the_input_chunks(lcel: ModuleType) -> None:
    """A Passthrough inside a Parallel passes the input stream through chunk by chunk (what
    ``llm | {"answer": RunnablePassthrough(), ...}`` relies on to stream the answer)."""
    par = lcel.RunnableParallel(same=lcel.RunnablePassthrough(), upper=str.upper)

    def values(chunks: list, key: str) -> list:
        return [chunk[key] for chunk in chunks if key in chunk]

    for chunks in (list(par.transform(iter(["ab", "cd"]))), atransform(par, ["ab", "cd"])):
        assert values(chunks, "same") == ["ab", "cd"]
        assert values(chunks, "upper") == ["ABCD"]


def test_assign_transform_passes_the_input_chunks_through(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(n=len)
    chunks = [AddableDict(a="x"), AddableDict(b="y")]
    expected = [{"a": "x"}, {"b": "y"}, {"n": 2}]
    assert list(assign.transform(iter(chunks))) == expected
    assert atransform(assign, chunks) == expected


def test_a_failing_parallel_step_fails_the_stream(lcel: ModuleType) -> None:
    def boom(_x: object):
        yield "x"
        raise KeyError("boom")

    par = lcel.RunnableParallel(ok=abc, bad=boom)
    with pytest.raises(KeyError, match="boom"):
        list(par.stream(None))


# --------------------------------------------------------------------------- coerced generators


def double_each(chunks: Iterator[Any]) -> Iterator[Any]:
    for chunk in chunks:
        yield chunk * 2


async def async_double_each(chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for chunk in chunks:
        yield chunk * 2


@pytest.mark.parametrize("where", ["sequence", "parallel", "branch"])
def test_a_coerced_generator_function_transforms_the_input_stream(
    lcel: ModuleType, where: str
) -> None:
    """langchain_core coerces a generator function (in ``|``, a dict, a Branch) to a
    RunnableGenerator: it gets an iterator of input chunks, not the input (the documented
    ``prompt | model | parser | split_into_list`` idiom). RunnableLambda(gen) gets the input."""
    runnable = {
        "sequence": lambda: lcel.RunnableLambda(lambda x: x) | double_each,
        "parallel": lambda: lcel.RunnableParallel(d=double_each) | operator.itemgetter("d"),
        "branch": lambda: lcel.RunnableBranch((lambda x: True, double_each), str),
    }[where]()
    assert runnable.invoke(3) == 6
    assert list(runnable.stream(3)) == [6]
    assert runnable.batch([1, 2]) == [2, 4]


def test_a_coerced_generator_function_streams_each_input_chunk(lcel: ModuleType) -> None:
    """Streaming, it sees the previous step's chunks; invoked, the previous step's whole output
    as its one input chunk."""
    chain = lcel.RunnableLambda(abc) | double_each
    assert list(chain.stream(None)) == ["aa", "bb", "cc"]
    assert chain.invoke(None) == "abcabc"
    achain = lcel.RunnableLambda(async_abc) | async_double_each
    assert astream(achain, None) == ["aa", "bb", "cc"]
    assert run_async(lambda: achain.ainvoke(None)) == "abcabc"


# --------------------------------------------------------------------------- the other types


def test_a_step_that_cannot_stream_collects_its_input(lcel: ModuleType) -> None:
    chain = lcel.RunnableLambda(lambda x: x) | abc | str.upper
    assert list(chain.stream(None)) == ["ABC"]
    assert astream(lcel.RunnableLambda(lambda x: x) | async_abc | str.upper, None) == ["ABC"]


def test_streaming_steps_in_a_row_stream_through(lcel: ModuleType) -> None:
    chain = lcel.RunnableLambda(abc) | lcel.RunnablePassthrough() | lcel.RunnablePassthrough()
    assert list(chain.stream(None)) == ["a", "b", "c"]
    assert list(chain.transform(iter([None]))) == ["a", "b", "c"]


def test_assign_streams_the_input_then_the_computed_keys(lcel: ModuleType) -> None:
    assign = lcel.RunnablePassthrough.assign(b=abc)
    assert list(assign.stream({"a": 1})) == [{"a": 1}, {"b": "a"}, {"b": "b"}, {"b": "c"}]
    assign = lcel.RunnablePassthrough.assign(b=async_abc)
    assert astream(assign, {"a": 1}) == [{"a": 1}, {"b": "a"}, {"b": "b"}, {"b": "c"}]


def test_pick_streams_the_picked_part_of_each_chunk(lcel: ModuleType) -> None:
    chain = lcel.RunnablePassthrough.assign(b=abc) | lcel.RunnablePick("b")
    assert list(chain.stream({"a": 1})) == ["a", "b", "c"]
    chain = lcel.RunnablePassthrough.assign(b=abc) | lcel.RunnablePick(["a", "b"])
    assert list(chain.stream({"a": 1})) == [{"a": 1}, {"b": "a"}, {"b": "b"}, {"b": "c"}]


def test_branch_streams_the_chosen_runnable(lcel: ModuleType) -> None:
    branch = lcel.RunnableBranch((lambda x: x == "gen", abc), lambda x: "plain")
    assert list(branch.stream("gen")) == ["a", "b", "c"]
    assert list(branch.stream("other")) == ["plain"]
    abranch = lcel.RunnableBranch((lambda x: x == "gen", async_abc), lambda x: "plain")
    assert astream(abranch, "gen") == ["a", "b", "c"]


def test_a_lambda_returning_a_runnable_streams_that_runnable(lcel: ModuleType) -> None:
    route = lcel.RunnableLambda(lambda x: lcel.RunnableLambda(abc) | lcel.RunnablePassthrough())
    assert list(route.stream(None)) == ["a", "b", "c"]


def test_an_async_lambda_returning_a_runnable_astreams_that_runnable(lcel: ModuleType) -> None:
    async def route(_x: object):
        return lcel.RunnableLambda(async_abc)

    assert astream(lcel.RunnableLambda(route), None) == ["a", "b", "c"]


def test_a_sync_lambda_returning_an_async_runnable_astreams_it(lcel: ModuleType) -> None:
    route = lcel.RunnableLambda(lambda x: lcel.RunnableLambda(async_abc))
    assert astream(route, None) == ["a", "b", "c"]


def test_a_binding_streams_with_its_config_and_kwargs(lcel: ModuleType) -> None:
    def tagged(x: str, config: dict, times: int = 1):
        for tag in config["tags"] * times:
            yield [tag]

    bound = lcel.RunnableLambda(tagged).bind(times=2).with_config(tags=["own"])
    assert list(bound.stream("x", {"tags": ["call"]})) == [["call"], ["own"], ["call"], ["own"]]


TRANSFORMS = {
    "lambda": (lambda L: L.RunnableLambda(lambda s: s * 2), ["ab", "cd"], ["abcdabcd"]),
    "passthrough": (lambda L: L.RunnablePassthrough(), ["ab", "cd"], ["ab", "cd"]),
    "sequence": (
        lambda L: L.RunnablePassthrough() | L.RunnablePassthrough(),
        ["ab", "cd"],
        ["ab", "cd"],
    ),
    "pick": (lambda L: L.RunnablePick("a"), [{"a": "x"}, {"a": "y"}, {"b": 1}], ["x", "y"]),
    "assign": (lambda L: L.RunnablePassthrough.assign(n=len), [{"a": 1}], [{"a": 1}, {"n": 1}]),
    "parallel": (lambda L: L.RunnableParallel(n=len), [[1]], [{"n": 1}]),
    "branch": (lambda L: L.RunnableBranch((bool, str.upper), str), ["ab", "cd"], ["ABCD"]),
    "binding": (lambda L: L.RunnablePassthrough().with_config(tags=["t"]), ["a", "b"], ["a", "b"]),
}


@pytest.mark.parametrize("kind", list(TRANSFORMS))
def test_transform_and_atransform_on_every_type(lcel: ModuleType, kind: str) -> None:
    build, chunks, expected = TRANSFORMS[kind]
    runnable = build(lcel)
    assert list(runnable.transform(iter(chunks))) == expected
    assert atransform(runnable, chunks) == expected


def test_chunks_before_a_failure_are_delivered(lcel: ModuleType) -> None:
    def fails_late(_x: object):
        yield "a"
        yield "b"
        raise ValueError("late failure")

    chain = lcel.RunnableLambda(lambda x: x) | fails_late | lcel.RunnablePassthrough()
    received = []
    with pytest.raises(ValueError, match="late failure"):
        for chunk in chain.stream(None):
            received.append(chunk)
    assert received == ["a", "b"]


def test_stopping_early_does_not_hang(lcel: ModuleType) -> None:
    def endless(_x: object):
        n = 0
        while n < 10_000:
            n += 1
            yield [n]

    par = lcel.RunnableParallel(a=endless, b=endless)
    stream = par.stream(None)
    first = next(stream)
    stream.close()
    assert len(first) == 1


def test_stream_passes_a_complete_config(lcel: ModuleType) -> None:
    """As in invoke, a function's config always has tags, metadata and configurable."""

    def read(_x: object, config: dict) -> tuple:
        return config["tags"], config["metadata"], config["configurable"]

    chain = lcel.RunnableLambda(lambda x: x) | read
    assert chain.invoke(None) == ([], {}, {})
    assert list(chain.stream(None)) == [([], {}, {})]
    assert astream(chain, None) == [([], {}, {})]


def test_addable_dict_adds_like_langchains() -> None:
    left, right = {"a": "x", "n": None, "l": [1]}, {"a": "y", "n": 2, "b": None, "l": [2]}
    ours = AddableDict(left) + right
    theirs = LangchainAddableDict(left) + right
    assert ours == theirs == {"a": "xy", "n": 2, "b": None, "l": [1, 2]}
    assert (right + AddableDict(left)) == (right + LangchainAddableDict(left))


# ------------------------------------------------------------ langchain_core's chunk semantics


class AsyncGenerating:
    """An object whose ``__call__`` is an async generator function."""

    async def __call__(self, chunks: Any):
        async for _chunk in chunks:
            for n in (1, 2, 3):
                yield n


def test_a_callable_object_with_an_async_generator_call(lcel: ModuleType) -> None:
    gen = lcel.RunnableGenerator(AsyncGenerating())
    assert run_async(lambda: gen.ainvoke(None)) == 6
    assert astream(gen, None) == [1, 2, 3]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([{"a": 1}, {"b": 2}], [{"b": 2}]),  # dicts cannot be added: the last one is kept
        (["x", None], [None]),
        ([None, "y"], ["y"]),
        (["x", "y"], ["xy"]),
    ],
)
def test_a_lambda_transforms_the_sum_of_its_input_or_the_last_chunk(
    lcel: ModuleType, chunks: list, expected: list
) -> None:
    lam = lcel.RunnableLambda(lambda x: x)
    assert list(lam.transform(iter(chunks))) == expected
    assert atransform(lam, chunks) == expected


def test_passthrough_with_a_function_passes_chunks_that_cannot_be_added(lcel: ModuleType) -> None:
    seen: list = []
    passthrough = lcel.RunnablePassthrough(seen.append)
    chunks = [{"a": 1}, {"b": 2}]
    assert list(passthrough.transform(iter(chunks))) == chunks
    assert seen == [{"b": 2}]


def test_fallbacks_stream_the_runnable_that_succeeds_chunk_by_chunk(lcel: ModuleType) -> None:
    def fails(_x: object):
        raise ValueError("first fails")
        yield  # a generator function

    async def afails(_x: object):
        raise ValueError("first fails")
        yield  # an async generator function

    chain = lcel.RunnableLambda(fails, afunc=afails).with_fallbacks(
        [lcel.RunnableLambda(abc, afunc=async_abc)]
    )
    assert list(chain.stream(None)) == ["a", "b", "c"]
    assert astream(chain, None) == ["a", "b", "c"]


def test_an_error_upstream_is_raised_after_a_step_stops_reading(lcel: ModuleType) -> None:
    def up(chunks: Iterator[Any]):
        for _ in chunks:
            yield "a"
            yield "b"
            raise LookupError("up failed")

    def down(chunks: Iterator[Any]):
        yield next(iter(chunks))

    async def aup(chunks: AsyncIterator[Any]):
        async for _ in chunks:
            yield "a"
            yield "b"
            raise LookupError("up failed")

    async def adown(chunks: AsyncIterator[Any]):
        async for chunk in chunks:
            yield chunk
            return

    chain = lcel.RunnableGenerator(up, aup) | lcel.RunnableGenerator(down, adown)
    with pytest.raises(LookupError, match="up failed"):
        list(chain.stream(None))
    with pytest.raises(LookupError, match="up failed"):
        astream(chain, None)


def _dict_chunks(x: int) -> Iterator[dict[str, int]]:
    yield {"a": x}
    yield {"b": x}


def test_chunks_that_do_not_add_up_leave_the_last_one(lcel: ModuleType) -> None:
    """A generator of plain dicts (which `+` cannot add): a step after it, or invoke of it,
    gets the last chunk, as langchain_core's `_ChunkAccumulator` keeps it."""
    assert lcel.RunnableLambda(_dict_chunks).invoke(1) == {"b": 1}

    def each(chunks: Iterator[int]) -> Iterator[dict[str, int]]:
        for chunk in chunks:
            yield from _dict_chunks(chunk)

    assert list((each | lcel.RunnableLambda(lambda d: d)).transform(iter([1, 2]))) == [{"b": 2}]

"""astream_events (v1, v2), stream_events, astream_log, with_listeners and
RunnableWithMessageHistory on fastlcel chains: langchain_core's own implementations, fed by the
runs fastlcel opens, so every event is the one langchain_core gives for the same chain (in any
order where steps run at once)."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import pytest
from conftest import run_async

pytestmark = [
    pytest.mark.timeout(30),
    # astream_log and astream_events v1 are deprecated in langchain_core; the warning is its.
    pytest.mark.filterwarnings(
        "ignore::langchain_core._api.deprecation.LangChainDeprecationWarning"
    ),
]


def add_one(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def words(chunks: Any):
    for chunk in chunks:
        yield from (w + " " for w in str(chunk).split())


async def awords(chunks: Any):
    async for chunk in chunks:
        for word in str(chunk).split():
            yield word + " "


def fails(x: Any) -> Any:
    raise ValueError("nope")


PROGRAMS = {
    "sequence with a parallel": (
        lambda lc: lc.RunnableLambda(add_one) | {"a": double, "b": add_one},
        1,
    ),
    "generator": (lambda lc: lc.RunnableLambda(str) | lc.RunnableGenerator(words, awords), 12),
    "assign and pick": (
        lambda lc: lc.RunnablePassthrough.assign(b=lambda d: d["a"] + 1).pick(["a", "b"]),
        {"a": 1},
    ),
    "branch": (lambda lc: lc.RunnableBranch((lambda x: x > 0, double), add_one), 3),
    # A binding hands the events to its runnable under its merged config (the run name).
    "with_config(run_name)": (
        lambda lc: lc.RunnableLambda(add_one).with_config(run_name="named", tags=["t"]),
        1,
    ),
}


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_value(v)}" for k, v in sorted(value.items())) + "}"
    return repr(value)


def _event(event: dict[str, Any]) -> tuple[Any, ...]:
    return (
        event["event"],
        event["name"],
        tuple(sorted(event.get("tags", []))),
        _value(event.get("metadata", {})),
        _value(event.get("data", {})),
    )


async def _events(runnable: Any, x: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    events = [_event(e) async for e in runnable.astream_events(x, **kwargs)]
    return sorted(events, key=repr)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_astream_events_match_langchain_core(name: str, version: str) -> None:
    import fastlcel
    from langchain_core import runnables as lc

    build, x = PROGRAMS[name]
    theirs = run_async(lambda: _events(build(lc), x, version=version))
    ours = run_async(lambda: _events(build(fastlcel), x, version=version))
    assert ours == theirs


@pytest.mark.parametrize(
    "filters",
    [
        {"include_names": ["double"]},
        {"include_tags": ["seq:step:1"]},
        {"exclude_types": ["chain"]},
        {"exclude_names": ["add_one"], "include_types": ["chain"]},
    ],
)
def test_astream_events_filters(filters: dict[str, Any]) -> None:
    import fastlcel
    from langchain_core import runnables as lc

    build, x = PROGRAMS["sequence with a parallel"]
    theirs = run_async(lambda: _events(build(lc), x, version="v2", **filters))
    ours = run_async(lambda: _events(build(fastlcel), x, version="v2", **filters))
    assert ours == theirs


def test_astream_events_of_a_failing_chain(lcel: ModuleType) -> None:
    chain = lcel.RunnableLambda(add_one) | fails

    async def collect() -> list[str]:
        seen = []
        with pytest.raises(ValueError, match="nope"):
            async for event in chain.astream_events(1, version="v2"):
                seen.append(event["event"])
        return seen

    assert run_async(collect)[:2] == ["on_chain_start", "on_chain_start"]


def test_stream_events_raises_as_langchain_cores_does(lcel: ModuleType) -> None:
    """langchain_core's sync stream_events supports only v3, on chat models and graphs."""
    chain = lcel.RunnableLambda(add_one) | double
    with pytest.raises(NotImplementedError, match="stream_events"):
        list(chain.stream_events(1, version="v2"))


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_astream_log_final_state_matches_langchain_core(name: str) -> None:
    import fastlcel
    from langchain_core import runnables as lc

    build, x = PROGRAMS[name]

    async def last_state(runnable: Any) -> tuple[Any, list[str], list[Any]]:
        state: Any = None
        async for log in runnable.astream_log(x, diff=False):
            state = log.state
        names = sorted(entry["name"] for entry in state["logs"].values())
        return state["final_output"], names, state["streamed_output"]

    ours = run_async(lambda: last_state(build(fastlcel)))
    theirs = run_async(lambda: last_state(build(lc)))
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    assert sorted(map(repr, ours[2])) == sorted(map(repr, theirs[2]))


@pytest.mark.parametrize("async_listeners", [False, True])
def test_with_listeners(lcel: ModuleType, async_listeners: bool) -> None:
    seen: list[tuple[str, Any]] = []

    if async_listeners:

        async def on_start(run: Any) -> None:
            seen.append(("start", run.name))

        async def on_end(run: Any) -> None:
            seen.append(("end", run.outputs))

        chain = (lcel.RunnableLambda(add_one) | double).with_alisteners(
            on_start=on_start, on_end=on_end
        )
        assert run_async(lambda: chain.ainvoke(1)) == 4
    else:
        chain = (lcel.RunnableLambda(add_one) | double).with_listeners(
            on_start=lambda run: seen.append(("start", run.name)),
            on_end=lambda run: seen.append(("end", run.outputs)),
        )
        assert chain.invoke(1) == 4
    assert seen == [("start", "RunnableSequence"), ("end", {"output": 4})]


def test_runnable_with_message_history_wraps_a_fastlcel_chain(lcel: ModuleType) -> None:
    from langchain_core.chat_history import InMemoryChatMessageHistory
    from langchain_core.messages import AIMessage
    from langchain_core.runnables.history import RunnableWithMessageHistory

    stores: dict[str, InMemoryChatMessageHistory] = {}

    def history(session_id: str) -> InMemoryChatMessageHistory:
        return stores.setdefault(session_id, InMemoryChatMessageHistory())

    def reply(inputs: dict[str, Any]) -> AIMessage:
        return AIMessage(content=f"{inputs['question']} ({len(inputs['history'])} before)")

    chain = lcel.RunnableLambda(reply)
    with_history = RunnableWithMessageHistory(
        chain, history, input_messages_key="question", history_messages_key="history"
    )
    config = {"configurable": {"session_id": "s"}}
    assert with_history.invoke({"question": "hi"}, config).content == "hi (0 before)"
    assert with_history.invoke({"question": "again"}, config).content == "again (2 before)"
    result = asyncio.run(with_history.ainvoke({"question": "third"}, config))
    assert result.content == "third (4 before)"
    assert [m.content for m in stores["s"].messages][-2:] == ["third", "third (4 before)"]


def test_astream_events_of_a_map_raises_as_langchain_cores_does(lcel: ModuleType) -> None:
    mapped = lcel.RunnableLambda(add_one).map()

    async def events() -> None:
        async for _ in mapped.astream_events([1, 2], version="v2"):
            pass

    with pytest.raises(NotImplementedError, match="RunnableEach does not support"):
        run_async(events)

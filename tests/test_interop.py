"""Interop with langchain_core: `|` in both directions, fastlcel runnables as langchain steps,
prompts, chat models and parsers in fastlcel chains, callbacks reaching langchain steps."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from types import ModuleType
from typing import Any
from uuid import UUID

import fastlcel
import pytest
from conftest import run_async
from langchain_core import runnables as lc
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate


async def alist(chunks: Any) -> list:
    return [chunk async for chunk in chunks]


def add_one(x: int) -> int:
    return x + 1


def times_two(x: int) -> int:
    return x * 2


def repeat_twice(x: int):
    yield str(x)
    yield str(x)


async def arepeat_twice(x: int):
    yield str(x)
    yield str(x)


def lc_repeat() -> Any:
    return lc.RunnableLambda(repeat_twice, afunc=arepeat_twice)


def fast_repeat() -> Any:
    return fastlcel.Lambda(repeat_twice, afunc=arepeat_twice)


def every_way(runnable: Any, input: Any) -> dict[str, Any]:
    """The results of invoke, ainvoke, batch, abatch, stream and astream on ``input``."""
    return {
        "invoke": runnable.invoke(input),
        "ainvoke": run_async(lambda: runnable.ainvoke(input)),
        "batch": runnable.batch([input, input]),
        "abatch": run_async(lambda: runnable.abatch([input, input])),
        "stream": list(runnable.stream(input)),
        "astream": run_async(lambda: alist(runnable.astream(input))),
    }


EVERY_WAY_3 = {
    "invoke": "88",
    "ainvoke": "88",
    "batch": ["88", "88"],
    "abatch": ["88", "88"],
    "stream": ["8", "8"],
    "astream": ["8", "8"],
}


# --------------------------------------------------------------------------- registration


def test_fastlcel_runnables_are_langchain_runnables() -> None:
    for runnable in (
        fastlcel.Lambda(add_one),
        fastlcel.Parallel(a=add_one),
        fastlcel.Lambda(add_one) | times_two,
        fastlcel.Passthrough(),
        fastlcel.Passthrough.assign(a=add_one),
        fastlcel.Pick("a"),
        fastlcel.Branch((bool, add_one), times_two),
        fastlcel.Lambda(add_one).bind(k=1),
    ):
        assert isinstance(runnable, lc.Runnable), type(runnable)


def test_registration_when_langchain_core_is_imported_after_fastlcel() -> None:
    code = textwrap.dedent(
        """
        import sys
        import fastlcel
        assert "langchain_core" not in sys.modules, "fastlcel imported langchain_core"
        from langchain_core.runnables import Runnable, RunnableLambda
        assert isinstance(fastlcel.Lambda(len), Runnable)
        print((RunnableLambda(str.upper) | fastlcel.Lambda(len)).invoke("abc"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"


# --------------------------------------------------------------------------- `|` both ways


@pytest.mark.parametrize(
    ("build", "outer"),
    [
        (lambda: lc.RunnableLambda(add_one) | fastlcel.Lambda(times_two) | lc_repeat(), "lc"),
        (lambda: fastlcel.Lambda(add_one) | lc.RunnableLambda(times_two) | fast_repeat(), "fast"),
        (lambda: add_one | fastlcel.Lambda(times_two) | lc_repeat(), "fast"),
        (lambda: lc.RunnableLambda(add_one).pipe(fastlcel.Lambda(times_two), lc_repeat()), "lc"),
        (lambda: fastlcel.Lambda(add_one).pipe(lc.RunnableLambda(times_two), lc_repeat()), "fast"),
        (lambda: lc.RunnableSequence(fastlcel.Lambda(add_one), times_two, fast_repeat()), "lc"),
        (lambda: fastlcel.Sequence(lc.RunnableLambda(add_one), times_two, lc_repeat()), "fast"),
    ],
    ids=["lc|fast", "fast|lc", "f|fast|lc", "lc.pipe", "fast.pipe", "lc-ctor", "fast-ctor"],
)
def test_mixed_chains_work_every_way(build, outer: str) -> None:
    chain = build()
    assert isinstance(chain, lc.RunnableSequence if outer == "lc" else fastlcel.Sequence)
    assert every_way(chain, 3) == EVERY_WAY_3


def test_fastlcel_steps_inside_langchain_composites() -> None:
    par = lc.RunnableParallel(
        fast=fastlcel.Lambda(times_two), chain=fastlcel.Lambda(add_one) | add_one
    )
    assert par.invoke(1) == {"fast": 2, "chain": 3}
    assert run_async(lambda: par.ainvoke(1)) == {"fast": 2, "chain": 3}
    branch = lc.RunnableBranch(
        (fastlcel.Lambda(lambda x: x > 0), fastlcel.Lambda(times_two)), add_one
    )
    assert branch.batch([5, -5]) == [10, -4]
    assign = lc.RunnablePassthrough.assign(n=fastlcel.Pick("a"))
    assert assign.invoke({"a": 1}) == {"a": 1, "n": 1}
    route = lc.RunnableLambda(lambda x: fastlcel.Lambda(times_two))
    assert route.invoke(4) == 8


def test_langchain_steps_inside_fastlcel_composites() -> None:
    lc_bound = lc.RunnableLambda(lambda x, k=0: x + k).bind(k=10)
    chain = fastlcel.Parallel(
        bound=lc_bound,
        configured=lc.RunnableLambda(lambda x, config: config["tags"]).with_config(tags=["own"]),
        seq=lc.RunnableLambda(add_one) | lc.RunnableLambda(times_two),
    ) | fastlcel.Branch((lambda d: d["bound"] > 10, fastlcel.Pick(["seq", "configured"])), str)
    assert chain.invoke(1) == {"seq": 4, "configured": ["own"]}
    assert run_async(lambda: chain.ainvoke(1)) == {"seq": 4, "configured": ["own"]}


@pytest.mark.parametrize(
    "introspect",
    [
        lambda: (lc.RunnableLambda(add_one) | fastlcel.Lambda(times_two)).output_schema,
        lambda: lc.RunnableParallel(a=fastlcel.Lambda(times_two)).input_schema.model_json_schema(),
        lambda: (lc.RunnableLambda(add_one) | fastlcel.Lambda(times_two)).config_specs,
        lambda: (lc.RunnableLambda(add_one) | fastlcel.Lambda(times_two)).get_graph(),
    ],
    ids=["output_schema", "input_schema", "config_specs", "get_graph"],
)
def test_langchain_can_introspect_a_composite_with_fastlcel_steps(introspect) -> None:
    """langchain_core's composites ask their steps for schemas, config specs and graphs."""
    assert introspect() is not None


def test_dicts_on_either_side_of_a_mixed_pipe() -> None:
    left = {"a": fastlcel.Lambda(add_one), "b": times_two} | lc.RunnableLambda(
        lambda d: d["a"] + d["b"]
    )
    assert left.invoke(3) == 10
    right = lc.RunnableLambda(add_one) | {"a": fastlcel.Lambda(times_two)}
    assert right.invoke(1) == {"a": 4}
    assert (fastlcel.Lambda(add_one) | {"lc": lc.RunnableLambda(times_two)}).invoke(1) == {"lc": 4}


# --------------------------------------------------------------------------- prompts, models


def prompt_model_parser_chain(lcel: ModuleType, model: Any) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer in {style}."), ("human", "{question}")]
    )
    return (
        lcel.RunnableParallel(question=lcel.RunnablePassthrough(), style=lambda q: "one word")
        | prompt
        | model
        | StrOutputParser()
    )


def test_prompt_model_parser_chain_with_either_library(lcel: ModuleType) -> None:
    chain = prompt_model_parser_chain(lcel, FakeListChatModel(responses=["blue sky"]))
    assert every_way(chain, "colour?") == {
        "invoke": "blue sky",
        "ainvoke": "blue sky",
        "batch": ["blue sky", "blue sky"],
        "abatch": ["blue sky", "blue sky"],
        "stream": list("blue sky"),
        "astream": list("blue sky"),
    }


def test_a_model_fan_out_and_a_summary(lcel: ModuleType) -> None:
    prompt = ChatPromptTemplate.from_template("Q: {q}")
    models = {
        name: FakeListChatModel(responses=[f"{name} says hi"]) | StrOutputParser()
        for name in ("fast", "deep")
    }
    chain = (
        {"q": lcel.RunnablePassthrough()}
        | lcel.RunnablePassthrough.assign(answers=prompt | lcel.RunnableParallel(models))
        | lcel.RunnableLambda(
            lambda d: f"{d['q']}: {d['answers']['fast']} / {d['answers']['deep']}"
        )
    )
    assert chain.invoke("hello") == "hello: fast says hi / deep says hi"
    assert run_async(lambda: chain.ainvoke("hello")) == "hello: fast says hi / deep says hi"


def test_streaming_a_fan_out_of_models_yields_tokens_per_key(lcel: ModuleType) -> None:
    prompt = ChatPromptTemplate.from_template("Q: {q}")
    chain = prompt | lcel.RunnableParallel(
        a=FakeListChatModel(responses=["xy"]) | StrOutputParser(),
        b=FakeListChatModel(responses=["z"]) | StrOutputParser(),
    )
    for chunks in (
        list(chain.stream({"q": "?"})),
        run_async(lambda: alist(chain.astream({"q": "?"}))),
    ):
        assert sorted(c for chunk in chunks for c in chunk.items()) == [
            ("a", "x"),
            ("a", "y"),
            ("b", "z"),
        ]


def test_models_in_a_fastlcel_parallel_run_concurrently() -> None:
    models = {
        f"m{i}": FakeListChatModel(responses=[str(i)], sleep=0.2) | StrOutputParser()
        for i in range(3)
    }
    par = fastlcel.Parallel(models)
    start = time.perf_counter()
    assert par.invoke("hi") == {"m0": "0", "m1": "1", "m2": "2"}
    assert time.perf_counter() - start < 0.5


# --------------------------------------------------------------------------- callbacks


class Recorder(BaseCallbackHandler):
    """Records (event, name, tags, parent) for chain and chat-model runs."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.names: dict[UUID, str] = {}

    def _start(self, kind: str, run_id: UUID, parent: UUID | None, name: str, tags: Any) -> None:
        self.names[run_id] = name
        self.events.append((f"{kind}_start", name, tuple(sorted(tags or ())), parent))

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw) -> None:
        self._start("chain", run_id, parent_run_id, kw.get("name"), kw.get("tags"))

    def on_chain_end(self, outputs, *, run_id, **kw) -> None:
        self.events.append(("chain_end", self.names[run_id]))

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kw):
        self._start("chat", run_id, parent_run_id, "chat_model", kw.get("tags"))

    def on_llm_end(self, response, *, run_id, **kw) -> None:
        self.events.append(("chat_end", self.names[run_id]))

    def named(self, name: str) -> list[tuple]:
        return [e for e in self.events if e[1] == name]

    def parent_name(self, name: str) -> str | None:
        (start,) = [e for e in self.events if e[0].endswith("_start") and e[1] == name]
        return self.names.get(start[3]) if start[3] else None


def calls(runnable: Any, how: str, config: dict) -> Any:
    if how == "invoke":
        return runnable.invoke(1, config)
    if how == "ainvoke":
        return run_async(lambda: runnable.ainvoke(1, config))
    if how == "batch":
        return runnable.batch([1], config)[0]
    if how == "abatch":
        return run_async(lambda: runnable.abatch([1], config))[0]
    if how == "stream":
        return list(runnable.stream(1, config))[-1]
    return run_async(lambda: alist(runnable.astream(1, config)))[-1]


HOWS = ["invoke", "ainvoke", "batch", "abatch", "stream", "astream"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    "build",
    [
        lambda step: fastlcel.Lambda(add_one) | step,
        lambda step: fastlcel.Parallel(x=step) | fastlcel.Pick("x"),
        lambda step: fastlcel.Branch((lambda x: True, step), add_one),
        lambda step: fastlcel.Lambda(lambda x: step),
        lambda step: (fastlcel.Lambda(add_one) | step).with_config(tags=["own"]),
    ],
    ids=["sequence", "parallel", "branch", "router", "binding"],
)
def test_a_callback_handler_sees_the_langchain_steps_run(build, how: str) -> None:
    recorder = Recorder()
    step = lc.RunnableLambda(times_two, name="lc_step")
    calls(build(step), how, {"callbacks": [recorder], "tags": ["caller"]})
    starts = [e for e in recorder.named("lc_step") if e[0] == "chain_start"]
    ends = [e for e in recorder.named("lc_step") if e[0] == "chain_end"]
    assert len(starts) == 1
    assert len(ends) == 1
    assert "caller" in starts[0][2]


@pytest.mark.parametrize("how", HOWS)
def test_a_chat_model_step_reports_to_the_handler(how: str) -> None:
    recorder = Recorder()
    chain = (
        fastlcel.Lambda(lambda x: f"question {x}")
        | FakeListChatModel(responses=["ok"])
        | StrOutputParser()
    )
    result = calls(chain, how, {"callbacks": [recorder]})
    assert result in ("ok", "k")  # stream and astream return the last chunk
    assert [e[0] for e in recorder.named("chat_model")] == ["chat_start", "chat_end"]
    assert [e[0] for e in recorder.named("StrOutputParser")] == ["chain_start", "chain_end"]


@pytest.mark.parametrize("how", HOWS)
def test_fastlcel_steps_are_runs_between_langchain_runs(how: str) -> None:
    """A fastlcel step inside a langchain_core chain is a run of its own, with its position tag,
    and the langchain runs inside it are its children."""
    recorder = Recorder()
    inner = lc.RunnableLambda(times_two, name="inner")
    middle = fastlcel.Parallel(x=inner).with_config(run_name="middle") | fastlcel.Pick("x")
    middle = middle.with_config(run_name="fastlcel chain")
    outer = lc.RunnableSequence(lc.RunnableLambda(add_one, name="first"), middle, name="outer")
    assert calls(outer, how, {"callbacks": [recorder]}) == 4
    assert recorder.parent_name("first") == "outer"
    assert recorder.parent_name("fastlcel chain") == "outer"
    assert recorder.parent_name("middle") == "fastlcel chain"
    assert recorder.parent_name("inner") == "middle"
    (start,) = [e for e in recorder.events if e[0] == "chain_start" and e[1] == "fastlcel chain"]
    assert start[2] == ("seq:step:2",)


def test_run_name_names_the_caller_not_the_langchain_steps_inside() -> None:
    """langchain_core drops ``run_name`` from the config it hands to child steps."""
    recorder = Recorder()
    first = lc.RunnableLambda(add_one, name="first")
    second = lc.RunnableLambda(times_two, name="second")
    chain = fastlcel.Parallel(a=first) | fastlcel.Pick("a") | second
    assert chain.invoke(1, {"callbacks": [recorder], "run_name": "my_chain"}) == 4
    assert chain.with_config(run_name="my_chain").invoke(1, {"callbacks": [recorder]}) == 4
    started = [e[1] for e in recorder.events if e[0] == "chain_start"]
    assert started.count("first") == 2
    assert started.count("second") == 2


def callbacks_handlers(callbacks: Any) -> list:
    """The handlers of a config's callbacks: a list, or a langchain callback manager."""
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, list) else list(callbacks.handlers)


@pytest.mark.parametrize("how", HOWS)
def test_a_function_with_a_config_parameter_sees_the_callbacks(how: str) -> None:
    recorder = Recorder()

    def sees(_x: object, config: dict) -> bool:
        return recorder in callbacks_handlers(config.get("callbacks"))

    chain = fastlcel.Lambda(add_one) | {"seen": sees} | fastlcel.Pick("seen")
    assert calls(chain, how, {"callbacks": [recorder]}) is True


def test_callbacks_given_with_with_config_reach_the_langchain_step() -> None:
    recorder = Recorder()
    chain = (fastlcel.Lambda(add_one) | lc.RunnableLambda(times_two, name="lc_step")).with_config(
        callbacks=[recorder]
    )
    assert chain.invoke(1) == 4
    assert [e[0] for e in recorder.named("lc_step")] == ["chain_start", "chain_end"]


def test_a_failing_langchain_step_reports_its_error_and_raises() -> None:
    errors: list[BaseException] = []

    class ErrorRecorder(BaseCallbackHandler):
        def on_chain_error(self, error, **kw) -> None:
            errors.append(error)

    def boom(_x: object) -> None:
        raise ValueError("from langchain step")

    chain = fastlcel.Lambda(add_one) | lc.RunnableLambda(boom)
    with pytest.raises(ValueError, match="from langchain step"):
        chain.invoke(1, {"callbacks": [ErrorRecorder()]})
    # The failing run and the fastlcel sequence's run around it, as with langchain_core alone.
    assert [str(e) for e in errors] == ["from langchain step"] * 2


class SyncOnlyStep(lc.RunnableSerializable[Any, Any]):
    """A langchain_core runnable with only ``invoke`` (its ``ainvoke`` is the default)."""

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return ("sync", input)


class PlainSyncOnly:
    """Any object with only ``invoke``: fastlcel accepts it as a step."""

    def invoke(self, input: Any, config: Any = None) -> Any:
        return ("sync", input)


def test_an_awaited_chain_runs_a_sync_only_step_on_its_sync_path(lcel: ModuleType) -> None:
    async def double(x: int) -> int:
        return 2 * x

    chain = lcel.RunnableLambda(double) | SyncOnlyStep()
    assert run_async(lambda: chain.ainvoke(1)) == ("sync", 2)
    assert run_async(lambda: chain.abatch([1, 2])) == [("sync", 2), ("sync", 4)]
    if lcel is fastlcel:
        plain = fastlcel.Lambda(double) | PlainSyncOnly()
        assert run_async(lambda: plain.ainvoke(1)) == ("sync", 2)

"""LangSmith tracing with the real `langsmith` client, pointed at an HTTP server on 127.0.0.1
that records what the client uploads: for the same everyday chains, fastlcel and
langchain_core post the same run trees (names, run types, tags, parents, inputs, outputs,
errors)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from uuid import uuid4

import pytest
from langsmith_server import Server

langsmith = pytest.importorskip("langsmith")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


def _value(value: Any) -> str:
    if isinstance(value, str) and value.startswith("lc_run--"):
        return "<id of a model's message, from its run id>"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_value(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def trees(runs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The posted runs as trees (children as sets), ids and times left out."""
    by_parent: dict[Any, list[dict[str, Any]]] = {}
    for run in runs:
        by_parent.setdefault(run.get("parent_run_id"), []).append(run)

    def node(run: dict[str, Any]) -> tuple[Any, ...]:
        error = run.get("error")
        children = sorted((node(c) for c in by_parent.get(run["id"], [])), key=repr)
        return (
            run["name"],
            run["run_type"],
            tuple(sorted(run.get("tags") or [])),
            _value(run.get("inputs")),
            _value(run.get("outputs")),
            error.strip().splitlines()[-1] if error else None,
            tuple(children),
        )

    return sorted((node(run) for run in by_parent.get(None, [])), key=repr)


def traced(server: Server, run: Any) -> tuple[Any, list[tuple[Any, ...]]]:
    """Runs `run()` with LangSmith tracing to `server`; its outcome and the posted run trees."""
    from langsmith.run_helpers import tracing_context

    client = langsmith.Client(api_url=server.url, api_key="test")
    with tracing_context(enabled=True, client=client, project_name="fastlcel-tests"):
        try:
            outcome = run()
        except Exception as exc:
            outcome = f"raised {exc!r}"
    client.flush()
    return outcome, trees(server.take())


def add_one(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def fails(x: Any) -> Any:
    raise ValueError(f"no {x}")


def fails_once() -> Any:
    calls = []

    def fails_once(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return x

    return fails_once


def model_chain(lc: ModuleType) -> Any:
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    model = FakeListChatModel(responses=["LCEL is a language"])
    return (
        lc.RunnableParallel(question=lc.RunnablePassthrough())
        | prompt
        | model
        | (StrOutputParser())
    )


async def _alist(chunks: Any) -> list[Any]:
    return [chunk async for chunk in chunks]


# The thirteen everyday chains: name -> (program of a library's namespace, call).
CHAINS: dict[str, tuple[Any, Any]] = {
    "lambda": (lambda lc: lc.RunnableLambda(add_one), lambda r: r.invoke(1)),
    "parallel of three": (
        lambda lc: lc.RunnableParallel(a=add_one, b=double, c=lambda x: x),
        lambda r: r.invoke(1),
    ),
    "prompt | model | parser": (model_chain, lambda r: r.invoke("what is LCEL?")),
    "rag": (
        lambda lc: (
            lc.RunnableParallel(context=double, question=lc.RunnablePassthrough())
            | (lambda d: f"{d['question']} {d['context']}")
        ),
        lambda r: r.invoke(2),
    ),
    "assign": (
        lambda lc: lc.RunnablePassthrough.assign(b=lambda d: d["a"] + 1),
        lambda r: r.invoke({"a": 1}),
    ),
    "branch": (
        lambda lc: lc.RunnableBranch((lambda x: x > 0, double), add_one),
        lambda r: r.invoke(3),
    ),
    "retry with one failure": (
        lambda lc: lc.RunnableLambda(fails_once()).with_retry(wait_exponential_jitter=False),
        lambda r: r.invoke(5),
    ),
    "fallbacks": (
        lambda lc: lc.RunnableLambda(fails).with_fallbacks([lc.RunnableLambda(add_one)]),
        lambda r: r.invoke(1),
    ),
    "failing step": (lambda lc: lc.RunnableLambda(add_one) | fails, lambda r: r.invoke(1)),
    "batch": (lambda lc: lc.RunnableLambda(add_one) | double, lambda r: r.batch([1, 2])),
    "ainvoke": (
        lambda lc: lc.RunnableLambda(add_one) | {"a": double},
        lambda r: asyncio.run(r.ainvoke(1)),
    ),
    "abatch": (lambda lc: lc.RunnableLambda(add_one), lambda r: asyncio.run(r.abatch([1, 2]))),
    "astream": (
        lambda lc: lc.RunnableLambda(add_one) | {"a": double},
        lambda r: asyncio.run(_alist(r.astream(1))),
    ),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_langsmith_receives_the_same_run_trees(server: Server, name: str) -> None:
    import fastlcel
    from langchain_core import runnables as lc

    build, call = CHAINS[name]
    theirs = traced(server, lambda: call(build(lc)))
    ours = traced(server, lambda: call(build(fastlcel)))
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    assert theirs[1], "the recording server saw no runs"


def test_a_run_id_given_in_the_config_is_the_posted_root_run(server: Server) -> None:
    import fastlcel
    from langsmith.run_helpers import tracing_context

    run_id = uuid4()
    chain = fastlcel.Lambda(add_one) | double
    client = langsmith.Client(api_url=server.url, api_key="test")
    with tracing_context(enabled=True, client=client, project_name="fastlcel-tests"):
        assert chain.invoke(1, {"run_id": run_id}) == 4
    client.flush()
    roots = [run for run in server.take() if not run.get("parent_run_id")]
    assert [run["id"] for run in roots] == [str(run_id)]


ENV_SCRIPT = """
import sys
if sys.argv[1] == "fastlcel":
    import fastlcel as lib  # the program imports nothing of langchain's
else:
    from langchain_core import runnables as lib
chain = lib.RunnableLambda(lambda x: x + 1) | {"a": lambda x: 2 * x, "b": lib.RunnablePassthrough()}
print(chain.invoke(1))
"""  # the LangSmith client sends what it holds at exit


def run_on_both(server: Server, tmp_path: Any, script: str, env: dict[str, str]) -> dict:
    """Runs `script` in a fresh process with each library (its argument), the LangSmith client
    pointed at `server`: each one's stdout and the run trees it posted (the client sends what it
    holds at exit)."""
    import subprocess
    import sys

    env = {**env, "LANGSMITH_ENDPOINT": server.url, "LANGSMITH_API_KEY": "test"}
    outcome = {}
    for lib in ("langchain_core", "fastlcel"):
        done = subprocess.run(
            [sys.executable, "-c", script, lib],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        outcome[lib] = (done.stdout, trees(server.take()))
    return outcome


def test_tracing_enabled_by_environment_posts_the_same_runs(server: Server, tmp_path: Any) -> None:
    """LANGSMITH_TRACING=true, as most users turn tracing on, in a fresh process: a program
    that swapped its only langchain import for fastlcel's is traced as before."""
    import os

    env = {**os.environ, "LANGSMITH_TRACING": "true", "LANGSMITH_PROJECT": "fastlcel-tests"}
    outcome = run_on_both(server, tmp_path, ENV_SCRIPT, env)
    for stdout, _ in outcome.values():
        assert stdout.strip() == "{'a': 4, 'b': 2}"
    assert outcome["fastlcel"][1] == outcome["langchain_core"][1]
    assert len(outcome["fastlcel"][1]) == 1


CONFIGURE_SCRIPT = """
import sys, threading
import langsmith
if sys.argv[1] == "fastlcel":
    import fastlcel as lib
else:
    from langchain_core import runnables as lib
langsmith.configure(enabled=True, project_name="fastlcel-tests")
chain = lib.RunnableLambda(lambda x: x + 1) | {"a": lambda x: 2 * x, "b": lib.RunnablePassthrough()}
print(chain.invoke(1))
# A new thread starts with a fresh context: only langsmith's global fallback says "on".
thread = threading.Thread(target=lambda: print(chain.invoke(2)))
thread.start()
thread.join()
"""


def test_tracing_enabled_by_langsmith_configure_posts_the_same_runs(
    server: Server, tmp_path: Any
) -> None:
    """`langsmith.configure(enabled=True)` turns tracing on in the calling context and, as a
    global fallback, in every other thread: both libraries post the same runs."""
    import os

    env = {k: v for k, v in os.environ.items() if "TRACING" not in k}
    outcome = run_on_both(server, tmp_path, CONFIGURE_SCRIPT, env)
    for stdout, _ in outcome.values():
        assert stdout.split() == ["{'a':", "4,", "'b':", "2}", "{'a':", "6,", "'b':", "3}"]
    assert outcome["fastlcel"][1] == outcome["langchain_core"][1]
    assert len(outcome["fastlcel"][1]) == 2

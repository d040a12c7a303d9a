"""langchain_core's introspection API: types and schemas inferred as langchain_core infers
them, config specs, configurable fields and alternatives, graphs, prompts, tools, ``deps``.

Each scenario is built from fastlcel and from langchain_core.runnables and compared.
"""

# NOTE: no `from __future__ import annotations`: the functions' annotations are what is inferred.
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from operator import itemgetter
from types import ModuleType
from typing import Any

import pytest
from langchain_core import runnables as lc
from langchain_core._api.beta_decorator import LangChainBetaWarning
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import ConfigurableField
from pydantic import BaseModel


class Question(BaseModel):
    question: str
    level: int = 1


def typed(x: int) -> str:
    return str(x)


def reads_keys(x: dict[str, Any]) -> int:
    return x["a"] + x["b"]


def greet(q: Question) -> dict[str, str]:
    return {"text": f"hi {q.question}"}


def numbers(chunks: Iterator[str]) -> Iterator[int]:
    for chunk in chunks:
        yield len(chunk)


PROMPT = PromptTemplate.from_template("Tell me about {topic}")

# Each builder makes the same runnable from either namespace (`L`).
SCHEMAS: dict[str, Any] = {
    "typed function": lambda L: L.RunnableLambda(typed),
    "keys the function reads": lambda L: L.RunnableLambda(reads_keys),
    "lambda reading keys": lambda L: L.RunnableLambda(lambda x: x["foo"] + x["bar"]),
    "itemgetter of a key": lambda L: L.RunnableLambda(itemgetter("a")),
    "itemgetter of keys": lambda L: L.RunnableLambda(itemgetter("a", "b")),
    "pydantic input": lambda L: L.RunnableLambda(greet),
    "generator": lambda L: L.RunnableGenerator(numbers),
    "sequence": lambda L: L.RunnableLambda(typed) | str.upper,
    "sequence from a prompt": lambda L: L.RunnableSequence(PROMPT, L.RunnableLambda(str)),
    "parallel": lambda L: L.RunnableParallel(a=typed, b=L.RunnableLambda(reads_keys)),
    "parallel of dict readers": lambda L: L.RunnableParallel(
        x=itemgetter("x"), y=L.RunnableLambda(reads_keys)
    ),
    "assign": lambda L: L.RunnablePassthrough.assign(total=L.RunnableLambda(reads_keys)),
    "sequence ending in an assign": lambda L: (
        L.RunnableParallel(a=typed, b=typed)
        | L.RunnablePassthrough.assign(c=lambda d: d["a"] + d["b"])
    ),
    "sequence starting with an assign": lambda L: (
        L.RunnablePassthrough.assign(c=itemgetter("a")) | L.RunnableLambda(reads_keys)
    ),
    "pick one": lambda L: L.RunnableParallel(a=typed, b=typed) | L.RunnablePick("a"),
    "pick many": lambda L: (
        L.RunnableParallel(a=typed, b=typed, c=typed) | L.RunnablePick(["a", "b"])
    ),
    "branch": lambda L: L.RunnableBranch(
        (L.RunnableLambda(lambda x: x > 0), L.RunnableLambda(typed)), L.RunnableLambda(typed)
    ),
    "generic branch": lambda L: L.RunnableBranch[int, str](
        (lambda x: x > 0, lambda x: "positive"), lambda x: "not"
    ),
    "passthrough with a type": lambda L: L.RunnablePassthrough(input_type=int),
    "with_types": lambda L: L.RunnableLambda(lambda x: x).with_types(
        input_type=Question, output_type=list[int]
    ),
    "bind": lambda L: L.RunnableLambda(typed).bind(k=1),
    "with_retry": lambda L: L.RunnableLambda(typed).with_retry(),
    "with_fallbacks": lambda L: L.RunnableLambda(typed).with_fallbacks([L.RunnableLambda(str)]),
    "map": lambda L: L.RunnableLambda(typed).map(),
    "prompt in a parallel": lambda L: L.RunnableParallel(p=PROMPT, q=L.RunnablePassthrough()),
}


@pytest.mark.parametrize("build", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_schemas_as_langchain_core(lcel: ModuleType, build) -> None:
    mine, theirs = build(lcel), build(lc)
    assert mine.get_input_jsonschema() == theirs.get_input_jsonschema()
    assert mine.get_output_jsonschema() == theirs.get_output_jsonschema()
    assert mine.InputType == theirs.InputType
    assert mine.OutputType == theirs.OutputType
    assert mine.input_schema.model_json_schema() == theirs.input_schema.model_json_schema()
    assert mine.get_config_jsonschema() == theirs.get_config_jsonschema()


def test_fastlcel_wrappers_have_their_runnables_types() -> None:
    import fastlcel

    r = fastlcel.Lambda(typed)
    for wrapper in (r.with_timeout(1), r.with_cache(), r.with_rate_limit(fastlcel.RateLimiter(9))):
        assert wrapper.get_input_jsonschema() == r.get_input_jsonschema()
        assert wrapper.get_output_jsonschema() == r.get_output_jsonschema()


def graph_shape(runnable: Any) -> tuple[list[str], list[tuple[str, str]]]:
    graph = runnable.get_graph()
    names = sorted(node.name for node in graph.nodes.values())
    edges = sorted((graph.nodes[e.source].name, graph.nodes[e.target].name) for e in graph.edges)
    return names, edges


GRAPHS: dict[str, Any] = {
    "lambda": lambda L: L.RunnableLambda(typed),
    "sequence": lambda L: L.RunnableLambda(typed) | str.upper | PROMPT,
    "parallel in a sequence": lambda L: (
        L.RunnableLambda(typed)
        | {"a": str.upper, "b": L.RunnablePassthrough()}
        | (lambda d: d["a"])
    ),
    "assign": lambda L: L.RunnablePassthrough.assign(c=itemgetter("a")),
    "bound": lambda L: L.RunnableLambda(typed).bind(k=1) | str,
    "map": lambda L: L.RunnableLambda(typed).map(),
    "branch": lambda L: L.RunnableBranch((lambda x: x, typed), typed),
}


@pytest.mark.parametrize("build", GRAPHS.values(), ids=GRAPHS.keys())
def test_graphs_as_langchain_core(lcel: ModuleType, build) -> None:
    assert graph_shape(build(lcel)) == graph_shape(build(lc))


def lambda_using_a_runnable(L: ModuleType) -> Any:
    inner = L.RunnablePassthrough().configurable_alternatives(
        ConfigurableField(id="which"), other=L.RunnableLambda(str)
    )

    def uses_inner(x: Any) -> Any:
        return inner.invoke(x)

    return L.RunnableLambda(uses_inner), inner


def test_a_lambdas_graph_and_config_specs_include_the_runnables_it_uses(
    lcel: ModuleType,
) -> None:
    outer, inner = lambda_using_a_runnable(lcel)
    assert outer.deps == [inner]
    assert [spec.id for spec in outer.config_specs] == ["which"]
    assert graph_shape(outer) == graph_shape(lambda_using_a_runnable(lc)[0])


def test_prompts_inside_composites(lcel: ModuleType) -> None:
    chain = lcel.RunnableParallel(a=PROMPT, b=lcel.RunnablePassthrough()) | (lambda d: d["b"])
    assert chain.get_prompts() == [PROMPT]


def test_configurable_alternatives(lcel: ModuleType) -> None:
    def build(L: ModuleType) -> Any:
        step = L.RunnablePassthrough().configurable_alternatives(
            ConfigurableField(id="case"), default_key="same", lower=L.RunnableLambda(str.lower)
        )
        return L.RunnableLambda(str.strip) | step

    chain = build(lcel)
    assert chain.invoke(" Ab ") == "Ab"
    assert chain.invoke(" Ab ", {"configurable": {"case": "lower"}}) == "ab"
    assert chain.get_config_jsonschema() == build(lc).get_config_jsonschema()


def test_configurable_fields_of_a_binding(lcel: ModuleType) -> None:
    def add(x: int, k: int = 0) -> int:
        return x + k

    bound = lcel.RunnableLambda(add).bind(k=1)
    configurable = bound.configurable_fields(kwargs=ConfigurableField(id="kw"))
    assert configurable.invoke(1) == 2
    assert configurable.invoke(1, {"configurable": {"kw": {"k": 10}}}) == 11
    with pytest.raises(ValueError, match="Configuration key nope not found"):
        bound.configurable_fields(nope=ConfigurableField(id="x"))


def test_as_tool(lcel: ModuleType) -> None:
    def total(x: dict[str, Any]) -> int:
        return x["a"] + x["b"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangChainBetaWarning)
        tool = lcel.RunnableLambda(total).as_tool(
            name="total", description="Adds.", arg_types={"a": int, "b": int}
        )
    assert tool.invoke({"a": 1, "b": 2}) == 3
    assert tool.name == "total"
    assert set(tool.args) == {"a", "b"}


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(120)
def test_fastlcel_imports_no_langchain_core_until_its_api_is_used() -> None:
    run_python(
        """
        import copy, pickle, sys
        import fastlcel
        from operator import itemgetter

        chain = fastlcel.RunnableLambda(str) | {"a": itemgetter(0)} | fastlcel.RunnablePick("a")
        assert chain.invoke(12) == "1"
        repr(chain), chain.get_name(), copy.deepcopy(chain), pickle.dumps(fastlcel.Parallel())
        class Mine(fastlcel.RunnableLambda[int, int]):
            pass
        Mine(abs).batch([-1])
        assert "langchain_core" not in sys.modules, "fastlcel imported langchain_core"
        assert chain.get_input_jsonschema()["title"] == "str_input"
        assert "langchain_core" in sys.modules
        """
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "imports",
    [
        "import fastlcel\nimport langchain_core.runnables",
        "import langchain_core.runnables\nimport fastlcel",
        "import langchain_core\nimport fastlcel",
        "import fastlcel",
    ],
    ids=["fastlcel first", "langchain_core.runnables first", "langchain_core first", "alone"],
)
def test_the_api_does_not_depend_on_what_was_imported_first(imports: str) -> None:
    run_python(
        imports
        + """
import fastlcel
def typed(x: int) -> str:
    return str(x)
def shout(x: str) -> str:
    return x.upper()
chain = fastlcel.RunnableLambda(typed) | fastlcel.RunnablePassthrough() | shout
assert chain.get_input_jsonschema() == {"title": "typed_input", "type": "integer"}
assert chain.output_schema.model_json_schema()["type"] == "string"
assert len(chain.get_graph().nodes) == 5
"""
    )

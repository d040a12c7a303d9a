"""langchain_core's serialization: ``to_json()`` is langchain_core's serialized form of the
same runnable, and ``langchain_core.load`` makes an equivalent langchain_core runnable of it.

(``langchain_core.load.dumps(runnable)`` itself writes a fastlcel runnable as "not implemented":
it serializes only pydantic subclasses of its ``Serializable``, and pydantic's ``isinstance``
ignores virtual subclasses.)
"""

from __future__ import annotations

import json
import warnings
from operator import itemgetter
from typing import Any

import pytest
from langchain_core import runnables as lc
from langchain_core._api.beta_decorator import LangChainBetaWarning
from langchain_core.load import dumpd, load, loads
from langchain_core.prompts import PromptTemplate

PROMPT = PromptTemplate.from_template("About {topic}")


def upper(x: str) -> str:
    return x.upper()


CHAINS: dict[str, Any] = {
    "parallel": lambda L: L.RunnableParallel(prompt=PROMPT, same=L.RunnablePassthrough()),
    "sequence": lambda L: L.RunnableSequence(PROMPT, L.RunnablePassthrough(), name="named"),
    "assign and pick": lambda L: (
        L.RunnablePassthrough.assign(prompt=PROMPT) | L.RunnablePick(["topic", "prompt"])
    ),
    "branch": lambda L: L.RunnableBranch((L.RunnablePassthrough(), PROMPT), PROMPT),
    "bound": lambda L: L.RunnablePassthrough().bind(k=1) | PROMPT.with_config(tags=["t"]),
    "fallbacks": lambda L: L.RunnablePassthrough().with_fallbacks([L.RunnablePassthrough()]),
    "retry": lambda L: L.RunnablePassthrough().with_retry(stop_after_attempt=4),
    "map": lambda L: L.RunnablePassthrough().map(),
    "lambda inside": lambda L: L.RunnableParallel(a=L.RunnableLambda(upper)),
    "itemgetter inside": lambda L: L.RunnableParallel(a=itemgetter("topic")),
}


@pytest.mark.parametrize("build", CHAINS.values(), ids=CHAINS.keys())
def test_to_json_is_langchain_cores_form(build) -> None:
    import fastlcel

    assert build(fastlcel).to_json() == dumpd(build(lc))


@pytest.mark.parametrize(
    "build",
    [CHAINS[name] for name in ("parallel", "sequence", "assign and pick", "map")],
    ids=["parallel", "sequence", "assign and pick", "map"],
)
def test_loads_makes_an_equivalent_langchain_core_runnable(build) -> None:
    import fastlcel

    mine = build(fastlcel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangChainBetaWarning)
        loaded = loads(json.dumps(mine.to_json()), allowed_objects="core")
        assert load(mine.to_json(), allowed_objects="core") == loaded
    value = [{"topic": "x"}] if isinstance(mine, fastlcel.Each) else {"topic": "x"}
    assert loaded.invoke(value) == mine.invoke(value)
    assert repr(loaded) == repr(mine)

"""Multi-model fan-out: one prompt, three chat models at once, an answer from each.

    python examples/multi_model_fanout.py

The LCEL program in ``build_chain`` is written once and run twice: first on
``langchain_core.runnables``, then on ``fastlcel``. The only difference between the runs is the
module the runnables are imported from; the prompt, the chat models and the output parser are
langchain_core's in both. The chat models are offline fakes whose latency is a ``sleep``, so the
wall time of a fan-out is the slowest model's, as long as the models run at once. Both libraries
run them at once, so here both wall times are about the slowest latency: what fastlcel saves is the
per-step overhead around the models (see benches/bench_composition.py), not the models' time.

Prints each library's wall times and results, and exits with status 1 if the results differ.
"""

from __future__ import annotations

import importlib
import pprint
import sys
import time
from types import ModuleType
from typing import Any

from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

# Each fake model answers with a fixed text after sleeping its latency (seconds).
MODELS = {
    "quick": (0.10, "Paris."),
    "balanced": (0.25, "It is Paris."),
    "thorough": (0.40, "Paris, the capital since the 10th century."),
}
QUESTIONS = [
    "What is the capital of France?",
    "Which city hosts the Louvre?",
    "Where is the Eiffel Tower?",
    "Name the largest city in France.",
]


def build_chain(runnables: ModuleType) -> Any:
    """The LCEL program. ``runnables`` is what the import line names: ``from <runnables> import
    RunnableParallel, RunnablePassthrough``."""
    RunnableParallel = runnables.RunnableParallel
    RunnablePassthrough = runnables.RunnablePassthrough

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a concise assistant."), ("human", "{question}")]
    )
    fan_out = RunnableParallel(
        {
            name: FakeListChatModel(responses=[answer], sleep=latency) | StrOutputParser()
            for name, (latency, answer) in MODELS.items()
        }
    )
    return RunnableParallel(question=RunnablePassthrough()) | RunnablePassthrough.assign(
        answers=prompt | fan_out
    )


def run(module_name: str) -> tuple[dict[str, float], dict[str, Any]]:
    chain = build_chain(importlib.import_module(module_name))
    times: dict[str, float] = {}
    results: dict[str, Any] = {}

    start = time.perf_counter()
    results["invoke"] = chain.invoke(QUESTIONS[0])
    times["invoke"] = time.perf_counter() - start

    start = time.perf_counter()
    results["batch"] = chain.batch(QUESTIONS)
    times["batch"] = time.perf_counter() - start
    return times, results


def main() -> int:
    slowest = max(latency for latency, _ in MODELS.values())
    print(f"{len(MODELS)} fake chat models, latencies {[m[0] for m in MODELS.values()]} s")
    print(f"ideal wall time of one fan-out (and of a batch, if items run at once): {slowest} s\n")
    runs = {}
    for module_name in ("langchain_core.runnables", "fastlcel"):
        times, results = run(module_name)
        runs[module_name] = results
        print(
            f"{module_name:<26} invoke {times['invoke'] * 1000:7.1f} ms   "
            f"batch of {len(QUESTIONS)} {times['batch'] * 1000:7.1f} ms"
        )
    for module_name, results in runs.items():
        print(f"\n{module_name} results:")
        pprint.pprint(results, width=100, sort_dicts=False)
    equal = runs["langchain_core.runnables"] == runs["fastlcel"]
    print(f"\nresults equal: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())

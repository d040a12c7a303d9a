"""fastlcel: LangChain LCEL's RunnableParallel and RunnableLambda, with a Rust core.

Swap ``from langchain_core.runnables import RunnableParallel, RunnableLambda`` for
``from fastlcel import RunnableParallel, RunnableLambda``.
"""

from fastlcel._core import FastLcelError, Lambda, PanicError, Parallel, Runnable

RunnableParallel = Parallel
RunnableMap = Parallel
RunnableLambda = Lambda

__all__ = [
    "FastLcelError",
    "Lambda",
    "PanicError",
    "Parallel",
    "RunnableLambda",
    "RunnableMap",
    "Runnable",
    "RunnableParallel",
]

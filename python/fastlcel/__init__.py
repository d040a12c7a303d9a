"""fastlcel: LangChain LCEL's RunnableParallel and RunnableLambda, with a Rust core.

Swap ``from langchain_core.runnables import RunnableParallel, RunnableLambda`` for
``from fastlcel import RunnableParallel, RunnableLambda``.
"""

from fastlcel._core import (
    Cached,
    ConcurrencyLimit,
    FastLcelError,
    Lambda,
    PanicError,
    Parallel,
    RateLimiter,
    Runnable,
    StepTimeoutError,
)

RunnableParallel = Parallel
RunnableMap = Parallel
RunnableLambda = Lambda

__all__ = [
    "Cached",
    "ConcurrencyLimit",
    "FastLcelError",
    "Lambda",
    "PanicError",
    "Parallel",
    "RateLimiter",
    "RunnableLambda",
    "RunnableMap",
    "Runnable",
    "RunnableParallel",
    "StepTimeoutError",
]

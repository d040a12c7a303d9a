"""fastlcel: LangChain LCEL runnables (RunnableParallel, RunnableLambda, ...) with a Rust core.

Swap ``from langchain_core.runnables import RunnableParallel, RunnableLambda`` for
``from fastlcel import RunnableParallel, RunnableLambda``: the same programs run unchanged, and
fastlcel runnables mix with langchain_core ones in either direction.
"""

from fastlcel import _interop
from fastlcel._addable import AddableDict
from fastlcel._core import (
    Assign,
    Binding,
    Branch,
    Cached,
    ConcurrencyLimit,
    FastLcelError,
    FastLcelTypeError,
    FastLcelValueError,
    Generator,
    Lambda,
    PanicError,
    Parallel,
    Passthrough,
    Pick,
    RateLimiter,
    Runnable,
    Sequence,
    StepTimeoutError,
)

RunnableParallel = Parallel
RunnableMap = Parallel
RunnableLambda = Lambda
RunnableSequence = Sequence
RunnablePassthrough = Passthrough
RunnableAssign = Assign
RunnablePick = Pick
RunnableBranch = Branch
RunnableBinding = Binding
RunnableGenerator = Generator

_interop.install()

__all__ = [
    "AddableDict",
    "Assign",
    "Binding",
    "Branch",
    "Cached",
    "ConcurrencyLimit",
    "FastLcelError",
    "FastLcelTypeError",
    "FastLcelValueError",
    "Generator",
    "Lambda",
    "PanicError",
    "Parallel",
    "Passthrough",
    "Pick",
    "RateLimiter",
    "Runnable",
    "RunnableAssign",
    "RunnableBinding",
    "RunnableBranch",
    "RunnableGenerator",
    "RunnableLambda",
    "RunnableMap",
    "RunnableParallel",
    "RunnablePassthrough",
    "RunnablePick",
    "RunnableSequence",
    "Sequence",
    "StepTimeoutError",
]

"""fastlcel: LangChain LCEL runnables (RunnableParallel, RunnableLambda, ...) with a Rust core.

Swap ``from langchain_core.runnables import RunnableParallel, RunnableLambda`` for
``from fastlcel import RunnableParallel, RunnableLambda``: the same programs run unchanged, and
fastlcel runnables mix with langchain_core ones in either direction.
"""

from fastlcel import _core, _interop, _langchain
from fastlcel._addable import AddableDict
from fastlcel._core import *  # noqa: F403  (the native API, langchain_core's names included)
from fastlcel._core import __version__ as __version__
from fastlcel._ray import RayExecutor

_langchain.install()
_interop.install()

__all__ = [*_core.__all__, "AddableDict", "RayExecutor"]

"""Interop with langchain_core, without importing it.

fastlcel runnables are registered as virtual subclasses of ``langchain_core.runnables.Runnable``
as soon as langchain_core's runnables are loaded (now, or whenever they are imported later), so
that langchain_core accepts them wherever it accepts a Runnable: ``lc_runnable |
fastlcel_runnable``, a step of a ``RunnableSequence`` or ``RunnableParallel``, and so on.
langchain_core calls them through the methods they share (invoke, ainvoke, batch, abatch,
stream, transform, ...). Their langchain_core API (schemas, graphs...) is installed with fastlcel
itself (``_langchain``), whatever is imported first.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

from fastlcel import _langchain

_TARGET = "langchain_core.runnables.base"


class _Finder(importlib.abc.MetaPathFinder):
    """Registers fastlcel with langchain_core right after its Runnable is defined."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(fullname, path, target)  # type: ignore[attr-defined]
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _langchain.register(module)
        _uninstall()


_finder = _Finder()


def _uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    base = sys.modules.get(_TARGET)
    if base is not None:
        _langchain.register(base)
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)

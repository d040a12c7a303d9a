"""Interop with langchain_core, without importing it.

fastlcel runnables are registered as virtual subclasses of ``langchain_core.runnables.Runnable``
as soon as langchain_core is loaded (now, or whenever it is imported later), so that
langchain_core accepts them wherever it accepts a Runnable: ``lc_runnable | fastlcel_runnable``,
a step of a ``RunnableSequence`` or ``RunnableParallel``, and so on. langchain_core calls them
through the methods they share (invoke, ainvoke, batch, abatch, stream, transform, ...).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

_TARGET = "langchain_core.runnables.base"


# langchain_core's own implementations, generic over any runnable: what its composites call on
# their steps to describe themselves (schemas, config specs, graphs).
_BORROWED_METHODS = (
    "get_input_schema",
    "get_output_schema",
    "get_input_jsonschema",
    "get_output_jsonschema",
    "config_schema",
    "get_config_jsonschema",
    "get_graph",
    "get_prompts",
)
_BORROWED_PROPERTIES = ("input_schema", "output_schema", "config_specs")


def _register(base: ModuleType) -> None:
    from fastlcel._core import Runnable

    base.Runnable.register(Runnable)
    lc = base.Runnable
    for name in _BORROWED_METHODS:
        if not hasattr(Runnable, name):
            setattr(Runnable, name, lc.__dict__[name])
    for name in _BORROWED_PROPERTIES:
        if not hasattr(Runnable, name):
            setattr(Runnable, name, lc.__dict__[name])
    # fastlcel runnables are not generic classes: their input and output types are Any.
    if not hasattr(Runnable, "InputType"):
        Runnable.InputType = property(lambda self: Any)  # type: ignore[attr-defined]
        Runnable.OutputType = property(lambda self: Any)  # type: ignore[attr-defined]


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
        _register(module)
        _uninstall()


_finder = _Finder()


def _uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    base = sys.modules.get(_TARGET)
    if base is not None:
        _register(base)
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)

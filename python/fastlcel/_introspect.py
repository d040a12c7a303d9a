"""Reading a function's source (glue to ``inspect`` and ``ast``), for reprs.

A Lambda's repr shows its lambda's source, as langchain_core's does: ``RunnableLambda(lambda x:
x * 2)``; a named function shows its name.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from collections.abc import Callable
from typing import Any


def lambda_source(func: Callable[..., Any]) -> str | None:
    """The source of ``func`` if it is the only lambda on its lines, else its name (None for a
    lambda whose source cannot be read or is ambiguous): langchain_core's
    ``get_lambda_source``."""
    name = getattr(func, "__name__", None)
    name = None if name == "<lambda>" else name
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (SyntaxError, TypeError, OSError, SystemError):
        return name
    lambdas = [node for node in ast.walk(tree) if isinstance(node, ast.Lambda)]
    return ast.unparse(lambdas[0]) if len(lambdas) == 1 else name


def parametrized_repr(repr_: str, alias: Any) -> str:
    """``repr_`` (``RunnableBranch(...)``) of an instance made through ``alias``
    (``RunnableBranch[int, str]``), as pydantic shows its parametrized class:
    ``RunnableBranch[int, str](...)``."""
    args = typing.get_args(alias)
    name, paren, rest = repr_.partition("(")
    if not args or not paren or not name.isidentifier():
        return repr_
    try:
        from pydantic._internal._repr import display_as_type
    except ImportError:  # pydantic is langchain_core's; without it, typing's spelling

        def display_as_type(obj: Any) -> str:
            return getattr(obj, "__qualname__", None) or repr(obj).replace("typing.", "")

    return f"{name}[{', '.join(display_as_type(a) for a in args)}]({rest}"

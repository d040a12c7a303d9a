"""Reading a function's source (glue to ``inspect`` and ``ast``), for reprs.

A Lambda's repr shows its lambda's source, as langchain_core's does: ``RunnableLambda(lambda x:
x * 2)``; a named function shows its name.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
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

"""``AddableDict``: the chunks of a streamed Parallel, Assign or Pick (langchain_core's own)."""

from __future__ import annotations

from typing import Any


class AddableDict(dict):  # type: ignore[type-arg]
    """A dict whose ``+`` merges keys, adding values present in both (langchain_core's)."""

    def __add__(self, other: dict[Any, Any]) -> AddableDict:
        merged = AddableDict(self)
        for key, value in other.items():
            if key in merged and merged[key] is not None and value is not None:
                merged[key] = merged[key] + value
            elif key not in merged or value is not None:
                merged[key] = value
        return merged

    def __radd__(self, other: dict[Any, Any]) -> AddableDict:
        return AddableDict(other) + self

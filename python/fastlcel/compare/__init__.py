"""The asyncio vs threading vs processes study, with fastlcel as a contender.

Run it from a shell::

    python -m fastlcel.compare            # the table, in under a minute
    python -m fastlcel.compare --help

or from Python (a notebook, a test)::

    from fastlcel.compare import run_study

    study = run_study(["http", "cpu"], quick=True)
    print(study.table())
    best = study.best("http")              # a Result: .label, .wall_s, .speedup, .peak_threads
    data = study.to_dict()                 # what --json writes

The names are imported on first use, so that a process-pool worker, which imports this package to
find the workload functions, stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_study": "_study",
    "resolve_settings": "_study",
    "Study": "_study",
    "Result": "_study",
    "DEFAULTS": "_study",
    "QUICK": "_study",
    "APPROACHES": "_approaches",
    "APPROACH_KEYS": "_approaches",
    "WORKLOADS": "_workloads",
    "LatencyServer": "_server",
    "validate_report": "_report",
    "REPORT_FIELDS": "_report",
    "RESULT_FIELDS": "_report",
    "main": "_cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

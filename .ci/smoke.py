"""A built wheel works: run with an installed fastlcel (.github/workflows/wheels.yml runs it on
every wheel a runner can run). Not a test suite: that is python -m pytest, in .ci/run."""

import asyncio
import importlib.metadata
import platform
import sys

import fastlcel

assert fastlcel.Parallel(a=lambda x: x + 1, b=lambda x: x * 2).invoke(3) == {"a": 4, "b": 6}
assert fastlcel.Lambda(lambda x: x + 1).batch([1, 2, 3]) == [2, 3, 4]
assert asyncio.run(fastlcel.Lambda(lambda x: x * 2).ainvoke(21)) == 42
print(
    f"fastlcel {importlib.metadata.version('fastlcel')} ok:",
    f"{platform.python_implementation()} {sys.version.split()[0]} on {platform.platform()}",
)

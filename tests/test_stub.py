"""The stub ``fastlcel/_core.pyi`` matches the compiled module (checked by mypy's stubtest)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_stub_matches_the_native_module(tmp_path) -> None:
    pytest.importorskip("mypy.stubtest")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "fastlcel._core"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_public_name_is_written_once() -> None:
    """The native module's public classes and functions are its ``__all__`` (made from what it
    registers), the stub declares the same (stubtest checks it against the binary), and the
    package exports them all plus its Python classes."""
    import ast
    from pathlib import Path

    import fastlcel
    from fastlcel import _core

    native = {
        name
        for name, obj in vars(_core).items()
        if (isinstance(obj, type) or callable(obj)) and name[0] != "_"
    }
    assert native == set(_core.__all__)
    assert len(_core.__all__) == len(native)

    stub = ast.parse(Path(_core.__file__).with_name("_core.pyi").read_text())
    stub_all = next(
        ast.literal_eval(node.value)
        for node in stub.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
    )
    assert sorted(stub_all) == sorted(_core.__all__)

    python_classes = {"AddableDict": fastlcel.AddableDict, "RayExecutor": fastlcel.RayExecutor}
    assert fastlcel.__all__ == [*_core.__all__, *python_classes]
    for name in fastlcel.__all__:
        assert getattr(fastlcel, name) is getattr(_core, name, python_classes.get(name))
    assert fastlcel.RunnableLambda is fastlcel.Lambda
    assert fastlcel.RunnableMap is fastlcel.RunnableParallel is fastlcel.Parallel

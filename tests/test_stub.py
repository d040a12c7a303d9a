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


def test_public_names() -> None:
    import fastlcel

    required = {
        "FastLcelError",
        "Lambda",
        "PanicError",
        "Parallel",
        "RunnableLambda",
        "RunnableMap",
        "RunnableParallel",
    }
    assert required <= set(fastlcel.__all__)
    for name in fastlcel.__all__:
        assert getattr(fastlcel, name) is not None

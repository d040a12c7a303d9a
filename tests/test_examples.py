"""The examples run offline and end well (smoke tests, in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_multi_model_fanout_gives_equal_results_on_both_libraries() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "multi_model_fanout.py")],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "results equal: True" in done.stdout
    for library in ("langchain_core.runnables", "fastlcel"):
        assert f"{library} results:" in done.stdout

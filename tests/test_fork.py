"""A forked child has none of the parent's pool threads: it must get a working pool of its own."""

from __future__ import annotations

import multiprocessing
import sys
import time

import pytest
from fastlcel import Lambda, Parallel

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork")


def _sleepy(x: int) -> int:
    time.sleep(0.05)
    return x * 2


def _child(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    par = Parallel({f"s{i}": _sleepy for i in range(8)})
    queue.put((par.invoke(1), Lambda(_sleepy).batch(list(range(8)))))


@pytest.mark.timeout(30)
# Python 3.12+ warns that forking a multi-threaded process may deadlock: that is what is tested.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_runs_fan_outs_on_a_fresh_pool() -> None:
    # Warm the parent's pool so that the child inherits its (now thread-less) state.
    assert Parallel({f"s{i}": _sleepy for i in range(8)}).invoke(1) == {
        f"s{i}": 2 for i in range(8)
    }
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    result = queue.get(timeout=20)
    child.join(timeout=10)
    assert child.exitcode == 0
    assert result == ({f"s{i}": 2 for i in range(8)}, [x * 2 for x in range(8)])

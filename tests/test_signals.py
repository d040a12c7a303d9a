"""Ctrl-C, interpreter exit while steps run, Rust panics. Process-level tests use subprocesses."""

from __future__ import annotations

import signal
import sys
import time

import fastlcel
import pytest
from conftest import Child
from fastlcel import Parallel

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

INTERRUPT_BOUND = 3.0  # seconds; the design target is ~0.5 s


INTERRUPTIBLE_SCRIPTS = {
    # The caller runs a sleeping step itself.
    "invoke": """
        import time
        from fastlcel import Parallel
        par = Parallel({f"s{i}": (lambda x: time.sleep(30)) for i in range(4)})
        print("ready", flush=True)
        try:
            par.invoke(None)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
    """,
    # The caller's own step is instant: it waits (GIL released) for pool threads that sleep.
    "invoke-waiting": """
        import threading, time
        from fastlcel import Parallel
        def step(x):
            if threading.current_thread() is not threading.main_thread():
                time.sleep(30)
        par = Parallel({f"s{i}": step for i in range(4)})
        print("ready", flush=True)
        try:
            par.invoke(None)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
    """,
    "batch": """
        import time
        from fastlcel import Lambda
        lam = Lambda(lambda x: time.sleep(30))
        print("ready", flush=True)
        try:
            lam.batch(list(range(4)))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
    """,
    # The step has only an async implementation: it sleeps on fastlcel's bridged event loop.
    "invoke-bridged": """
        import asyncio
        from fastlcel import Lambda
        async def step(x):
            await asyncio.sleep(30)
        print("ready", flush=True)
        try:
            Lambda(step).invoke(None)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
    """,
    "batch-waiting": """
        import threading, time
        from fastlcel import Lambda
        def step(x):
            if threading.current_thread() is not threading.main_thread():
                time.sleep(30)
        lam = Lambda(step)
        print("ready", flush=True)
        try:
            lam.batch(list(range(4)))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
    """,
}


def interrupt(child: Child) -> tuple[str | None, float]:
    """Wait for "ready", send SIGINT; returns the next stdout line and how long it took."""
    assert child.read_line(timeout=15) == "ready", child.finish(1)
    time.sleep(0.3)  # let the call start and block
    sent = time.monotonic()
    child.proc.send_signal(signal.SIGINT)
    line = child.read_line(timeout=INTERRUPT_BOUND)
    return line, time.monotonic() - sent


@pytest.mark.timeout(20)
@pytest.mark.parametrize("scenario", list(INTERRUPTIBLE_SCRIPTS))
def test_ctrl_c_interrupts_a_blocking_call(scenario: str, tmp_path) -> None:
    child = Child(INTERRUPTIBLE_SCRIPTS[scenario], tmp_path)
    try:
        line, latency = interrupt(child)
        # The steps still sleep on pool threads: a second Ctrl-C is the user insisting.
        time.sleep(0.3)
        child.proc.send_signal(signal.SIGINT)
    finally:
        returncode, _out, err, _ = child.finish(timeout=INTERRUPT_BOUND)
    assert line == "interrupted", f"no KeyboardInterrupt within {INTERRUPT_BOUND}s; stderr:\n{err}"
    assert latency < INTERRUPT_BOUND
    assert "KeyboardInterrupt" in err
    assert "Fatal Python error" not in err
    assert returncode is not None, "a second Ctrl-C did not end the process"
    assert returncode != 0


@pytest.mark.timeout(20)
@pytest.mark.parametrize("scenario", ["invoke", "batch", "invoke-bridged"])
def test_ctrl_c_exits_without_waiting_for_sleeping_steps(scenario: str, tmp_path) -> None:
    """One Ctrl-C ends the program promptly although steps sleep 30 s on pool threads."""
    child = Child(INTERRUPTIBLE_SCRIPTS[scenario], tmp_path)
    try:
        line, _ = interrupt(child)
    finally:
        returncode, _out, err, exited_after = child.finish(timeout=INTERRUPT_BOUND)
    assert line == "interrupted", err
    assert returncode is not None, (
        f"still running {INTERRUPT_BOUND}s after Ctrl-C was handled; stderr:\n{err}"
    )
    assert returncode != 0
    assert "KeyboardInterrupt" in err
    assert "Fatal Python error" not in err


# A finalizer run with the modules, after Python began finalizing, that sleeps (GIL released).
SLOW_FINALIZER = """
        import sys, threading, time, types
        from fastlcel import Lambda
        class SlowFinalizer:
            def __del__(self, sleep=time.sleep):
                sleep(0.6)
        sys.modules["slow_finalizer"] = types.ModuleType("slow_finalizer")
        sys.modules["slow_finalizer"].keep = SlowFinalizer()
        del SlowFinalizer
"""

EXIT_SCRIPTS = {
    "daemon-thread-invoke": """
        import threading, time
        from fastlcel import Parallel
        par = Parallel({f"s{i}": (lambda x: time.sleep(0.5)) for i in range(4)})
        threading.Thread(target=par.invoke, args=(None,), daemon=True).start()
        time.sleep(0.1)
        print("exiting", flush=True)
    """,
    "daemon-thread-batch": """
        import threading, time
        from fastlcel import Lambda
        lam = Lambda(lambda x: time.sleep(0.5))
        threading.Thread(target=lam.batch, args=(list(range(4)),), daemon=True).start()
        time.sleep(0.1)
        print("exiting", flush=True)
    """,
    "abandoned-ainvoke": """
        import asyncio, time
        from fastlcel import Parallel
        par = Parallel(a=lambda x: time.sleep(0.3), b=lambda x: time.sleep(0.3))
        async def main():
            asyncio.ensure_future(par.ainvoke(None))
            await asyncio.sleep(0.05)
        asyncio.run(main())
        print("exiting", flush=True)
    """,
    "daemon-thread-bridged": """
        import asyncio, threading, time
        from fastlcel import Lambda, Parallel
        async def step(x):
            await asyncio.sleep(30)
        par = Parallel(a=step, b=lambda x: time.sleep(0.3))
        threading.Thread(target=par.invoke, args=(None,), daemon=True).start()
        threading.Thread(target=Lambda(step).batch, args=([1, 2],), daemon=True).start()
        time.sleep(0.1)
        print("exiting", flush=True)
    """,
    # A daemon thread's own step outlives the start of finalization, during which the main
    # thread sleeps in a finalizer: the step is waited for before Python finalizes, instead of
    # waking inside Rust frames of a finalizing interpreter (which aborted the process).
    "daemon-thread-step-outlives-exit": SLOW_FINALIZER
    + """
        lam = Lambda(lambda x: time.sleep(0.3))
        threading.Thread(target=lam.invoke, args=(1,), daemon=True).start()
        time.sleep(0.1)
        print("exiting", flush=True)
    """,
    "daemon-loop-step-outlives-exit": SLOW_FINALIZER
    + """
        import asyncio
        async def step(x):
            time.sleep(0.3)  # blocks its event loop's thread
        coro = Lambda(step).ainvoke(1)
        threading.Thread(target=asyncio.run, args=(coro,), daemon=True).start()
        time.sleep(0.1)
        print("exiting", flush=True)
    """,
    "sys-exit-from-daemon-steps": """
        import sys, threading, time
        from fastlcel import Parallel
        par = Parallel({f"s{i}": (lambda x: time.sleep(0.5)) for i in range(8)})
        for _ in range(3):
            threading.Thread(target=par.invoke, args=(None,), daemon=True).start()
        time.sleep(0.1)
        print("exiting", flush=True)
        sys.exit(0)
    """,
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("scenario", list(EXIT_SCRIPTS))
def test_interpreter_exit_while_steps_run_is_clean(scenario: str, tmp_path) -> None:
    child = Child(EXIT_SCRIPTS[scenario], tmp_path)
    returncode, out, err, _ = child.finish(timeout=10)
    assert returncode is not None, f"the process hung at exit; stderr:\n{err}"
    assert "Fatal Python error" not in err
    assert returncode == 0, err
    assert out.strip() == "exiting"
    assert err == ""


def test_sync_calls_import_nothing(tmp_path) -> None:
    """A sync program's calls import no module (asyncio, say): a daemon thread making its first call
    as the program exits would be ended by the interpreter inside that import, under fastlcel's
    frames, which aborts the process (the exit tests above caught it, now and then)."""
    child = Child(
        """
        import sys, time
        from fastlcel import Lambda, Parallel
        par = Parallel(a=lambda x: time.sleep(0.01), b=lambda x: x)
        lam = Lambda(lambda x: time.sleep(0.01))
        before = set(sys.modules)
        par.invoke(1)
        lam.batch([1, 2])
        print(sorted(set(sys.modules) - before))
        """,
        tmp_path,
    )
    returncode, out, err, _ = child.finish(timeout=10)
    assert returncode == 0, err
    assert out.strip() == "[]"


def test_rust_panic_surfaces_as_panic_error() -> None:
    with pytest.raises(fastlcel.PanicError) as info:
        fastlcel._core._debug_panic_in_pool()
    assert isinstance(info.value, fastlcel.FastLcelError)
    assert str(info.value)


@pytest.mark.timeout(10)
def test_the_pool_keeps_working_after_a_panic() -> None:
    for _ in range(3):
        with pytest.raises(fastlcel.PanicError):
            fastlcel._core._debug_panic_in_pool()
    par = Parallel({f"s{i}": (lambda x: time.sleep(0.01) or x) for i in range(8)})
    assert par.invoke(1) == {f"s{i}": 1 for i in range(8)}
    assert par.batch([1, 2]) == [{f"s{i}": x for i in range(8)} for x in (1, 2)]

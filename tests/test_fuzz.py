"""Property-based fuzzing (hypothesis) of constructors, wrappers, config and every call method.

Whatever it is given, fastlcel returns a result or raises an exception: a FastLcelError of its
own (never a PanicError, never an internal error) or the exception of a step's function. It
never hangs (each case runs under its own alarm), never crashes the process.

The main suite runs 150 cases; ``FASTLCEL_FUZZ_EXAMPLES=3000`` runs more (as the stress step
of .ci/run does); ``FASTLCEL_FUZZ_RANDOM=1`` draws new cases instead of the same ones.
"""

from __future__ import annotations

import asyncio
import operator
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import fastlcel
import pytest
from fastlcel import (
    Branch,
    ConcurrencyLimit,
    FastLcelError,
    Lambda,
    PanicError,
    Parallel,
    Passthrough,
    RateLimiter,
    Sequence,
)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("FASTLCEL_FUZZ_EXAMPLES", "150"))
# No case sleeps: any that takes this long hangs.
CASE_SECONDS = 10.0


class Boom(Exception):
    """What the failing step raises."""


class Hang(Exception):
    """Raised in the main thread when a case outlives its alarm."""


def fail(x: Any) -> Any:
    raise Boom(x)


async def aident(x: Any) -> Any:
    await asyncio.sleep(0)
    return x


def gen(chunks: Any) -> Any:
    yield from chunks


async def agen(chunks: Any) -> Any:
    async for chunk in chunks:
        yield chunk


class Foreign:
    """A runnable of another library: only invoke."""

    def invoke(self, x: Any, config: Any = None, **kwargs: Any) -> Any:
        return [x]


# --------------------------------------------------------------------------------- values

huge_ints = st.sampled_from([2**63, 2**64, 2**70, 2**1000, -(2**70)])
garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=0),
    huge_ints,
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.5, 1e-300, 1e300]),
    st.text(max_size=3),
    st.binary(max_size=2),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.just(object()),
    st.just(abs),
)
plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.text(max_size=4),
    st.lists(st.integers(min_value=0, max_value=3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "x"]), st.integers(), max_size=3),
)
small_count = st.integers(min_value=1, max_value=4)
short_seconds = st.floats(min_value=1e-6, max_value=2.0)

# Sync functions: they are also conditions, predicates and keys (an async one there would make
# coroutines nobody awaits, by design). Async steps come from the "async" leaves.
functions = st.sampled_from(
    [lambda x: x, operator.itemgetter("a"), fail, str, len, lambda x: x + 1]
)


def maybe(valid: st.SearchStrategy, bad: st.SearchStrategy = garbage) -> st.SearchStrategy:
    """Mostly a valid value, sometimes garbage."""
    return st.one_of(valid, valid, valid, bad)


# ------------------------------------------------------------------------------- runnables
# Strategies draw recipes: functions that build a runnable (or a step), so that what the
# constructors raise is the case's outcome, not an error of the test.

Recipe = Callable[[], Any]


@st.composite
def leaf(draw: Any) -> Recipe:
    kind = draw(st.sampled_from(["lambda", "async", "generator", "foreign", "dict", "callable"]))
    if kind == "lambda":
        func = draw(functions)
        name = draw(st.one_of(st.none(), st.text(max_size=3), garbage))
        return lambda: Lambda(func, name=name)
    if kind == "async":
        return lambda: Lambda(aident)
    if kind == "generator":
        return lambda: fastlcel.Generator(gen, agen)
    if kind == "foreign":
        return Foreign
    if kind == "dict":
        func = draw(functions)
        return lambda: {"k": func}
    func = draw(functions)
    return lambda: func


def as_runnable(step: Any) -> Any:
    return step if isinstance(step, fastlcel.Runnable) else Lambda(lambda x: x) | step


@st.composite
def composite(draw: Any, children: st.SearchStrategy) -> Recipe:
    kind = draw(
        st.sampled_from(["parallel", "sequence", "branch", "assign", "pick", "passthrough"])
    )
    if kind == "parallel":
        steps = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3))
        merge = draw(st.one_of(st.just("dict"), st.just("list"), garbage))
        on_error = draw(st.one_of(st.just("raise"), st.just("collect"), garbage))
        return lambda: Parallel(
            {k: make() for k, make in steps.items()}, merge=merge, on_error=on_error
        )
    if kind == "sequence":
        steps = draw(st.lists(children, min_size=1, max_size=3))
        if len(steps) == 1:
            return lambda: as_runnable(steps[0]())
        return lambda: Sequence(*(make() for make in steps))
    if kind == "branch":
        pairs = draw(st.lists(st.tuples(functions, children), max_size=2))
        default = draw(children)
        return lambda: Branch(*((cond, make()) for cond, make in pairs), default())
    if kind == "assign":
        steps = draw(st.dictionaries(st.sampled_from(["n", "m"]), children, max_size=2))
        return lambda: Passthrough.assign(**{k: make() for k, make in steps.items()})
    if kind == "pick":
        inner = draw(children)
        keys = draw(maybe(st.sampled_from(["a", ["a", "k"]])))
        return lambda: as_runnable(inner()).pick(keys)
    func = draw(st.one_of(st.none(), functions))
    return lambda: Passthrough(func)


@st.composite
def wrapped(draw: Any, inner: st.SearchStrategy) -> Recipe:
    make = draw(inner)
    kind = draw(
        st.sampled_from(
            ["retry", "timeout", "cache", "fallbacks", "rate", "limit", "config", "bind", "none"]
        )
    )
    if kind == "retry":
        params = draw(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["initial", "max", "exp_base", "jitter", "bad"]),
                    maybe(st.floats(min_value=0, max_value=1e-3)),
                    max_size=2,
                ),
                garbage,
            )
        )
        kwargs = {
            "stop_after_attempt": draw(maybe(small_count)),
            "wait_exponential_jitter": draw(maybe(st.booleans())),
            "exponential_jitter_params": params,
            "retry_if_exception_type": draw(st.sampled_from([None, (Boom,), (int,), Boom, fail])),
        }
        return lambda: as_runnable(make()).with_retry(**kwargs)
    if kind == "timeout":
        seconds = draw(maybe(short_seconds))
        return lambda: as_runnable(make()).with_timeout(seconds)
    if kind == "cache":
        kwargs = {
            "maxsize": draw(maybe(small_count)),
            "ttl": draw(st.one_of(st.none(), short_seconds, garbage)),
            "key": draw(st.sampled_from([None, repr, 3])),
        }
        return lambda: as_runnable(make()).with_cache(**kwargs)
    if kind == "fallbacks":
        fallbacks = draw(st.one_of(st.lists(inner, min_size=1, max_size=2), garbage))
        handle = draw(st.sampled_from([(Exception,), (Boom,), None, 1]))
        return lambda: as_runnable(make()).with_fallbacks(
            [f() for f in fallbacks] if isinstance(fallbacks, list) else fallbacks,
            exceptions_to_handle=handle,
        )
    if kind == "rate":
        # Only high rates are valid here: a low one makes later calls wait (by design).
        rate = draw(maybe(st.floats(min_value=1e3, max_value=1e9)))
        burst = draw(maybe(small_count))
        return lambda: as_runnable(make()).with_rate_limit(RateLimiter(rate, burst))
    if kind == "limit":
        limit = draw(maybe(small_count))
        return lambda: as_runnable(make()).with_concurrency_limit(ConcurrencyLimit(limit))
    if kind == "config":
        config = draw(configs)
        return lambda: as_runnable(make()).with_config(config)
    if kind == "bind":
        kwargs = draw(st.dictionaries(st.sampled_from(["k", "config"]), plain, max_size=2))
        return lambda: as_runnable(make()).bind(**kwargs)
    return lambda: as_runnable(make())


def runnables() -> st.SearchStrategy:
    return st.recursive(
        leaf(),
        lambda children: st.one_of(composite(children), wrapped(children)),
        max_leaves=5,
    ).map(lambda make: lambda: as_runnable(make()))


# ---------------------------------------------------------------------------------- configs

config_values = {
    "max_concurrency": maybe(small_count),
    "recursion_limit": maybe(st.integers(min_value=-2, max_value=30)),
    "timeout": st.one_of(st.none(), short_seconds, garbage),
    "tags": maybe(st.lists(st.text(max_size=2), max_size=2)),
    "metadata": maybe(st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)),
    "configurable": maybe(st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)),
    "run_name": maybe(st.text(max_size=3)),
    "rate_limiter": st.one_of(st.none(), st.just(RateLimiter(1e6, burst=100)), garbage),
    "concurrency_limit": st.one_of(st.none(), st.just(ConcurrencyLimit(2)), garbage),
    "other": plain,
}


@st.composite
def config_dicts(draw: Any) -> dict:
    keys = draw(st.lists(st.sampled_from(sorted(config_values)), max_size=3, unique=True))
    return {key: draw(config_values[key]) for key in keys}


configs = st.one_of(st.none(), config_dicts(), config_dicts(), garbage)
batch_configs = st.one_of(configs, st.lists(config_dicts(), max_size=3))

# ------------------------------------------------------------------------------------ calls


async def drain(aiter: Any) -> list:
    return [chunk async for chunk in aiter]


def call_method(runnable: Any, method: str, inputs: list, config: Any, flag: Any) -> Any:
    """Runs `method` of `runnable` to its end, from sync code."""
    first = inputs[0] if inputs else None
    if method == "invoke":
        return runnable.invoke(first, config)
    if method == "ainvoke":
        return asyncio.run(runnable.ainvoke(first, config))
    if method == "batch":
        return runnable.batch(inputs, config, return_exceptions=flag)
    if method == "abatch":
        return asyncio.run(runnable.abatch(inputs, config, return_exceptions=flag))
    if method == "stream":
        return list(runnable.stream(first, config))
    if method == "astream":
        return asyncio.run(drain(runnable.astream(first, config)))
    if method == "transform":
        return list(runnable.transform(iter(inputs), config))
    if method == "atransform":
        return asyncio.run(drain(runnable.atransform(iter(inputs), config)))
    if method == "batch_as_completed":
        return list(runnable.batch_as_completed(inputs, config, return_exceptions=flag))
    return asyncio.run(drain(runnable.abatch_as_completed(inputs, config, return_exceptions=flag)))


METHODS = [
    "invoke",
    "ainvoke",
    "batch",
    "abatch",
    "stream",
    "astream",
    "transform",
    "atransform",
    "batch_as_completed",
    "abatch_as_completed",
]

# What may be raised: fastlcel's own errors (StepTimeoutError included), and what a step's
# function raises on an input it does not take.
DOCUMENTED = (
    FastLcelError,
    Boom,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    RecursionError,
)


def check(outcome: BaseException | None) -> None:
    """A result, or an exception fastlcel documents: never a panic or an internal error."""
    if outcome is None:
        return
    if isinstance(outcome, Hang):
        raise AssertionError(f"the case did not finish within {CASE_SECONDS} s")
    assert not isinstance(outcome, PanicError), outcome
    assert "internal error" not in str(outcome), outcome
    assert isinstance(outcome, DOCUMENTED), repr(outcome)


def under_alarm(run: Callable[[], Any]) -> BaseException | None:
    """Runs `run` in the main thread; a Hang is raised in it after CASE_SECONDS (fastlcel's
    waits notice signals every 50 ms)."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        run()
        return None
    except Exception as exc:  # noqa: BLE001 - every outcome is checked
        return exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("FASTLCEL_FUZZ_RANDOM") is None,
    database=None,
)

pytestmark = [
    pytest.mark.timeout(600, method="thread"),  # a backstop: each case has its own alarm
    pytest.mark.skipif(
        threading.current_thread() is not threading.main_thread(), reason="needs signals"
    ),
]


@FUZZ
@given(
    make=runnables(),
    method=st.sampled_from(METHODS),
    inputs=st.lists(plain, max_size=4),
    config=batch_configs,
    flag=maybe(st.booleans()),
)
def test_every_call_method_of_anything_built_from_anything(
    make: Recipe, method: str, inputs: list, config: Any, flag: Any
) -> None:
    """Constructors and wrappers given fuzzed arguments build or refuse clearly; any call
    method of what they built, on fuzzed inputs and configs, gives a result or a documented
    exception, within the alarm."""
    built: list[Any] = []
    outcome = under_alarm(lambda: built.append(make()))
    if outcome is None:
        if "batch" not in method and isinstance(config, list):
            config = config[0] if config else None
        outcome = under_alarm(lambda: call_method(built[0], method, inputs, config, flag))
        event(f"{method}: {type(outcome).__name__ if outcome else 'result'}")
    else:
        event(f"built: {type(outcome).__name__}")
    check(outcome)

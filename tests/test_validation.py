"""Arguments and config keys are checked alike everywhere: one validation per argument, used by
every constructor, wrapper and call method that takes it. A refusal is a FastLcelTypeError or a
FastLcelValueError naming the argument, showing the value and saying what is allowed; booleans
are not counts; absurdly large values are refused as too large."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import fastlcel
import pytest
from conftest import run_async
from fastlcel import ConcurrencyLimit, FastLcelTypeError, FastLcelValueError, Lambda, RateLimiter

pytestmark = pytest.mark.timeout(30)

ident = Lambda(lambda x: x)

# (call, error, message): `message` is a regex that must be found in the error's text.
REFUSED: dict[str, tuple[Callable[[], Any], type, str]] = {
    # config keys
    "max_concurrency=True": (
        lambda: ident.batch([1], {"max_concurrency": True}),
        FastLcelTypeError,
        r"config\['max_concurrency'\] must be a positive int .*not a bool; got True",
    ),
    "max_concurrency=0": (
        lambda: ident.batch([1], {"max_concurrency": 0}),
        FastLcelValueError,
        r"config\['max_concurrency'\] must be a positive int .*; got 0",
    ),
    "max_concurrency=2**70": (
        lambda: ident.invoke(1, {"max_concurrency": 2**70}),
        FastLcelValueError,
        r"config\['max_concurrency'\] is too large: got 1180591620717411303424; at most",
    ),
    "max_concurrency=1.5": (
        lambda: ident.invoke(1, {"max_concurrency": 1.5}),
        FastLcelTypeError,
        r"config\['max_concurrency'\] .*; got 1\.5 \(a float\)",
    ),
    "recursion_limit=True": (
        lambda: ident.invoke(1, {"recursion_limit": True}),
        FastLcelTypeError,
        r"config\['recursion_limit'\] must be an int, not a bool",
    ),
    "recursion_limit='25'": (
        lambda: ident.invoke(1, {"recursion_limit": "25"}),
        FastLcelTypeError,
        r"config\['recursion_limit'\] must be an int; got '25' \(a str\)",
    ),
    "timeout=True": (
        lambda: ident.invoke(1, {"timeout": True}),
        FastLcelTypeError,
        r"config\['timeout'\] must be a positive number of seconds, not a bool",
    ),
    "timeout=inf": (
        lambda: ident.invoke(1, {"timeout": float("inf")}),
        FastLcelValueError,
        r"config\['timeout'\] is too large: got inf; at most 1e9 seconds",
    ),
    "tags='a'": (
        lambda: ident.invoke(1, {"tags": "a"}),
        FastLcelTypeError,
        r"config\['tags'\] must be a list of str or None; got 'a' \(a str\)",
    ),
    "tags=[1]": (
        lambda: ident.invoke(1, {"tags": [1]}),
        FastLcelTypeError,
        r"config\['tags'\] must be a list of str",
    ),
    "metadata=[]": (
        lambda: ident.invoke(1, {"metadata": []}),
        FastLcelTypeError,
        r"config\['metadata'\] must be a dict or None; got \[\] \(a list\)",
    ),
    "configurable=1": (
        lambda: ident.invoke(1, {"configurable": 1}),
        FastLcelTypeError,
        r"config\['configurable'\] must be a dict or None",
    ),
    "run_name=1": (
        lambda: ident.invoke(1, {"run_name": 1}),
        FastLcelTypeError,
        r"config\['run_name'\] must be a str or None",
    ),
    "rate_limiter=1": (
        lambda: ident.invoke(1, {"rate_limiter": 1}),
        FastLcelTypeError,
        r"config\['rate_limiter'\] must be a fastlcel\.RateLimiter or None",
    ),
    "config=1": (
        lambda: ident.invoke(1, 1),
        FastLcelTypeError,
        r"config must be a dict \(a RunnableConfig\) or None; got 1 \(an int\)",
    ),
    "configs for 2 inputs: 1": (
        lambda: ident.batch([1, 2], [{}]),
        FastLcelValueError,
        r"got 1 configs for 2 inputs",
    ),
    # call arguments
    "return_exceptions=1": (
        lambda: ident.batch([1], return_exceptions=1),
        FastLcelTypeError,
        r"return_exceptions must be True or False; got 1 \(an int\)",
    ),
    "transform(1)": (
        lambda: ident.transform(1),
        FastLcelTypeError,
        r"transform\(input\) must be an iterable of input chunks; got 1 \(an int\)",
    ),
    "atransform(1)": (
        lambda: ident.atransform(1),
        FastLcelTypeError,
        r"atransform\(input\) must be an async iterable or an iterable",
    ),
    # names
    "Lambda(name=1)": (
        lambda: Lambda(abs, name=1),
        FastLcelTypeError,
        r"Lambda\(name\) must be a str or None; got 1 \(an int\)",
    ),
    "pipe(name=1)": (
        lambda: ident.pipe(ident, name=1),
        FastLcelTypeError,
        r"pipe\(name\) must be a str or None",
    ),
    "Sequence(name=b'x')": (
        lambda: fastlcel.Sequence(ident, ident, name=b"x"),
        FastLcelTypeError,
        r"Sequence\(name\) must be a str or None; got b'x' \(a bytes\)",
    ),
    # wrappers
    "with_timeout(2**70)": (
        lambda: ident.with_timeout(2**70),
        FastLcelValueError,
        r"with_timeout\(seconds\) is too large: got 1180591620717411303424; at most 1e9 seconds",
    ),
    "with_timeout(True)": (
        lambda: ident.with_timeout(True),
        FastLcelTypeError,
        r"with_timeout\(seconds\) must be a positive number of seconds, not a bool",
    ),
    "with_timeout('1')": (
        lambda: ident.with_timeout("1"),
        FastLcelTypeError,
        r"with_timeout\(seconds\) must be a positive number of seconds; got '1' \(a str\)",
    ),
    "stop_after_attempt=True": (
        lambda: ident.with_retry(stop_after_attempt=True),
        FastLcelTypeError,
        r"with_retry\(stop_after_attempt\) must be a positive int .*not a bool",
    ),
    "stop_after_attempt=2**70": (
        lambda: ident.with_retry(stop_after_attempt=2**70),
        FastLcelValueError,
        r"with_retry\(stop_after_attempt\) is too large",
    ),
    "stop_after_attempt='3'": (
        lambda: ident.with_retry(stop_after_attempt="3"),
        FastLcelTypeError,
        r"with_retry\(stop_after_attempt\) must be a positive int .*; got '3' \(a str\)",
    ),
    "wait_exponential_jitter=1": (
        lambda: ident.with_retry(wait_exponential_jitter=1),
        FastLcelTypeError,
        r"with_retry\(wait_exponential_jitter\) must be True or False",
    ),
    "exponential_jitter_params initial='1'": (
        lambda: ident.with_retry(exponential_jitter_params={"initial": "1"}),
        FastLcelTypeError,
        r"with_retry\(exponential_jitter_params\['initial'\]\) must be a non-negative number",
    ),
    "exponential_jitter_params max=-1": (
        lambda: ident.with_retry(exponential_jitter_params={"max": -1}),
        FastLcelValueError,
        r"with_retry\(exponential_jitter_params\['max'\]\) must be a non-negative number; got -1",
    ),
    "maxsize=True": (
        lambda: ident.with_cache(maxsize=True),
        FastLcelTypeError,
        r"with_cache\(maxsize\) must be a positive int .*not a bool",
    ),
    "maxsize=2**70": (
        lambda: ident.with_cache(maxsize=2**70),
        FastLcelValueError,
        r"with_cache\(maxsize\) is too large",
    ),
    "maxsize='x'": (
        lambda: ident.with_cache(maxsize="x"),
        FastLcelTypeError,
        r"with_cache\(maxsize\) must be a positive int",
    ),
    "ttl=0": (
        lambda: ident.with_cache(ttl=0),
        FastLcelValueError,
        r"with_cache\(ttl\) must be a positive number of seconds; got 0",
    ),
    # limiters
    "RateLimiter(2**1000)": (
        lambda: RateLimiter(2**1000),
        FastLcelValueError,
        r"RateLimiter\(requests_per_second\) is too large: .*; at most 1e9",
    ),
    "RateLimiter(1e-300)": (
        lambda: RateLimiter(1e-300),
        FastLcelValueError,
        r"RateLimiter\(requests_per_second\) is too small",
    ),
    "RateLimiter(True)": (
        lambda: RateLimiter(True),
        FastLcelTypeError,
        r"RateLimiter\(requests_per_second\) .*not a bool",
    ),
    "RateLimiter('5')": (
        lambda: RateLimiter("5"),
        FastLcelTypeError,
        r"RateLimiter\(requests_per_second\) must be a positive number .*; got '5' \(a str\)",
    ),
    "burst=True": (
        lambda: RateLimiter(5, burst=True),
        FastLcelTypeError,
        r"RateLimiter\(burst\) must be a positive int .*not a bool",
    ),
    "burst=2**70": (
        lambda: RateLimiter(5, burst=2**70),
        FastLcelValueError,
        r"RateLimiter\(burst\) is too large",
    ),
    "burst='x'": (
        lambda: RateLimiter(5, burst="x"),
        FastLcelTypeError,
        r"RateLimiter\(burst\) must be a positive int",
    ),
    "ConcurrencyLimit(True)": (
        lambda: ConcurrencyLimit(True),
        FastLcelTypeError,
        r"ConcurrencyLimit\(limit\) must be a positive int .*not a bool",
    ),
    "ConcurrencyLimit(2**70)": (
        lambda: ConcurrencyLimit(2**70),
        FastLcelValueError,
        r"ConcurrencyLimit\(limit\) is too large",
    ),
    "ConcurrencyLimit('x')": (
        lambda: ConcurrencyLimit("x"),
        FastLcelTypeError,
        r"ConcurrencyLimit\(limit\) must be a positive int .*; got 'x' \(a str\)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_argument_is_refused_with_a_message_that_names_it(case: str) -> None:
    call, error, message = REFUSED[case]
    with pytest.raises(error, match=message):
        call()


# Every class made with name=, as its langchain_core counterpart is.
NAMED = {
    "Lambda": lambda name: fastlcel.Lambda(abs, name=name),
    "Generator": lambda name: fastlcel.Generator(iter, name=name),
    "Sequence": lambda name: fastlcel.Sequence(ident, ident, name=name),
    "Passthrough": lambda name: fastlcel.Passthrough(name=name),
    "Assign": lambda name: fastlcel.Assign(fastlcel.Parallel(a=ident), name=name),
    "Pick": lambda name: fastlcel.Pick("a", name=name),
    "Branch": lambda name: fastlcel.Branch((bool, ident), ident, name=name),
    "Binding": lambda name: fastlcel.Binding(bound=ident, name=name),
    "Each": lambda name: fastlcel.Each(bound=ident, name=name),
    "Retry": lambda name: fastlcel.Retry(bound=ident, name=name),
    "WithFallbacks": lambda name: fastlcel.WithFallbacks(
        runnable=ident, fallbacks=[ident], name=name
    ),
    "Timeout": lambda name: fastlcel.Timeout(ident, 1, name=name),
    "Cached": lambda name: fastlcel.Cached(ident, name=name),
    "Limited": lambda name: fastlcel.Limited(ident, ConcurrencyLimit(1), name=name),
}


@pytest.mark.parametrize("cls", list(NAMED))
def test_every_class_checks_its_name(cls: str) -> None:
    make = NAMED[cls]
    assert make("mine").name == "mine"
    with pytest.raises(FastLcelTypeError, match=rf"^{cls}\(name\) must be a str or None; got 1 "):
        make(1)


class Index:
    """An int-like object (numpy's ints are such): counts accept it."""

    def __index__(self) -> int:
        return 2


@pytest.mark.parametrize(
    "call",
    [
        lambda: ident.batch([1, 2, 3], {"max_concurrency": Index()}),
        lambda: ident.with_retry(stop_after_attempt=Index()).invoke(1),
        lambda: RateLimiter(Fraction(5, 2), burst=Index()),
        lambda: ConcurrencyLimit(Index()),
        lambda: ident.with_timeout(Fraction(1, 2)).invoke(1),
        lambda: ident.with_cache(maxsize=Index(), ttl=2).invoke(1),
        lambda: ident.invoke(1, {"tags": ("a", "b"), "metadata": {}, "run_name": "r"}),
        lambda: ident.invoke(1, {"max_concurrency": None, "timeout": None, "tags": None}),
    ],
    ids=["max_concurrency", "attempts", "rate", "limit", "timeout", "cache", "keys", "none"],
)
def test_int_like_and_real_numbers_and_none_are_accepted(call: Callable[[], Any]) -> None:
    call()


BAD_CONFIG = {"max_concurrency": True}


def every_call_method(config: Any, step: Any = ident) -> dict[str, Callable[[], Any]]:
    """Every call method of `step`, given `config`, as a thunk run synchronously."""
    return {
        "invoke": lambda: step.invoke(1, config),
        "ainvoke": lambda: run_async(lambda: step.ainvoke(1, config)),
        "batch": lambda: step.batch([1], config),
        "abatch": lambda: run_async(lambda: step.abatch([1], config)),
        "stream": lambda: step.stream(1, config),
        "astream": lambda: step.astream(1, config),
        "transform": lambda: step.transform([1], config),
        "atransform": lambda: step.atransform([1], config),
        "batch_as_completed": lambda: step.batch_as_completed([1], config),
        "abatch_as_completed": lambda: step.abatch_as_completed([1], config),
        "with_config": lambda: step.with_config(config),
        "with_config, then invoke": lambda: step.with_config(tags=["t"]).invoke(1, config),
    }


@pytest.mark.parametrize("config", [BAD_CONFIG, 7, {"timeout": -1}, {"tags": "t"}], ids=repr)
def test_every_call_method_refuses_a_bad_config_alike_at_the_call(config: Any) -> None:
    """The same refusal, at the call itself (an iterator before its first item)."""
    messages = set()
    for name, call in every_call_method(config).items():
        with pytest.raises((FastLcelTypeError, FastLcelValueError)) as raised:
            call()
        messages.add(str(raised.value))
        assert str(raised.value), name
    assert len(messages) == 1, messages


def test_a_bad_config_in_a_batch_list_is_refused_by_every_batch_method() -> None:
    configs = [{}, {"recursion_limit": "x"}]
    for call in [
        lambda: ident.batch([1, 2], configs),
        lambda: run_async(lambda: ident.abatch([1, 2], configs)),
        lambda: ident.batch_as_completed([1, 2], configs),
        lambda: ident.abatch_as_completed([1, 2], configs),
    ]:
        with pytest.raises(FastLcelTypeError, match=r"config\['recursion_limit'\] must be an int"):
            call()


def test_nothing_runs_when_a_call_is_refused() -> None:
    ran: list[int] = []
    step = Lambda(lambda x: ran.append(x))
    for call in every_call_method({"max_concurrency": 0}, step).values():
        with pytest.raises(FastLcelValueError):
            call()
    asyncio.run(asyncio.sleep(0.01))
    assert ran == []
    step.invoke(1)
    assert ran == [1]

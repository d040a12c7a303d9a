"""The garbage collector frees reference cycles that run through a fault-tolerance wrapper."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from fastlcel import ConcurrencyLimit, Lambda, Parallel, RateLimiter, Runnable

WRAPPERS: dict[str, Callable[[Runnable], Runnable]] = {
    "retry": lambda r: r.with_retry(retry_if_exception_type=lambda e: True),
    "fallbacks": lambda r: Lambda(abs).with_fallbacks([r], exception_key="error"),
    "timeout": lambda r: r.with_timeout(1),
    "rate_limit": lambda r: r.with_rate_limit(RateLimiter(1000)),
    "concurrency_limit": lambda r: r.with_concurrency_limit(ConcurrencyLimit(2)),
    "cache": lambda r: r.with_cache(key=lambda x: x),
    "parallel_merge": lambda r: Parallel(a=r, merge=lambda d: d),
}


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=list(WRAPPERS))
def test_cycle_through_a_wrapper_is_collected(wrap: Callable[[Runnable], Runnable]) -> None:
    class Holder:
        runnable: Any = None

    def make_cycle() -> weakref.ref[Holder]:
        holder = Holder()
        holder.runnable = wrap(Lambda(lambda x, h=holder: x))
        return weakref.ref(holder)

    ref = make_cycle()
    gc.collect()
    assert ref() is None

"""The asyncio control flow of fastlcel's fault-tolerance wrappers (private; called from Rust).

The sync paths live in Rust. Here, each wrapper's ``awaitable`` is one of these coroutines; it runs
as a task on the caller's loop and awaits the wrapped step through ``attempt(input)``, which
returns the step's own awaitable (or the future of a sync step running on the thread pool).
Waits are ``asyncio`` timers: they never block the loop or hold a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastlcel._core import _step_timeout_error

_Attempt = Callable[[Any], Any]


async def timeout(step: Any, seconds: float, name: str) -> Any:
    """Await ``step``; cancel it and raise ``StepTimeoutError`` after ``seconds``."""
    future = asyncio.ensure_future(step)
    expired = False

    def expire() -> None:
        nonlocal expired
        if not future.done():
            expired = True
            future.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await future
    except asyncio.CancelledError:
        if expired:
            raise _step_timeout_error(name, seconds) from None
        raise
    finally:
        timer.cancel()


async def retry(attempt: _Attempt, input: Any, policy: Any) -> Any:
    """``attempt(input)`` until it succeeds, ``policy.should_retry(exc)`` is false or
    ``policy.stop_after_attempt`` attempts failed; the last exception is raised as is."""
    failed = 0
    while True:
        try:
            return await attempt(input)
        except Exception as exc:
            failed += 1
            if failed >= policy.stop_after_attempt or not policy.should_retry(exc):
                raise
        await asyncio.sleep(policy.wait(failed))


async def fallbacks(
    attempts: list[_Attempt],
    input: Any,
    handled: tuple[type[BaseException], ...],
    with_error: Callable[[Any, BaseException], Any] | None,
) -> Any:
    """Each attempt in turn until one succeeds; a ``handled`` error moves on to the next, the
    first one is raised if all fail. ``with_error(input, error)`` makes a fallback's input."""
    first_error: BaseException | None = None
    last_error: BaseException | None = None
    for attempt in attempts:
        step_input = input
        if with_error is not None and last_error is not None:
            step_input = with_error(input, last_error)
        try:
            return await attempt(step_input)
        except handled as exc:
            if not isinstance(exc, Exception):
                raise  # cancellation is never handled
            if first_error is None:
                first_error = exc
            last_error = exc
    assert first_error is not None
    raise first_error


async def rate_limited(limiter: Any, attempt: _Attempt, input: Any) -> Any:
    """``attempt(input)`` once ``limiter`` (a ``RateLimiter``) lets it start."""
    await limiter.aacquire()
    return await attempt(input)


async def concurrency_limited(limit: Any, attempt: _Attempt, input: Any) -> Any:
    """``attempt(input)`` holding a permit of ``limit`` (a ``ConcurrencyLimit``)."""
    waiter = limit._acquire()
    if waiter is not None:
        try:
            await waiter
        except BaseException:
            limit._abandon(waiter)
            raise
    try:
        return await attempt(input)
    finally:
        limit._release()


async def cached(call: Any) -> Any:
    """A cached call: a hit, a wait for the same key's computation, or the computation."""
    while True:
        value, waiter, slot = call.lookup()
        if slot is None:
            return value
        if waiter is not None:
            value = await waiter
            if value is slot:
                continue  # the computing call was cancelled: look again
            return value
        try:
            value = await call.attempt()
        except BaseException as exc:
            call.fail(slot, exc)
            raise
        call.store(slot, value)
        return value

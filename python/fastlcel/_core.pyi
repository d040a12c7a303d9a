"""The native core of fastlcel (a Rust extension module built with PyO3).

Everything here is re-exported from :mod:`fastlcel`; import it from there.
"""

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
)
from collections.abc import Sequence as _Seq
from typing import Any, Literal, TypeAlias, final

from typing_extensions import disjoint_base

_Config: TypeAlias = Mapping[str, Any]

__version__: str
__all__ = [
    "FastLcelError",
    "PanicError",
    "StepTimeoutError",
    "FastLcelTypeError",
    "FastLcelValueError",
    "Runnable",
    "Lambda",
    "Parallel",
    "Sequence",
    "Passthrough",
    "Assign",
    "Pick",
    "Branch",
    "Binding",
    "Generator",
    "Cached",
    "RunnableLambda",
    "RunnableParallel",
    "RunnableMap",
    "RunnableSequence",
    "RunnablePassthrough",
    "RunnableAssign",
    "RunnablePick",
    "RunnableBranch",
    "RunnableBinding",
    "RunnableGenerator",
    "RateLimiter",
    "ConcurrencyLimit",
]

def _shutdown() -> None:
    """Registered with atexit: lets running steps finish, keeps pool threads out of Python."""

def _after_fork_in_child() -> None:
    """Registered with os.register_at_fork: the child starts an empty thread pool."""

def _stop_loop(event_loop: Any) -> None:
    """At exit, on fastlcel's bridged event loop: cancels its tasks and stops it."""

def _debug_panic_in_pool() -> None:
    """Test hook: panics on a pool thread; raises PanicError."""

def _debug_set_hard_limit(threads: int) -> None:
    """Test hook: lowers the thread pool's hard limit (threads in all, 4096 by default)."""

class FastLcelError(Exception):
    """Base class of every exception raised by fastlcel itself (never of user exceptions)."""

class PanicError(FastLcelError):
    """A bug inside fastlcel's Rust code (a Rust panic) surfaced as a Python exception."""

class StepTimeoutError(FastLcelError, TimeoutError):
    """A step did not finish within its timeout (``with_timeout`` or the ``timeout`` config key).

    ``step`` is the step's name, ``timeout`` the limit in seconds. It is a ``TimeoutError`` too,
    and an ``Exception``: ``with_retry`` retries it and ``with_fallbacks`` handles it by default.
    """

    step: str
    timeout: float

class FastLcelTypeError(FastLcelError, TypeError):
    """Something given to fastlcel has the wrong type (a step, a config value, an argument).

    A ``TypeError`` too, so code written for langchain_core keeps catching it.
    """

class FastLcelValueError(FastLcelError, ValueError):
    """Something given to fastlcel has a wrong value (a config value, an argument, an input that
    must be a dict). A ``ValueError`` too, so code written for langchain_core keeps catching it.
    """

@final
class RateLimiter:
    """At most ``requests_per_second`` calls per second on average, up to ``burst`` at once.

    One limiter can be shared by many runnables (``runnable.with_rate_limit(limiter)``, or the
    ``rate_limiter`` config key), threads and event loops: each call reserves the next free slot
    (GCRA, a token bucket without a refill thread) and waits for it; sync callers wait with the
    GIL released, async callers on the event loop. Calls start in the order they asked.

    ``requests_per_second`` is a number from 1e-9 to 1e9; ``burst`` a positive int.

    >>> limiter = RateLimiter(20)  # 20 calls/s, one every 50 ms
    >>> llm = Lambda(call_model).with_rate_limit(limiter)
    """

    def __new__(cls, requests_per_second: float, burst: int = 1) -> RateLimiter: ...
    @property
    def requests_per_second(self) -> float: ...
    @property
    def burst(self) -> int: ...
    def acquire(self) -> None:
        """Block until a call may start (the GIL is released while waiting)."""
    def aacquire(self) -> Awaitable[None]:
        """Reserve a slot now; awaiting the result waits for it without blocking the loop."""

@final
class ConcurrencyLimit:
    """At most ``limit`` calls in flight at once, across every runnable, thread and event loop
    that shares it (``runnable.with_concurrency_limit(limit)`` or the ``concurrency_limit``
    config key): a provider's cap that nested fan-outs cannot exceed.

    A call holds its permit while it runs; waiting callers get permits in arrival order. Do not
    put the same limit on a step and on steps inside it: the outer call would hold a permit while
    its inner calls wait for one (with ``limit`` outer calls running, that never ends).
    ``limit`` is a positive int.
    """

    def __new__(cls, limit: int) -> ConcurrencyLimit: ...
    @property
    def limit(self) -> int: ...
    @property
    def in_use(self) -> int:
        """Permits held right now."""

@disjoint_base
class Runnable:
    """Base class of every fastlcel runnable (it cannot be instantiated itself).

    Every runnable has the langchain_core methods ``invoke``, ``ainvoke``, ``batch`` and
    ``abatch``. Sync code runs on the calling thread and fastlcel's thread pool, with the GIL
    released while the caller waits; async code runs on the caller's event loop. A step that
    has only an async implementation, reached from a sync call, runs on fastlcel's own event
    loop in a background thread (langchain_core raises ``TypeError`` there).

    Keyword arguments of every call method reach the function of a :class:`Lambda` (or a
    foreign runnable's method), as in langchain_core.

    A sync step may fan out inside itself (a step calling ``invoke`` of a Parallel, or
    ``batch``), at any depth and in any number: when every pool thread holds such a step, each
    runs its own fan-out's steps itself instead of waiting for a thread (``max_concurrency``
    still holds), so it never deadlocks. Then a failure of a sibling is raised once the step
    the caller runs ends.

    Every argument and config key is checked when given, alike on every path:
    :class:`FastLcelTypeError` for a wrong type, :class:`FastLcelValueError` for a wrong value,
    naming the argument and showing the value. Counts are positive ints (never ``True``),
    durations positive seconds up to 1e9 (``None`` is "no limit"); larger values are refused as
    too large. A config is checked by the call, before anything runs (by an iterator's call
    too, not at its first item).
    """

    @property
    def name(self) -> str:
        """A Lambda's function name, ``Parallel<a,b>`` for a Parallel."""
    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        """langchain_core's ``get_name``: ``name`` (default :attr:`name`) with ``suffix``
        appended (``NameSuffix`` after a capital, else ``name_suffix``)."""
    def invoke(self, input: Any, config: _Config | None = None, **kwargs: Any) -> Any:
        """Run on ``input`` and return the result.

        ``config`` is a dict like langchain's RunnableConfig; ``max_concurrency`` (a positive
        int or ``None``) caps the calls in flight of each fan-out; ``recursion_limit`` is an int;
        ``tags`` a list of str, ``metadata`` and ``configurable`` dicts, ``run_name`` a str. The
        first failure is raised at once (the original exception object, its traceback intact);
        steps not yet started never start.

        Three more config keys apply to this call (to each input of a batch), once, not again to
        every step inside it: ``timeout`` (seconds, see :meth:`with_timeout`), ``rate_limiter``
        (a :class:`RateLimiter`) and ``concurrency_limit`` (a :class:`ConcurrencyLimit`).
        """
    def ainvoke(
        self, input: Any, config: _Config | None = None, **kwargs: Any
    ) -> Coroutine[Any, Any, Any]:
        """Await the result on the running event loop; sync code runs on the thread pool and
        never blocks the loop. Cancelling the await cancels every step still running."""
    def batch(
        self,
        inputs: _Seq[Any],
        config: _Config | _Seq[_Config] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """``invoke`` on every input at once; results in input order.

        ``config`` is one config for all inputs or one per input; ``max_concurrency`` (of the
        first) caps the items in flight. The first failure is raised at once and items not yet
        started never start, unless ``return_exceptions`` is ``True``: then each exception
        object takes its item's slot (a BaseException that is not an Exception, such as
        KeyboardInterrupt, is raised even so, as the same object).
        """
    def abatch(
        self,
        inputs: _Seq[Any],
        config: _Config | _Seq[_Config] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, list[Any]]:
        """The asyncio counterpart of :meth:`batch`."""
    def batch_as_completed(
        self,
        inputs: _Seq[Any],
        config: _Config | _Seq[_Config] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` pairs as the items of a batch finish. The config is checked at
        the call; a failure (or a step's BaseException) ends the iteration as :meth:`batch`
        raises it."""
    def abatch_as_completed(
        self,
        inputs: _Seq[Any],
        config: _Config | _Seq[_Config] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[tuple[int, Any]]:
        """The async counterpart of :meth:`batch_as_completed`."""
    def stream(self, input: Any, config: _Config | None = None, **kwargs: Any) -> Iterator[Any]:
        """Chunks of the output as they are produced (langchain_core semantics: a generator
        function streams chunk by chunk, a plain function yields one chunk, a Parallel yields
        one-key dicts as its steps produce chunks, whose ``+`` sum is the ``invoke`` result)."""
    def transform(
        self, input: Iterable[Any], config: _Config | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Like :meth:`stream`, for an iterator of input chunks."""
    def astream(
        self, input: Any, config: _Config | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """The async counterpart of :meth:`stream`."""
    def atransform(
        self, input: Any, config: _Config | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """The async counterpart of :meth:`transform` (input: an async or sync iterable)."""
    def __or__(self, other: Any, /) -> Runnable:
        """``self | other``: a :class:`Sequence`; dicts and callables are coerced."""
    def __ror__(self, other: Any, /) -> Runnable:
        """``other | self`` for a dict or a callable on the left."""
    def pipe(self, *others: Any, name: str | None = None) -> Runnable:
        """``self | others[0] | others[1] ...`` as one :class:`Sequence`."""
    def assign(self, **steps: Any) -> Runnable:
        """``self | Passthrough.assign(**steps)``: the output dict plus computed keys."""
    def pick(self, keys: str | list[str]) -> Runnable:
        """``self | Pick(keys)``: one key of the output dict, or a dict of several."""
    def with_config(self, config: _Config | None = None, **kwargs: Any) -> Runnable:
        """A :class:`Binding` with a config of its own, merged under each call's config (tags
        united, metadata and configurable merged, as langchain_core's ``merge_configs``)."""
    def bind(self, **kwargs: Any) -> Runnable:
        """A :class:`Binding` passing ``kwargs`` to the function (or a foreign ``invoke``)."""
    def with_retry(
        self,
        *,
        retry_if_exception_type: tuple[type[BaseException], ...]
        | type[BaseException]
        | Callable[[BaseException], bool]
        | None = None,
        wait_exponential_jitter: bool = True,
        exponential_jitter_params: Mapping[str, float] | None = None,
        stop_after_attempt: int = 3,
    ) -> Runnable:
        """A runnable that retries this one when it raises, like langchain_core's.

        ``retry_if_exception_type`` (``None``: ``(Exception,)``) is a tuple of exception classes,
        or a function ``exc -> bool``. Between attempts it waits ``initial * exp_base ** (n - 1)
        + uniform(0, jitter)`` seconds, at most ``max`` (``exponential_jitter_params``; defaults
        initial=1, max=60, exp_base=2, jitter=1), or not at all if ``wait_exponential_jitter`` is
        false (``True`` or ``False``; the parameters are non-negative seconds). After
        ``stop_after_attempt`` attempts (a positive int) the last exception is raised as is. Waits
        hold neither the GIL nor the event loop. In ``batch``/``abatch`` each input is retried on
        its own: only failing inputs run again, and every result stays in its own slot.
        """
    def with_fallbacks(
        self,
        fallbacks: _Seq[Any],
        *,
        exceptions_to_handle: tuple[type[BaseException], ...] | None = None,
        exception_key: str | None = None,
    ) -> Runnable:
        """A runnable that tries each of ``fallbacks`` in turn when this one raises one of
        ``exceptions_to_handle`` (``None``: ``(Exception,)``), like langchain_core's. If all fail,
        the first exception is raised.

        With ``exception_key``, the input must be a dict: each fallback gets a *copy* of it with
        the previous error under that key (langchain_core writes into the caller's dict). In a
        batch, each input behaves as in ``invoke``. A BaseException that is not an Exception
        (Ctrl-C, cancellation) is never handled.
        """
    def with_timeout(self, seconds: float) -> Runnable:
        """A runnable that raises :class:`StepTimeoutError` if this one runs past ``seconds``.

        An async step is cancelled at the deadline. A sync step cannot be stopped: the caller
        stops waiting at the deadline, and the thread's late result is discarded; such a step
        gets a thread of its own even when the pool's 512 are busy (up to 4,096 threads in all;
        past that, :class:`FastLcelError`). Inside a ``Parallel`` a timeout fails its step like
        any other error. The ``timeout`` config key does the same for one call (each input of a
        batch). ``seconds``: a positive number up to 1e9.
        """
    def with_rate_limit(self, limiter: RateLimiter) -> Runnable:
        """A runnable whose calls start no faster than ``limiter`` allows."""
    def with_concurrency_limit(self, limit: ConcurrencyLimit) -> Runnable:
        """A runnable whose calls in flight hold a permit of ``limit``."""
    def with_cache(
        self,
        *,
        maxsize: int | None = 128,
        ttl: float | None = None,
        key: Callable[[Any], Hashable] | None = None,
    ) -> Cached:
        """A runnable that memoizes this one's results by input (or by ``key(input)``).

        At most ``maxsize`` results are kept (a positive int; least recently used dropped first;
        ``None``: no bound), each for ``ttl`` seconds (up to 1e9; ``None``: forever). The cache
        is shared by every thread and event loop; concurrent calls with the same key run the step
        once and share its result (or its exception). Exceptions are not cached. The config is
        not part of the key, and a hit returns the same object, not a copy.
        """

@final
class Lambda(Runnable):
    """Wrap a function as a runnable, like ``langchain_core.runnables.RunnableLambda``.

    ``func`` is called by ``invoke``/``batch``; an ``async def`` function (given as ``func`` or as
    ``afunc``) is awaited by ``ainvoke``/``abatch`` on the caller's event loop. A sync-only Lambda
    awaited from asyncio runs on fastlcel's thread pool and never blocks the loop. ``invoke`` of
    an async-only Lambda awaits it on fastlcel's own event loop, in a background thread
    (langchain_core raises ``TypeError``). A function with a parameter named ``config``
    receives the call's config dict.

    >>> Lambda(lambda x: x + 1).invoke(1)
    2
    """

    def __new__(
        cls,
        func: Callable[..., Any],
        afunc: Callable[..., Awaitable[Any]] | None = None,
        name: str | None = None,
    ) -> Lambda: ...
    @property
    def func(self) -> Callable[..., Any] | None:
        """The sync function (``None`` for an async-only Lambda)."""
    @property
    def afunc(self) -> Callable[..., Awaitable[Any]] | None:
        """The async function (``None`` for a sync-only Lambda)."""

@final
class Parallel(Runnable):
    """Run several steps on the same input at once and collect a dict of their results.

    A drop-in for ``langchain_core.runnables.RunnableParallel``. Steps may be runnables, plain
    callables, dicts (a nested :class:`Parallel`), ``operator.itemgetter`` objects or any object
    with ``invoke``/``ainvoke`` (a langchain_core Runnable, say). Keyword steps override those of
    ``mapping``. The result keeps the declared key order.

    >>> Parallel(a=lambda x: x + 1, b=lambda x: x * 2).invoke(3)
    {'a': 4, 'b': 6}

    ``on_error="collect"`` runs every step even when some fail and puts each failed step's
    exception object in its slot (``"raise"``, the default, raises the first failure at once).
    ``merge`` shapes the result: ``"dict"`` (default), ``"list"`` (results in key order) or a
    function that takes the result dict. Both are keyword options, so a step named ``on_error``
    or ``merge`` must be passed in ``mapping``: ``Parallel({"merge": step})``.
    """

    def __new__(
        cls,
        mapping: Mapping[str, Any] | None = None,
        /,
        *,
        on_error: Literal["raise", "collect"] = "raise",
        merge: Literal["dict", "list"] | Callable[[dict[str, Any]], Any] = "dict",
        **steps: Any,
    ) -> Parallel: ...
    @property
    def steps(self) -> dict[str, Any]:
        """The steps after coercion, in declared order (``steps__`` in langchain_core)."""

@final
class Sequence(Runnable):
    """Steps run one after the other, each on the previous one's output, like
    ``langchain_core.runnables.RunnableSequence``; usually made with ``|``. Nested sequences are
    flattened; at least 2 steps."""

    def __new__(cls, *steps: Any, name: str | None = None) -> Sequence: ...
    @property
    def steps(self) -> list[Any]: ...
    @property
    def first(self) -> Any: ...
    @property
    def last(self) -> Any: ...

@final
class Passthrough(Runnable):
    """Passes its input through unchanged (``RunnablePassthrough``); with ``func``, calls it on
    the input first, for side effects."""

    def __new__(cls, func: Callable[..., Any] | None = None) -> Passthrough: ...
    @staticmethod
    def assign(**steps: Any) -> Runnable:
        """The input dict plus one key per step, computed from the input (``RunnableAssign``).
        A non-dict input raises ``ValueError``, as in langchain_core."""

@final
class Assign(Runnable):
    """The input dict plus computed keys (``RunnableAssign``)."""

    def __new__(cls, mapper: Parallel | Mapping[str, Any]) -> Assign: ...
    @property
    def mapper(self) -> Parallel: ...

@final
class Pick(Runnable):
    """One key of the input dict (its value, or None), or a dict of the listed keys present
    (None if none is), like ``RunnablePick``."""

    def __new__(cls, keys: str | list[str]) -> Pick: ...
    @property
    def keys(self) -> str | list[str]: ...

@final
class Branch(Runnable):
    """``Branch((condition, runnable), ..., default)``: runs the first runnable whose condition
    is true on the input, else the default (``RunnableBranch``)."""

    def __new__(cls, *branches: Any) -> Branch: ...
    @property
    def branches(self) -> list[tuple[Any, Any]]: ...
    @property
    def default(self) -> Any: ...

@final
class Binding(Runnable):
    """A runnable with a config and keyword arguments of its own (``RunnableBinding``); made by
    :meth:`Runnable.with_config` and :meth:`Runnable.bind`."""

    @property
    def bound(self) -> Any: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def kwargs(self) -> dict[str, Any]: ...

@final
class Generator(Runnable):
    """A generator function over the stream of input chunks (``RunnableGenerator``):
    ``transform(chunks)`` yields output chunks, ``atransform`` is its async counterpart;
    ``invoke`` returns the sum of the chunks. Coercion makes one from a generator function."""

    def __new__(
        cls,
        transform: Callable[..., Any],
        atransform: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
    ) -> Generator: ...
    @property
    def func(self) -> Callable[..., Any] | None: ...
    @property
    def afunc(self) -> Callable[..., Any] | None: ...

@final
class Cached(Runnable):
    """A runnable with memoized results, made by :meth:`Runnable.with_cache`."""

    def cache_clear(self) -> None:
        """Forget every cached result."""
    def cache_info(self) -> dict[str, int | None]:
        """``{"hits": ..., "misses": ..., "size": ..., "maxsize": ...}``."""

# langchain_core's names for the same classes.
RunnableLambda = Lambda
RunnableParallel = Parallel
RunnableMap = Parallel
RunnableSequence = Sequence
RunnablePassthrough = Passthrough
RunnableAssign = Assign
RunnablePick = Pick
RunnableBranch = Branch
RunnableBinding = Binding
RunnableGenerator = Generator

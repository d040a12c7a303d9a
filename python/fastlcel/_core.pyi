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
from concurrent.futures import Future
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar, final

from typing_extensions import disjoint_base

_Config: TypeAlias = Mapping[str, Any]
_In = TypeVar("_In")
_Out = TypeVar("_Out")
_Other = TypeVar("_Other")

class _Executor(Protocol):
    """What ``Lambda(..., executor=...)`` takes: ``concurrent.futures.Executor``'s ``submit``."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]: ...

__version__: str
__all__ = [
    "FastLcelError",
    "PanicError",
    "ExecutorError",
    "BlockingStepWarning",
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
    "WithFallbacks",
    "Retry",
    "Each",
    "Timeout",
    "Limited",
    "Cached",
    "chain",
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
    "RunnableWithFallbacks",
    "RunnableRetry",
    "RunnableEach",
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

class ExecutorError(FastLcelError):
    """A step could not run on its executor (``Lambda(..., executor=...)``): ``submit`` raised,
    the executor is broken (a ``BrokenProcessPool``: every later call gets this error too, at
    once), it cancelled the call itself, or the function, its input or its keyword arguments
    could not be pickled to cross to it. The message names the step; the executor's own exception
    is the ``__cause__``. An exception raised by the function itself is never wrapped.
    """

class BlockingStepWarning(RuntimeWarning):
    """An async step held the event loop longer than a threshold in one go.

    A blocking call inside an ``async def`` step (``time.sleep``, ``requests.get``, file IO)
    stalls every other task of the loop while it runs. When the ``warn_blocking`` config key
    asks for it (or the loop is in asyncio's debug mode), fastlcel times each resumption of an
    async step's coroutine (a ``Lambda``'s ``async def``, another runnable's ``ainvoke``) and
    warns once per step when one passes the threshold (100 ms by default; the loop's
    ``slow_callback_duration`` in debug mode). Time spent in a runnable the step awaits counts
    for that runnable's own steps. The warning points at the step's function; ``step`` is the
    step's name (as its run is named), ``seconds`` how long it held the loop. Turned into an
    error (``-W error::fastlcel.BlockingStepWarning``), it fails the step.
    """

    step: str
    seconds: float

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
    def __reduce__(self) -> tuple[Any, ...]:
        """Pickling: a copy (in another process, say) is a new limiter with the same rate,
        sharing nothing with this one."""
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
    def __reduce__(self) -> tuple[Any, ...]:
        """Pickling: a copy (in another process, say) is a new limit of the same size, no
        permit held, sharing nothing with this one."""
    @property
    def limit(self) -> int: ...
    @property
    def in_use(self) -> int:
        """Permits held right now."""

@disjoint_base
class Runnable(Generic[_In, _Out]):
    """Base class of every fastlcel runnable (it cannot be instantiated itself).

    Every runnable has the langchain_core methods ``invoke``, ``ainvoke``, ``batch`` and
    ``abatch``. Sync code runs on the calling thread and fastlcel's thread pool, with the GIL
    released while the caller waits; async code runs on the caller's event loop. A step that
    has only an async implementation, reached from a sync call, runs on fastlcel's own event
    loop in a background thread (langchain_core raises ``TypeError`` there).

    Keyword arguments of every call method reach the function of a :class:`Lambda` (or a
    foreign runnable's method), as in langchain_core.

    Tracing: when callbacks are configured (``config["callbacks"]``, LangSmith tracing by
    environment or context, ``collect_runs()``, or a parent runnable's config), every runnable
    opens and closes its run through langchain_core's callback managers, exactly as
    langchain_core's runnables do (names, tags such as ``seq:step:1``, inputs, outputs,
    errors); a function's config-less inner calls nest under its run. Otherwise nothing is paid.

    The classes are generic like langchain_core's (``RunnableLambda[int, str](f)``) and may be
    subclassed in Python: a subclass that overrides ``invoke``, ``ainvoke``, ``transform`` or
    ``atransform`` is called through them wherever it runs, inside chains too (``batch`` and
    ``stream`` reach them as in langchain_core); so is a runnable whose instance has one of them
    set (a test's spy) before it is put in a chain. A subclass's ``__init__`` must call the
    fastlcel class's. Runnables pickle (``pickle``, ``cloudpickle``, ``copy``): a copy is made
    from the same arguments; a cache starts empty; a limiter in another process is a new one.

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

    def __class_getitem__(cls, key: Any) -> Any:
        """``RunnableLambda[int, str]``: a generic alias; an instance made through it records
        it as ``__orig_class__`` (its types, for the classes langchain_core types so)."""
    @property
    def name(self) -> str | None:
        """langchain_core's ``name``: the name given (``name=``, a Lambda's function name), or
        None; settable."""
    @name.setter
    def name(self, value: str | None) -> None: ...
    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        """langchain_core's ``get_name``: ``name``, else this runnable's name (its ``name``, or
        the one langchain_core gives its class: ``RunnableLambda``, ``RunnableParallel<a,b>``,
        a binding's runnable's), with ``suffix`` appended (``NameSuffix`` after a capital,
        else ``name_suffix``)."""
    # langchain_core's introspection API, answered as langchain_core's own classes answer it
    # (each method imports langchain_core when called; the results are its objects).
    @property
    def InputType(self) -> Any:  # noqa: N802
        """The type of the input, as langchain_core infers it (a function's annotations, the
        steps of a composite, the generic parameters, ``with_types``)."""
    @property
    def OutputType(self) -> Any:  # noqa: N802
        """The type of the output, as langchain_core infers it."""
    @property
    def input_schema(self) -> Any:
        """A pydantic model of the input (``get_input_schema()``)."""
    @property
    def output_schema(self) -> Any:
        """A pydantic model of the output (``get_output_schema()``)."""
    def get_input_schema(self, config: _Config | None = None) -> Any:
        """A pydantic model of the input, as langchain_core infers it: from a function's first
        parameter and the keys it reads, an itemgetter's keys, a Sequence's first steps, a
        Parallel's, Assign's or Branch's steps."""
    def get_output_schema(self, config: _Config | None = None) -> Any:
        """A pydantic model of the output, as langchain_core infers it."""
    def get_input_jsonschema(self, config: _Config | None = None) -> dict[str, Any]:
        """The JSON schema of the input."""
    def get_output_jsonschema(self, config: _Config | None = None) -> dict[str, Any]:
        """The JSON schema of the output."""
    @property
    def config_specs(self) -> list[Any]:
        """The configurable fields of this runnable and of the runnables in it."""
    def config_schema(self, *, include: _Seq[str] | None = None) -> Any:
        """A pydantic model of the config this runnable accepts."""
    def get_config_jsonschema(self, *, include: _Seq[str] | None = None) -> dict[str, Any]:
        """The JSON schema of the config this runnable accepts."""
    def get_graph(self, config: _Config | None = None) -> Any:
        """A langchain_core ``Graph`` of this runnable, composites drawn with their steps."""
    def get_prompts(self, config: _Config | None = None) -> list[Any]:
        """The prompt templates among the runnables in it."""
    def as_tool(
        self,
        args_schema: Any = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: dict[str, type] | None = None,
    ) -> Any:
        """A langchain_core ``BaseTool`` that runs this runnable (langchain_core's ``as_tool``)."""
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

        ``progress`` shows a progress bar over the call's first fan-out (a :class:`Parallel`'s
        steps, a ``map()``'s items; for :meth:`batch`, :meth:`abatch` and the as-completed
        iterators, the inputs): items done of total, failures so far, rate and ETA, drawn by
        tqdm when it is installed (``pip install 'fastlcel[progress]'``), else as one line
        rewritten on stderr. ``True`` labels it with the runnable's name; a str is the label; a
        dict is tqdm's keyword arguments (``{"desc": "embed", "leave": False}``; the plain line
        reads ``desc``). One bar per call: fan-outs inside it show none, and a ``with_config``
        binding's own ``progress`` is not shown. ``None`` or ``False`` (the default): nothing
        is drawn and nothing is counted.

        ``warn_blocking`` watches this call's async steps for holding the event loop (see
        :class:`BlockingStepWarning`): ``True`` (100 ms), a threshold in seconds, or ``False``
        (never, even in asyncio's debug mode); by default (``None``) only when the loop is in
        debug mode. In :meth:`with_config`, it watches that runnable's steps.
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
    def astream_events(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """langchain_core's ``astream_events`` (``version="v2"`` or ``"v1"``, with the
        ``include_*``/``exclude_*`` filters): the start, stream and end events of this call's
        runs and of every step's inside it, as langchain_core reports them. Needs
        langchain_core."""
    def stream_events(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """langchain_core's ``stream_events``. Needs langchain_core."""
    def astream_log(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """langchain_core's ``astream_log``: the run log of this call as JSON patches. Needs
        langchain_core."""
    def with_listeners(self, *args: Any, **kwargs: Any) -> Any:
        """langchain_core's ``with_listeners(on_start=..., on_end=..., on_error=...)``: this
        runnable with functions called with each run. Needs langchain_core."""
    def with_alisteners(self, *args: Any, **kwargs: Any) -> Any:
        """langchain_core's ``with_alisteners``: ``with_listeners`` with async functions."""
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
    def with_types(self, input_type: Any = None, output_type: Any = None) -> Runnable:
        """A :class:`Binding` declaring the input and output types (its schemas follow them),
        as langchain_core's ``with_types`` (LangServe's ``add_routes`` reads them)."""
    def map(self) -> Each:
        """A runnable that runs this one on every item of a list input, at once (an
        :class:`Each`, langchain_core's ``RunnableEach``)."""
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

        An async step is cancelled at the deadline, and so is the future of a step on an
        executor (see :class:`Lambda`). A sync step cannot be stopped: the caller stops waiting
        at the deadline, and the thread's late result is discarded; such a step gets a thread of
        its own even when the pool's 512 are busy (up to 4,096 threads in all; past that,
        :class:`FastLcelError`). Inside a ``Parallel`` a timeout fails its step like any other
        error. The ``timeout`` config key does the same for one call (each input of a batch).
        ``seconds``: a positive number up to 1e9.
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
    ) -> Runnable:
        """A runnable that memoizes this one's results by input (or by ``key(input)``).

        At most ``maxsize`` results are kept (a positive int; least recently used dropped first;
        ``None``: no bound), each for ``ttl`` seconds (up to 1e9; ``None``: forever). The cache
        is shared by every thread and event loop; concurrent calls with the same key run the step
        once and share its result (or its exception). Exceptions are not cached. The config is
        not part of the key, and a hit returns the same object, not a copy.
        """

class _Serializable(Runnable[_In, _Out]):
    """The classes whose langchain_core counterpart is serializable and configurable."""

    def configurable_fields(self, **kwargs: Any) -> Any:
        """langchain_core's ``configurable_fields``: this runnable with fields set from each
        call's ``configurable`` config (the fields are langchain_core's: ``steps__``,
        ``kwargs``...)."""
    def configurable_alternatives(
        self,
        which: Any,
        *,
        default_key: str = "default",
        prefix_keys: bool = False,
        **kwargs: Any,
    ) -> Any:
        """langchain_core's ``configurable_alternatives``: this runnable or an alternative,
        chosen by each call's ``configurable`` config."""
    @classmethod
    def is_lc_serializable(cls) -> bool:
        """True, as for the langchain_core counterpart."""
    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """The langchain_core counterpart's namespace."""
    @classmethod
    def lc_id(cls) -> list[str]:
        """The id langchain_core serializes the counterpart under."""
    def to_json(self) -> Any:
        """langchain_core's serialized form of the same runnable (``dumpd`` of its
        langchain_core equivalent); ``langchain_core.load.load`` makes a langchain_core runnable
        of it. (``langchain_core.load.dumps(runnable)`` itself writes a fastlcel runnable as
        not serializable: it recognises pydantic subclasses of its ``Serializable`` only.)"""

class Lambda(Runnable[_In, _Out]):
    """Wrap a function as a runnable, like ``langchain_core.runnables.RunnableLambda``.

    ``func`` is called by ``invoke``/``batch``; an ``async def`` function (given as ``func`` or as
    ``afunc``) is awaited by ``ainvoke``/``abatch`` on the caller's event loop. A sync-only Lambda
    awaited from asyncio runs on fastlcel's thread pool and never blocks the loop. ``invoke`` of
    an async-only Lambda awaits it on fastlcel's own event loop, in a background thread
    (langchain_core raises ``TypeError``). A function with a parameter named ``config``
    receives the call's config dict. Named after its function (``name`` otherwise), shown by
    its lambda's source: ``RunnableLambda(lambda x: x + 1)``.

    >>> Lambda(lambda x: x + 1).invoke(1)
    2

    ``executor`` runs the function elsewhere: any object with ``submit(fn, /, *args, **kwargs)``
    returning a ``concurrent.futures.Future`` (a ``ProcessPoolExecutor``, loky's executor, Dask's
    ``client.get_executor()``, :class:`fastlcel.RayExecutor` for a Ray cluster). Only the call
    ``func(input, **kwargs)`` crosses; retries, timeouts, rate and concurrency limits, the cache,
    fallbacks, result order, ``return_exceptions`` and fail-fast stay on the caller's side. No
    thread waits per call in flight (the future's done callback tells fastlcel), so a batch of
    thousands adds no threads. When the caller stops waiting (a timeout, a fail-fast abort, a
    cancelled task, Ctrl-C) fastlcel calls ``future.cancel()``: a call not started yet never
    starts; whether a running one stops is the executor's business (``RayExecutor`` and pebble
    kill it; ``ProcessPoolExecutor``, loky and Dask let it finish).

    >>> with ProcessPoolExecutor(2) as pool:  # CPU-bound Python gains from processes only
    ...     Lambda(parse, executor=pool).with_timeout(30).batch(documents)

    ``func`` must then be a sync, non-generator function without a ``config`` or ``run_manager``
    parameter (they hold callbacks, which cannot cross); anything else is a ``TypeError`` at
    construction. A traced call's run (its inputs, output or error) is recorded on the caller's
    side, around the remote call. The function and its input must be picklable by the executor
    (a process pool pickles with :mod:`pickle`: module-level functions; Ray, loky and Dask use
    cloudpickle); when they are not, the call raises :class:`ExecutorError` naming the step. The
    function's own exceptions come back as the executor delivers them, of their own class.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        afunc: Callable[..., Awaitable[Any]] | None = None,
        name: str | None = None,
        *,
        executor: _Executor | None = None,
    ) -> None: ...
    @property
    def func(self) -> Callable[..., Any] | None:
        """The sync function (``None`` for an async-only Lambda)."""
    @property
    def afunc(self) -> Callable[..., Awaitable[Any]] | None:
        """The async function (``None`` for a sync-only Lambda)."""
    @property
    def deps(self) -> list[Any]:
        """The runnables its function uses from its closure or globals (langchain_core's
        ``deps``: its graph and config specs include theirs)."""
    @property
    def executor(self) -> _Executor | None:
        """The executor the function runs on (``None``: here)."""

def chain(func: Callable[..., Any]) -> Lambda:
    """langchain_core's ``@chain`` decorator: the function as a :class:`Lambda`."""

class Parallel(_Serializable[_In, dict[str, Any]]):
    """Run several steps on the same input at once and collect a dict of their results.

    A drop-in for ``langchain_core.runnables.RunnableParallel``. Steps may be runnables, plain
    callables, dicts (a nested :class:`Parallel`), ``operator.itemgetter`` objects or any object
    with ``invoke``/``ainvoke`` (a langchain_core Runnable, say). Keyword steps override those of
    ``steps__``. The result keeps the declared key order.

    >>> Parallel(a=lambda x: x + 1, b=lambda x: x * 2).invoke(3)
    {'a': 4, 'b': 6}

    ``on_error="collect"`` runs every step even when some fail and puts each failed step's
    exception object in its slot (``"raise"``, the default, raises the first failure at once).
    ``merge`` shapes the result: ``"dict"`` (default), ``"list"`` (results in key order) or a
    function that takes the result dict. Both are keyword options, so a step named ``on_error``
    or ``merge`` must be passed in ``steps__``: ``Parallel({"merge": step})``.
    """

    def __init__(
        self,
        steps__: Mapping[str, Any] | None = None,
        /,
        *,
        on_error: Literal["raise", "collect"] = "raise",
        merge: Literal["dict", "list"] | Callable[[dict[str, Any]], Any] = "dict",
        **steps: Any,
    ) -> None: ...
    @property
    def steps(self) -> dict[str, Any]:
        """The steps after coercion, in declared order."""
    @property
    def steps__(self) -> dict[str, Any]:
        """langchain_core's name for :attr:`steps`."""

class Sequence(_Serializable[_In, _Out]):
    """Steps run one after the other, each on the previous one's output, like
    ``langchain_core.runnables.RunnableSequence``; usually made with ``|``. Nested sequences are
    flattened; at least 2 steps. langchain_core's ``first``, ``middle`` and ``last`` may be given
    instead of the steps."""

    def __init__(
        self,
        *steps: Any,
        name: str | None = None,
        first: Any = None,
        middle: list[Any] | None = None,
        last: Any = None,
    ) -> None: ...
    @property
    def steps(self) -> list[Any]: ...
    @property
    def first(self) -> Any: ...
    @property
    def middle(self) -> list[Any]: ...
    @property
    def last(self) -> Any: ...

class Passthrough(_Serializable[_Other, _Other]):
    """Passes its input through unchanged (``RunnablePassthrough``); with ``func``, calls it on
    the input first, for side effects (an async ``afunc`` when awaited). ``input_type`` declares
    the type of its input and output."""

    def __init__(
        self,
        func: Callable[..., Any] | None = None,
        afunc: Callable[..., Awaitable[Any]] | None = None,
        *,
        input_type: Any = None,
        name: str | None = None,
    ) -> None: ...
    @property
    def func(self) -> Callable[..., Any] | None: ...
    @property
    def afunc(self) -> Callable[..., Awaitable[Any]] | None: ...
    @property
    def input_type(self) -> Any: ...
    @staticmethod
    def assign(**steps: Any) -> Runnable:
        """The input dict plus one key per step, computed from the input (``RunnableAssign``).
        A non-dict input raises ``ValueError``, as in langchain_core."""

class Assign(_Serializable[dict[str, Any], dict[str, Any]]):
    """The input dict plus computed keys (``RunnableAssign``)."""

    def __init__(
        self, mapper: Parallel | Mapping[str, Any], *, name: str | None = None
    ) -> None: ...
    @property
    def mapper(self) -> Parallel: ...

class Pick(_Serializable[dict[str, Any], Any]):
    """One key of the input dict (its value, or None), or a dict of the listed keys present
    (None if none is), like ``RunnablePick``."""

    def __init__(self, keys: str | list[str], *, name: str | None = None) -> None: ...
    @property
    def keys(self) -> str | list[str]: ...

class Branch(_Serializable[_In, _Out]):
    """``Branch((condition, runnable), ..., default)``: runs the first runnable whose condition
    is true on the input, else the default (``RunnableBranch``)."""

    def __init__(self, *branches: Any, name: str | None = None) -> None: ...
    @property
    def branches(self) -> list[tuple[Any, Any]]: ...
    @property
    def default(self) -> Any: ...

class Binding(_Serializable[_In, _Out]):
    """A runnable with a config, keyword arguments and types of its own (``RunnableBinding``);
    made by :meth:`Runnable.with_config`, :meth:`Runnable.bind` and
    :meth:`Runnable.with_types`. ``config_factories`` are functions of each call's merged config
    whose configs are merged in. Other attributes are the bound runnable's."""

    def __init__(
        self,
        *,
        bound: Any,
        kwargs: Mapping[str, Any] | None = None,
        config: _Config | None = None,
        config_factories: list[Callable[[dict[str, Any]], _Config]] | None = None,
        custom_input_type: Any = None,
        custom_output_type: Any = None,
        name: str | None = None,
    ) -> None: ...
    @property
    def bound(self) -> Any: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def kwargs(self) -> dict[str, Any]: ...
    @property
    def config_factories(self) -> list[Callable[[dict[str, Any]], _Config]]: ...
    @property
    def custom_input_type(self) -> Any: ...
    @property
    def custom_output_type(self) -> Any: ...

class Generator(Runnable[_In, _Out]):
    """A generator function over the stream of input chunks (``RunnableGenerator``):
    ``transform(chunks)`` yields output chunks, ``atransform`` is its async counterpart;
    ``invoke`` returns the sum of the chunks. Coercion makes one from a generator function."""

    def __init__(
        self,
        transform: Callable[..., Any],
        atransform: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
    ) -> None: ...
    @property
    def func(self) -> Callable[..., Any] | None: ...
    @property
    def afunc(self) -> Callable[..., Any] | None: ...

class WithFallbacks(_Serializable[_In, _Out]):
    """A runnable with fallbacks (``RunnableWithFallbacks``), made by
    :meth:`Runnable.with_fallbacks`. Other attributes are the runnable's."""

    def __init__(
        self,
        *,
        runnable: Any,
        fallbacks: _Seq[Any],
        exceptions_to_handle: tuple[type[BaseException], ...] | None = None,
        exception_key: str | None = None,
        name: str | None = None,
    ) -> None: ...
    @property
    def runnable(self) -> Any: ...
    @property
    def fallbacks(self) -> list[Any]: ...
    @property
    def runnables(self) -> Iterator[Any]:
        """The runnable, then its fallbacks."""
    @property
    def exceptions_to_handle(self) -> tuple[type[BaseException], ...]: ...
    @property
    def exception_key(self) -> str | None: ...

class Retry(_Serializable[_In, _Out]):
    """A runnable retried on failure (``RunnableRetry``), made by :meth:`Runnable.with_retry`
    (langchain_core's field names: ``retry_exception_types``, ``max_attempt_number``...)."""

    def __init__(
        self,
        *,
        bound: Any,
        retry_exception_types: tuple[type[BaseException], ...]
        | Callable[[BaseException], bool]
        | None = None,
        wait_exponential_jitter: bool = True,
        exponential_jitter_params: Mapping[str, float] | None = None,
        max_attempt_number: int = 3,
        kwargs: Mapping[str, Any] | None = None,
        config: _Config | None = None,
        config_factories: list[Callable[[dict[str, Any]], _Config]] | None = None,
        name: str | None = None,
    ) -> None: ...
    @property
    def bound(self) -> Any: ...
    @property
    def retry_exception_types(self) -> Any: ...
    @property
    def wait_exponential_jitter(self) -> bool: ...
    @property
    def exponential_jitter_params(self) -> Mapping[str, float] | None: ...
    @property
    def max_attempt_number(self) -> int: ...

class Each(_Serializable[list[_In], list[_Out]]):
    """A runnable run on every item of a list input at once, results in input order
    (``RunnableEach``), made by :meth:`Runnable.map`: its runnable's ``batch`` as a step."""

    def __init__(self, *, bound: Any, name: str | None = None) -> None: ...
    @property
    def bound(self) -> Any: ...

class Timeout(Runnable[_In, _Out]):
    """A runnable under a deadline, made by :meth:`Runnable.with_timeout`; named, typed and
    drawn as its runnable."""

    def __init__(self, bound: Any, seconds: float | None, *, name: str | None = None) -> None: ...
    @property
    def bound(self) -> Any: ...
    @property
    def seconds(self) -> float | None:
        """The deadline (None: each call's ``timeout`` config key)."""

class Limited(Runnable[_In, _Out]):
    """A runnable behind a :class:`RateLimiter` or a :class:`ConcurrencyLimit`, made by
    :meth:`Runnable.with_rate_limit` and :meth:`Runnable.with_concurrency_limit`; named, typed
    and drawn as its runnable."""

    def __init__(
        self, bound: Any, limiter: RateLimiter | ConcurrencyLimit, *, name: str | None = None
    ) -> None: ...
    @property
    def bound(self) -> Any: ...
    @property
    def limiter(self) -> RateLimiter | ConcurrencyLimit: ...

class Cached(Runnable[_In, _Out]):
    """A runnable with memoized results, made by :meth:`Runnable.with_cache`; named, typed and
    drawn as its runnable."""

    def __init__(
        self,
        bound: Any,
        *,
        maxsize: int | None = 128,
        ttl: float | None = None,
        key: Callable[[Any], Hashable] | None = None,
        name: str | None = None,
    ) -> None: ...
    @property
    def bound(self) -> Any: ...
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
RunnableWithFallbacks = WithFallbacks
RunnableRetry = Retry
RunnableEach = Each

"""The native core of fastlcel (a Rust extension module built with PyO3).

Everything here is re-exported from :mod:`fastlcel`; import it from there.
"""

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from collections.abc import Sequence as _Seq
from typing import Any, TypeAlias, final

from typing_extensions import disjoint_base

_Config: TypeAlias = Mapping[str, Any]

__version__: str
__all__ = [
    "FastLcelError",
    "PanicError",
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
]

def _shutdown() -> None:
    """Registered with atexit: lets running steps finish, keeps pool threads out of Python."""

def _after_fork_in_child() -> None:
    """Registered with os.register_at_fork: the child starts an empty thread pool."""

def _ensure_config(config: _Config | None) -> dict[str, Any]:
    """``config`` completed as a function with a ``config`` parameter receives it."""

def _debug_panic_in_pool() -> None:
    """Test hook: panics on a pool thread; raises PanicError."""

class FastLcelError(Exception):
    """Base class of every exception raised by fastlcel itself (never of user exceptions)."""

class PanicError(FastLcelError):
    """A bug inside fastlcel's Rust code (a Rust panic) surfaced as a Python exception."""

@disjoint_base
class Runnable:
    """Base class of every fastlcel runnable (it cannot be instantiated itself).

    Every runnable has the langchain_core methods ``invoke``, ``ainvoke``, ``batch`` and
    ``abatch``. Sync code runs on the calling thread and fastlcel's thread pool, with the GIL
    released while the caller waits; async code runs as tasks on the caller's event loop.
    """

    @property
    def name(self) -> str:
        """A Lambda's function name, ``Parallel<a,b>`` for a Parallel."""
    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        """langchain_core's ``get_name``: ``name`` (default :attr:`name`) with ``suffix``
        appended (``NameSuffix`` after a capital, else ``name_suffix``)."""
    def invoke(self, input: Any, config: _Config | None = None) -> Any:
        """Run on ``input`` and return the result.

        ``config`` is a dict like langchain's RunnableConfig; ``max_concurrency`` caps the calls
        in flight of each fan-out. The first failure is raised at once (the original exception
        object, its traceback intact); steps not yet started never start.
        """
    def ainvoke(self, input: Any, config: _Config | None = None) -> Coroutine[Any, Any, Any]:
        """Await the result on the running event loop; sync code runs on the thread pool and
        never blocks the loop. Cancelling the await cancels every step still running."""
    def batch(
        self,
        inputs: _Seq[Any],
        config: _Config | _Seq[_Config] | None = None,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """``invoke`` on every input at once; results in input order.

        ``config`` is one config for all inputs or one per input; ``max_concurrency`` (of the
        first) caps the items in flight. The first failure is raised at once and items not yet
        started never start, unless ``return_exceptions`` is true: then each exception object
        takes its item's slot.
        """
    def abatch(
        self,
        inputs: _Seq[Any],
        config: _Config | _Seq[_Config] | None = None,
        *,
        return_exceptions: bool = False,
    ) -> Coroutine[Any, Any, list[Any]]:
        """The asyncio counterpart of :meth:`batch`."""
    def batch_as_completed(
        self,
        inputs: _Seq[Any],
        config: _Config | _Seq[_Config] | None = None,
        *,
        return_exceptions: bool = False,
    ) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` pairs as the items of a batch finish."""
    def abatch_as_completed(
        self,
        inputs: _Seq[Any],
        config: _Config | _Seq[_Config] | None = None,
        *,
        return_exceptions: bool = False,
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

@final
class Lambda(Runnable):
    """Wrap a function as a runnable, like ``langchain_core.runnables.RunnableLambda``.

    ``func`` is called by ``invoke``/``batch``; an ``async def`` function (given as ``func`` or as
    ``afunc``) is awaited by ``ainvoke``/``abatch`` on the caller's event loop. A sync-only Lambda
    awaited from asyncio runs on fastlcel's thread pool and never blocks the loop. ``invoke`` of
    an async-only Lambda raises ``TypeError``. A function with a parameter named ``config``
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
    """

    def __new__(cls, mapping: Mapping[str, Any] | None = None, /, **steps: Any) -> Parallel: ...
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
    def _merge_config(self, config: _Config | None) -> dict[str, Any]: ...

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

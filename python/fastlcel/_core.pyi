"""The native core of fastlcel (a Rust extension module built with PyO3).

Everything here is re-exported from :mod:`fastlcel`; import it from there.
"""

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeAlias, final

_Config: TypeAlias = Mapping[str, Any]

__version__: str
__all__ = ["FastLcelError", "PanicError", "Lambda", "Parallel"]

def _shutdown() -> None:
    """Registered with atexit: lets running steps finish, keeps pool threads out of Python."""

def _after_fork_in_child() -> None:
    """Registered with os.register_at_fork: the child starts an empty thread pool."""

def _debug_panic_in_pool() -> None:
    """Test hook: panics on a pool thread; raises PanicError."""

class FastLcelError(Exception):
    """Base class of every exception raised by fastlcel itself (never of user exceptions)."""

class PanicError(FastLcelError):
    """A bug inside fastlcel's Rust code (a Rust panic) surfaced as a Python exception."""

@final
class Lambda:
    """Wrap a function as a runnable, like ``langchain_core.runnables.RunnableLambda``.

    ``func`` is called by ``invoke``/``batch``; an ``async def`` function (given as ``func`` or as
    ``afunc``) is awaited by ``ainvoke``/``abatch`` on the caller's event loop. A sync-only Lambda
    awaited from asyncio runs on fastlcel's thread pool, with the GIL released while it waits, and
    never blocks the loop. A function with a parameter named ``config`` receives the call's config.

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
    @property
    def name(self) -> str:
        """The name given, else the function's ``__name__``."""
    def get_name(self) -> str:
        """Same as :attr:`name` (langchain_core spelling)."""
    def invoke(self, input: Any, config: _Config | None = None) -> Any:
        """Call the sync function on ``input``.

        Raises ``TypeError`` for an async-only Lambda (use :meth:`ainvoke`).
        """
    def ainvoke(self, input: Any, config: _Config | None = None) -> Coroutine[Any, Any, Any]:
        """Await the async function on ``input`` (or run the sync one on the thread pool)."""
    def batch(
        self,
        inputs: Sequence[Any],
        config: _Config | Sequence[_Config] | None = None,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run ``invoke`` over ``inputs`` on the thread pool; results in input order.

        ``config["max_concurrency"]`` caps the calls in flight. The first failure is raised at
        once and items not yet started never start, unless ``return_exceptions`` is true, in which
        case each exception object takes its item's slot.
        """
    def abatch(
        self,
        inputs: Sequence[Any],
        config: _Config | Sequence[_Config] | None = None,
        *,
        return_exceptions: bool = False,
    ) -> Coroutine[Any, Any, list[Any]]:
        """The asyncio counterpart of :meth:`batch`: coroutines run as tasks on the running loop."""

@final
class Parallel:
    """Run several steps on the same input at once and collect a dict of their results.

    A drop-in for ``langchain_core.runnables.RunnableParallel``. Steps may be :class:`Lambda`,
    plain callables, dicts (a nested :class:`Parallel`), ``operator.itemgetter`` objects or any
    object with ``invoke``/``ainvoke`` (a langchain_core Runnable, say). Keyword steps override
    those of ``mapping``. The result keeps the declared key order.

    >>> Parallel(a=lambda x: x + 1, b=lambda x: x * 2).invoke(3)
    {'a': 4, 'b': 6}
    """

    def __new__(cls, mapping: Mapping[str, Any] | None = None, /, **steps: Any) -> Parallel: ...
    @property
    def steps(self) -> dict[str, Any]:
        """The steps after coercion, in declared order (``steps__`` in langchain_core)."""
    def get_name(self) -> str: ...
    def invoke(self, input: Any, config: _Config | None = None) -> dict[str, Any]:
        """Run every step on ``input``; sync steps run on the caller's thread and the pool.

        The first failure is raised at once (the original exception object), steps not yet
        started never start. ``config["max_concurrency"]`` caps the steps in flight.
        """
    def ainvoke(self, input: Any, config: _Config | None = None) -> Coroutine[Any, Any, dict[str, Any]]:
        """Run every step concurrently on the running event loop (sync steps on the pool)."""
    def batch(
        self,
        inputs: Sequence[Any],
        config: _Config | Sequence[_Config] | None = None,
        *,
        return_exceptions: bool = False,
    ) -> list[dict[str, Any]]: ...
    def abatch(
        self,
        inputs: Sequence[Any],
        config: _Config | Sequence[_Config] | None = None,
        *,
        return_exceptions: bool = False,
    ) -> Coroutine[Any, Any, list[dict[str, Any]]]: ...

"""``fastlcel.RayExecutor``: a step's calls as Ray tasks (``Lambda(f, executor=RayExecutor())``).

Glue to Ray's API, as ``concurrent.futures`` spells an executor: ``submit`` returns a
``concurrent.futures.Future`` whose ``cancel()`` cancels the task with ``ray.cancel(ref,
force=True)``. ``ray`` is imported on first use, never by ``import fastlcel``.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any


class RayExecutor(concurrent.futures.Executor):
    """Runs each call as a Ray task, on the cluster that ``ray.init`` connected this process to.

    ``ray.init(num_cpus=2)`` starts a local cluster, ``ray.init(address="ray://head:10001")`` (or
    ``"auto"``) joins an existing one; without it, Ray starts a local one on the first call.
    ``num_cpus``, ``num_gpus``, ``resources`` and any other ``options`` are the tasks' Ray
    options (``ray.remote(**options)``): give each step the executor it needs.

    >>> step = Lambda(embed, executor=RayExecutor(num_gpus=1)).with_retry().with_timeout(60)

    The function's exception comes back as an instance of its own class, the Ray traceback as its
    ``__cause__``. ``future.cancel()`` (a timeout, a fail-fast abort, a cancelled caller, Ctrl-C)
    stops the task, running or not: Ray kills its worker process and starts another. Install
    Ray with ``pip install 'fastlcel[ray]'``.
    """

    def __init__(
        self,
        *,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        resources: Mapping[str, float] | None = None,
        **options: Any,
    ) -> None:
        if importlib.util.find_spec("ray") is None:  # found without importing it
            raise ImportError("fastlcel.RayExecutor needs Ray: pip install 'fastlcel[ray]'")
        named = {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": resources}
        self._options = {k: v for k, v in named.items() if v is not None} | options
        # fn -> its Ray remote function: Ray exports a function once per remote function. Kept
        # as long as the function lives; builtins (not weakly referenceable) in a bounded dict.
        self._remote: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._remote_strong: dict[Any, Any] = {}
        self._lock = threading.Lock()

    @property
    def options(self) -> dict[str, Any]:
        """The Ray options of the tasks (a copy)."""
        return dict(self._options)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _RayFuture:
        """``fn(*args, **kwargs)`` as a Ray task."""
        return _RayFuture(self._remote_function(fn).remote(*args, **kwargs))

    def _remote_function(self, fn: Callable[..., Any]) -> Any:
        caches: tuple[Any, ...] = (self._remote, self._remote_strong)
        for cache in caches:
            try:
                remote = cache.get(fn)
            except TypeError:  # not weakly referenceable (a builtin), or not hashable
                continue
            if remote is None:
                with self._lock:
                    remote = cache.get(fn)
                    if remote is None:
                        if cache is self._remote_strong and len(cache) >= 256:
                            cache.clear()
                        remote = cache[fn] = self._make_remote(fn)
            return remote
        return self._make_remote(fn)

    def _make_remote(self, fn: Callable[..., Any]) -> Any:
        import ray

        return ray.remote(**self._options)(fn) if self._options else ray.remote(fn)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"RayExecutor({options})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its options (a step on it pickles with it; its cache is made anew)."""
        return (_remade, (self._options,))


def _remade(options: dict[str, Any]) -> RayExecutor:
    return RayExecutor(**options)


class _RayFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """The outcome of one Ray task; ``cancel()`` cancels the task."""

    def __init__(self, ref: Any) -> None:
        super().__init__()
        self._ref = ref
        ref.future().add_done_callback(self._settle)

    def _settle(self, done: concurrent.futures.Future) -> None:  # type: ignore[type-arg]
        try:
            try:
                result = done.result()
            except BaseException as exc:  # handed to whoever waits on this future
                self.set_exception(_own_exception(exc))
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile

    def cancel(self) -> bool:
        if self.done():
            return False
        import ray

        ray.cancel(self._ref, force=True)
        return super().cancel()


def _own_exception(exc: BaseException) -> BaseException:
    """A task's exception as its own class (Ray delivers ``RayTaskError(Cls)``), Ray's error with
    the remote traceback as its cause."""
    from ray.exceptions import RayTaskError

    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and isinstance(cause, BaseException):
        cause.__cause__ = exc
        return cause
    return exc

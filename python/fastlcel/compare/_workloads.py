"""The three workloads: ``http`` (real sockets), ``sleep`` (simulated IO) and ``cpu`` (pure Python).

Each workload is one function of an item index ``i``, in a sync and an async flavour, that returns
a small deterministic value, so that every approach can be checked to return the same list. The
functions are module-level (bound with :func:`functools.partial`) so that a
``ProcessPoolExecutor`` can pickle them, and this module imports only the standard library: a
process-pool worker imports it, and the optional HTTP clients are imported on first use.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import threading
import time
import types
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastlcel.compare._server import body_digest, expected_digest

WORKLOADS = ("http", "sleep", "cpu")
SYNC_CLIENTS = ("urllib", "requests", "httpx")
ASYNC_CLIENTS = ("asyncio", "aiohttp", "httpx")
_CLIENT_MODULES = {"requests": "requests", "httpx": "httpx", "aiohttp": "aiohttp"}
HTTP_TIMEOUT = 30.0


def client_available(name: str) -> bool:
    """True when the HTTP client ``name`` can be used (the stdlib ones always can)."""
    module = _CLIENT_MODULES.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def item_path(i: int) -> str:
    return f"/item/{i}"


# --------------------------------------------------------------------------- sync HTTP clients

# urllib would send 127.0.0.1 through an http_proxy from the environment: no proxies here.
_URLLIB = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_local = threading.local()
_shared = types.SimpleNamespace()
_sync_clients: list[Any] = []  # every Session/Client made by any thread, closed by close_sync()
_sync_lock = threading.Lock()
_generation = 0  # bumped by close_sync_clients(): a thread's client of an older one is closed


def _thread_client(kind: str) -> Any:
    """The client of this thread: a ``requests.Session`` per thread (as in the reference study,
    a Session is not thread-safe), one ``httpx.Client`` for all threads (it is thread-safe, and
    making one costs milliseconds of GIL: one per thread would be measured instead of requests).
    """
    holder: Any = _local if kind == "requests" else _shared
    generation, client = getattr(holder, kind, (-1, None))
    if generation != _generation or client is None:
        with _sync_lock:
            generation, client = getattr(holder, kind, (-1, None))
            if generation != _generation or client is None:
                if kind == "requests":
                    import requests

                    client = requests.Session()
                    client.trust_env = False
                else:
                    import httpx

                    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
                    client = httpx.Client(trust_env=False, timeout=HTTP_TIMEOUT, limits=limits)
                setattr(holder, kind, (_generation, client))
                _sync_clients.append(client)
    return client


def http_get_urllib(base_url: str, i: int) -> str:
    with _URLLIB.open(base_url + item_path(i), timeout=HTTP_TIMEOUT) as response:
        return body_digest(response.read())


def http_get_requests(base_url: str, i: int) -> str:
    response = _thread_client("requests").get(base_url + item_path(i), timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    return body_digest(response.content)


def http_get_httpx(base_url: str, i: int) -> str:
    response = _thread_client("httpx").get(base_url + item_path(i))
    response.raise_for_status()
    return body_digest(response.content)


def close_sync_clients() -> None:
    """Close every thread's client; threads that live on (a kept pool) make new ones."""
    global _generation
    with _sync_lock:
        clients = _sync_clients[:]
        _sync_clients.clear()
        _generation += 1
    for client in clients:
        client.close()


# --------------------------------------------------------------------------- async HTTP clients

_async_clients: dict[tuple[int, str], Any] = {}  # (id(loop), kind) -> session of that loop


def _loop_client(kind: str) -> Any:
    key = (id(asyncio.get_running_loop()), kind)
    client = _async_clients.get(key)
    if client is None:
        if kind == "aiohttp":
            import aiohttp

            # limit=0: no cap on connections (aiohttp's default is 100 at once)
            client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        else:
            import httpx

            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            client = httpx.AsyncClient(trust_env=False, timeout=HTTP_TIMEOUT, limits=limits)
        _async_clients[key] = client
    return client


async def ahttp_get_asyncio(host: str, port: int, i: int) -> str:
    """A minimal HTTP/1.0 GET over ``asyncio`` streams (no third-party client)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), HTTP_TIMEOUT)
    try:
        writer.write(f"GET {item_path(i)} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), HTTP_TIMEOUT)  # the server closes
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    head, sep, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not sep or b" 200 " not in status + b" ":
        raise OSError(f"bad HTTP response to GET {item_path(i)}: {status!r}")
    return body_digest(body)


async def ahttp_get_aiohttp(host: str, port: int, i: int) -> str:
    session = _loop_client("aiohttp")
    async with session.get(f"http://{host}:{port}{item_path(i)}") as response:
        response.raise_for_status()
        return body_digest(await response.read())


async def ahttp_get_httpx(host: str, port: int, i: int) -> str:
    response = await _loop_client("httpx").get(f"http://{host}:{port}{item_path(i)}")
    response.raise_for_status()
    return body_digest(response.content)


async def aclose_async_clients() -> None:
    """Close the sessions made on the running loop (call it before the loop ends)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _async_clients if k[0] == loop_id]:
        client = _async_clients.pop(key)
        if key[1] == "aiohttp":
            await client.close()
        else:
            await client.aclose()


# --------------------------------------------------------------------------- sleep and cpu


def sleep_sync(latency: float, i: int) -> int:
    time.sleep(latency)
    return i


async def sleep_async(latency: float, i: int) -> int:
    await asyncio.sleep(latency)
    return i


def cpu_sync(work: int, i: int) -> int:
    """Pure-Python integer work (a linear congruential generator): holds the GIL throughout."""
    x = i
    acc = 0
    for _ in range(work):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        acc ^= x
    return acc


async def cpu_async(work: int, i: int) -> int:
    """The same work in an ``async def``: it never awaits, so it blocks the event loop."""
    return cpu_sync(work, i)


def calibrate_cpu_work(target_seconds: float, n: int) -> int:
    """Iterations of :func:`cpu_sync` per item so that ``n`` items take ``target_seconds``."""
    probe = 50_000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        cpu_sync(probe, 0)
        best = min(best, time.perf_counter() - start)
    per_iteration = max(best / probe, 1e-9)
    return max(1, round(target_seconds / n / per_iteration))


# --------------------------------------------------------------------------- the workload object


@dataclass
class Workload:
    """One job, ``sync_fn(i)`` / ``async_fn(i)`` for ``i`` in ``range(n)``."""

    name: str
    description: str
    sync_fn: Callable[[int], Any]  # picklable: a partial of a module-level function
    async_fn: Callable[[int], Awaitable[Any]]
    params: dict[str, Any] = field(default_factory=dict)
    expected: Callable[[int], Any] | None = None  # the right answer, when cheap to compute

    def close(self) -> None:
        """Release the sync clients' sessions (after a sync approach)."""
        close_sync_clients()

    async def aclose(self) -> None:
        """Release the async clients' sessions of the running loop (after an async approach)."""
        await aclose_async_clients()


def http_workload(
    base_url: str, *, latency: float, body_size: int, sync_client: str, async_client: str
) -> Workload:
    host, port = base_url.rsplit("/", 1)[-1].rsplit(":", 1)
    sync_fn = {
        "urllib": http_get_urllib,
        "requests": http_get_requests,
        "httpx": http_get_httpx,
    }[sync_client]
    async_fn = {
        "asyncio": ahttp_get_asyncio,
        "aiohttp": ahttp_get_aiohttp,
        "httpx": ahttp_get_httpx,
    }[async_client]
    async_label = "asyncio streams" if async_client == "asyncio" else async_client
    return Workload(
        name="http",
        description=(
            f"GET /item/{{i}} from a local HTTP server: {latency * 1000:g} ms latency, "
            f"{body_size}-byte bodies; sync client {sync_client}, async client {async_label}"
        ),
        sync_fn=functools.partial(sync_fn, base_url),
        async_fn=functools.partial(async_fn, host, int(port)),
        params={
            "url": base_url,
            "latency_s": latency,
            "body_size": body_size,
            "sync_client": sync_client,
            "async_client": async_client,
        },
        expected=lambda i: expected_digest(item_path(i), body_size),
    )


def sleep_workload(*, latency: float) -> Workload:
    return Workload(
        name="sleep",
        description=f"time.sleep / asyncio.sleep of {latency * 1000:g} ms (simulated IO)",
        sync_fn=functools.partial(sleep_sync, latency),
        async_fn=functools.partial(sleep_async, latency),
        params={"sleep_s": latency},
        expected=lambda i: i,
    )


def cpu_workload(*, work: int, target_seconds: float | None = None) -> Workload:
    desc = f"pure-Python loop of {work} iterations per item (holds the GIL)"
    return Workload(
        name="cpu",
        description=desc,
        sync_fn=functools.partial(cpu_sync, work),
        async_fn=functools.partial(cpu_async, work),
        params={"work": work, "target_sequential_s": target_seconds},
    )

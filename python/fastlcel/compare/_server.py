"""A local HTTP server with a configurable latency per response, for the ``http`` workload.

The server is one asyncio loop: each response waits with ``asyncio.sleep`` (no thread per
request), the listen backlog is large, and every response closes its connection (HTTP/1.1 with
``Connection: close``), so a few hundred concurrent clients never queue behind the server. By
default it runs in a child process (``mode="process"``), so that it competes with the clients
neither for the GIL nor for the measured thread and memory counts; ``mode="thread"`` runs the same
loop on a thread of the calling process.

The body of ``GET /any/path`` is derived from the path only (see :func:`make_body`), so every
client, whatever its concurrency model, must compute the same :func:`body_digest` per request.

This file is also a script, run by ``mode="process"`` with the standard library only::

    python _server.py --latency 0.05 --body-size 10000   # prints "PORT <n>", stops on stdin EOF
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
BACKLOG = 4096
MAX_BODY_SIZE = 64 * 1024 * 1024
START_TIMEOUT = 20.0  # seconds to wait for the server to report its port


def make_body(path: str, size: int) -> bytes:
    """The response body for ``path``: ``size`` bytes that depend on the path only."""
    seed = hashlib.sha256(path.encode("utf-8")).hexdigest().encode("ascii")  # 64 bytes
    return (seed * (size // len(seed) + 1))[:size]


def body_digest(body: bytes) -> str:
    """What a client returns per request: ``"<length>:<16 hex digits of blake2b>"``."""
    return f"{len(body)}:{hashlib.blake2b(body, digest_size=8).hexdigest()}"


def expected_digest(path: str, size: int) -> str:
    """The digest a correct client computes for ``GET path`` from a server of body ``size``."""
    return body_digest(make_body(path, size))


def _query_float(query: dict[str, list[str]], key: str, default: float) -> float:
    try:
        return float(query[key][0])
    except (KeyError, IndexError, ValueError):
        return default


async def serve(
    latency: float,
    body_size: int,
    on_ready: Callable[[int], None],
    stop: asyncio.Event,
    port: int = 0,
) -> None:
    """Serve on ``HOST:port`` (0: a free port) until ``stop`` is set; ``on_ready(port)`` once bound.

    A query string may override the defaults per request: ``?latency=SECONDS&size=BYTES``.
    """
    handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers[task] = writer
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n")
                writer.write(b"Connection: close\r\n\r\n")
                await writer.drain()
                return
            url = urlsplit(parts[1])
            query = parse_qs(url.query)
            delay = _query_float(query, "latency", latency)
            size = int(min(max(_query_float(query, "size", body_size), 0), MAX_BODY_SIZE))
            if delay > 0:
                await asyncio.sleep(delay)
            body = make_body(url.path, size)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            )
            if parts[0] == "GET":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # stopping: end quietly (on 3.11 a cancelled handler is logged as an error)
            writer.transport.abort()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            if task is not None:
                handlers.pop(task, None)

    server = await asyncio.start_server(handle, HOST, port, backlog=BACKLOG)
    try:
        on_ready(server.sockets[0].getsockname()[1])
        await stop.wait()
    finally:
        server.close()
        for task in list(handlers):  # connections still open (a client that sent nothing)
            task.cancel()
        if handlers:
            await asyncio.wait(list(handlers), timeout=5)
        await server.wait_closed()


class LatencyServer:
    """Start/stop the HTTP server; a context manager. ``url`` is ``http://127.0.0.1:<port>``.

    >>> with LatencyServer(latency=0.0, body_size=10) as srv:  # doctest: +SKIP
    ...     urllib.request.urlopen(srv.url + "/item/1").read()
    """

    def __init__(self, latency: float = 0.05, body_size: int = 10_000, mode: str = "process"):
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread', not {mode!r}")
        if latency < 0 or not 0 <= body_size <= MAX_BODY_SIZE:
            raise ValueError("latency must be >= 0 and 0 <= body_size <= 64 MiB")
        self.latency = float(latency)
        self.body_size = int(body_size)
        self.mode = mode
        self.port: int | None = None
        self.pid: int | None = None  # the server's process id in "process" mode
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"http://{HOST}:{self.port}"

    def start(self) -> LatencyServer:
        if self.port is not None:
            raise RuntimeError("the server is already running")
        if self.mode == "process":
            self._start_process()
        else:
            self._start_thread()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; idempotent."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                if proc.stdin is not None:
                    proc.stdin.close()  # the server exits on EOF
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            loop, stop = self._loop, self._stop
            if loop is not None and stop is not None:
                try:
                    loop.call_soon_threadsafe(stop.set)
                except RuntimeError:  # the loop has already closed
                    pass
            thread.join(START_TIMEOUT)
            self._loop = self._stop = None
        self.port = self.pid = None

    def __enter__(self) -> LatencyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- process mode: this file run as a script by the same interpreter, stdlib only
    def _start_process(self) -> None:
        cmd = [sys.executable, "-I", os.path.abspath(__file__)]
        cmd += ["--latency", repr(self.latency), "--body-size", str(self.body_size)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._proc = proc
        assert proc.stdout is not None
        line = _readline_with_timeout(proc.stdout, START_TIMEOUT)
        if not line.startswith(b"PORT "):
            self.stop()
            raise RuntimeError(f"the HTTP server did not start (it printed {line!r})")
        self.port = int(line.split()[1])
        self.pid = proc.pid

    # -- thread mode: the same loop on a daemon thread of this process
    def _start_thread(self) -> None:
        ready = threading.Event()

        def on_ready(port: int) -> None:
            self.port = port
            ready.set()

        async def main() -> None:
            self._stop = asyncio.Event()  # created on the loop that waits on it
            await serve(self.latency, self.body_size, on_ready, self._stop)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(main())
            except BaseException as exc:  # reported to start()
                self._error = exc
            finally:
                loop.close()
                ready.set()

        self._thread = threading.Thread(target=run, name="fastlcel-compare-http", daemon=True)
        self._thread.start()
        ready.wait(START_TIMEOUT)
        if self.port is None:
            error = self._error
            self.stop()
            raise RuntimeError(f"the HTTP server did not start: {error!r}")


def _readline_with_timeout(stream: Any, timeout: float) -> bytes:
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fastlcel.compare's local HTTP server")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--body-size", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def watch_stdin() -> None:  # the parent closes our stdin (or dies): stop
            try:
                sys.stdin.buffer.read()
            finally:
                loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()

        def on_ready(port: int) -> None:
            sys.stdout.write(f"PORT {port}\n")
            sys.stdout.flush()

        await serve(args.latency, args.body_size, on_ready, stop, port=args.port)

    asyncio.run(run())
    return 0


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``HOST:port`` any more."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) != 0


if __name__ == "__main__":
    sys.exit(_main())

"""A RAG retrieval fan-out that survives a slow, a flaky and a dead retriever.

The script starts its own loopback HTTP server (127.0.0.1, a free port) with three "retrievers":

- /docs  answers fast, but fails with 503 twice in every three requests -> with_retry
- /web   takes 1.5 s to answer                                          -> with_timeout + fallback
- /wiki  always fails with 500                                          -> on_error="collect"

Each retriever is a Lambda with a sync function (urllib, run on fastlcel's threads by invoke)
and an async one (asyncio streams, run on the event loop by ainvoke). The script runs the same
fan-out both ways and prints what happened. Runs offline: python examples/fault_tolerant_rag.py
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastlcel import Lambda, Parallel, StepTimeoutError

REQUESTS: Counter[str] = Counter()
LOCK = threading.Lock()


class Retrievers(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path, _, query = self.path.partition("?q=")
        query = urllib.parse.unquote(query)
        with LOCK:
            REQUESTS[path] += 1
            n = REQUESTS[path]
        if path == "/docs" and n % 3 != 0:  # two 503s, then an answer, and again
            return self.reply(503, {"error": "overloaded, try again"})
        if path == "/web":
            time.sleep(1.5)
        if path == "/wiki":
            return self.reply(500, {"error": "index corrupted"})
        self.reply(200, {"hits": [f"{path[1:]} hit {i} for {query!r}" for i in range(2)]})

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timed-out /web call)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RetrieverError(Exception):
    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"{path} answered HTTP {status}")
        self.status = status


def retriever(host: str, port: int, path: str) -> Lambda:
    def fetch(question: str) -> list[str]:
        url = f"http://{host}:{port}{path}?q={urllib.parse.quote(question)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)["hits"]
        except urllib.error.HTTPError as err:
            raise RetrieverError(path, err.code) from None

    async def afetch(question: str) -> list[str]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            target = f"{path}?q={urllib.parse.quote(question)}"
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            head, _, body = (await reader.read()).partition(b"\r\n\r\n")
        finally:
            writer.close()
        status = int(head.split()[1])
        if status != 200:
            raise RetrieverError(path, status)
        return json.loads(body)["hits"]

    return Lambda(fetch, afetch, name=path[1:])


def keyword_fallback(question: str) -> list[str]:
    return [f"(web was too slow: keyword match for {question!r})"]


def overloaded(exc: BaseException) -> bool:
    return isinstance(exc, RetrieverError) and exc.status == 503


def build(host: str, port: int) -> Parallel:
    docs = retriever(host, port, "/docs").with_retry(
        retry_if_exception_type=overloaded,
        exponential_jitter_params={"initial": 0.05, "max": 0.5, "exp_base": 2, "jitter": 0.05},
    )
    web = (
        retriever(host, port, "/web")
        .with_timeout(0.3)
        .with_fallbacks([Lambda(keyword_fallback)], exceptions_to_handle=(StepTimeoutError,))
    )
    wiki = retriever(host, port, "/wiki")
    return Parallel(docs=docs, web=web, wiki=wiki, on_error="collect")


def report(title: str, result: dict[str, Any], seconds: float) -> None:
    print(f"\n{title}: {seconds:.2f} s (the slow retriever alone takes 1.5 s)")
    for name, value in result.items():
        if isinstance(value, BaseException):
            print(f"  {name:<5} FAILED, collected: {type(value).__name__}: {value}")
        else:
            print(f"  {name:<5} {value}")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Retrievers)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = "127.0.0.1", server.server_address[1]
    print(f"retrievers listening on http://{host}:{port}")
    retrieve = build(host, port)
    print(f"pipeline: {retrieve!r}")

    started = time.perf_counter()
    result = retrieve.invoke("what is LCEL?")
    report("invoke (sync functions on fastlcel's threads)", result, time.perf_counter() - started)

    started = time.perf_counter()
    result = asyncio.run(retrieve.ainvoke("how do fallbacks work?"))
    report("ainvoke (async functions on the loop)", result, time.perf_counter() - started)

    print(f"\nrequests the server saw: {dict(sorted(REQUESTS.items()))}")
    print("  /docs: 503, 503, then 200 in each run (retried by the predicate `overloaded`)")
    print("  /web:  timed out after 0.3 s, the keyword fallback answered. The async request was")
    print(
        "         cancelled; the sync one cannot be stopped: its thread finishes in the background"
    )
    print("         and its late answer is dropped (fastlcel waits for it at exit).")
    print("  /wiki: failed in each run and was collected instead of failing the fan-out.")
    server.shutdown()


if __name__ == "__main__":
    main()

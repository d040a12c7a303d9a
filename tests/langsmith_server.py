"""A LangSmith server on 127.0.0.1 for the real ``langsmith`` client: it answers ``/info`` with
batched JSON uploads (no multipart, no compression needed), counts the runs posted and, unless
told not to, records every run with its patches. ``tests/test_langsmith.py`` compares what it
records; ``benches/bench_tracing.py`` traces to it."""

from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What a LangSmith server answers at /info.
INFO = {
    "version": "0.0.0",
    "batch_ingest_config": {
        "use_multipart_endpoint": False,
        "scale_up_qsize_trigger": 1000,
        "scale_up_nthreads_limit": 16,
        "scale_down_nempty_trigger": 4,
        "size_limit": 100,
        "size_limit_bytes": 20_971_520,
    },
}


class Server:
    """Serves on a free port (``url``) from a daemon thread until ``close()``. ``posted``: the
    runs posted so far; ``take()``: the runs recorded since the last call (``keep_runs``)."""

    def __init__(self, keep_runs: bool = True) -> None:
        self.lock = threading.Lock()
        self.posted = 0
        self.keep_runs = keep_runs
        self.runs: dict[str, dict[str, Any]] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self) -> Any:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") in ("gzip", "deflate"):
                    data = zlib.decompress(data, 47)
                return json.loads(data or b"null")

            def do_GET(self) -> None:
                self._reply(INFO if self.path.startswith("/info") else {})

            def do_POST(self) -> None:
                payload = self._json()
                if self.path.startswith("/runs/batch"):
                    recorder.record(payload.get("post", []), posted=True)
                    recorder.record(payload.get("patch", []))
                elif self.path.rstrip("/") == "/runs":
                    recorder.record([payload], posted=True)
                self._reply({})

            def do_PATCH(self) -> None:
                run = self._json()
                run["id"] = self.path.rstrip("/").rsplit("/", 1)[-1]
                recorder.record([run])
                self._reply({})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def record(self, runs: list[dict[str, Any]], posted: bool = False) -> None:
        with self.lock:
            if posted:
                self.posted += len(runs)
            if self.keep_runs:
                for run in runs:
                    self.runs.setdefault(str(run["id"]), {}).update(
                        {k: v for k, v in run.items() if v is not None}
                    )

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            runs, self.runs = list(self.runs.values()), {}
        return runs

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

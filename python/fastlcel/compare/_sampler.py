"""Peak OS threads and peak resident memory of this process (and of new child processes).

Threads are counted by the kernel (``Threads:`` of ``/proc/<pid>/status``), so the threads of
fastlcel's Rust pool count, which ``threading.active_count()`` never sees. Memory is ``VmRSS``.
Child processes (a process pool's workers) are found by scanning ``/proc`` for descendants of this
process that did not exist when sampling began (so the HTTP server's process is not counted).
Without ``/proc`` (macOS, Windows) threads fall back to ``threading.active_count()`` and memory to
``None``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_PROC = os.path.isdir("/proc/self/task")


def read_status(pid: int | str = "self") -> tuple[int, int] | None:
    """``(threads, rss_bytes)`` of a process, from ``/proc/<pid>/status``; None if unavailable."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read()
    except OSError:
        return None
    threads = rss_kib = 0
    for line in text.splitlines():
        if line.startswith(b"Threads:"):
            threads = int(line.split()[1])
        elif line.startswith(b"VmRSS:"):
            rss_kib = int(line.split()[1])
    return threads, rss_kib * 1024


def child_pids(parent_of: dict[int, int] | None = None) -> set[int]:
    """Process ids descending from this process: children, and their children (a scan of /proc).

    Grandchildren matter: a "forkserver" pool's workers are children of the fork server.
    ``parent_of`` caches pid -> parent pid between calls, so that a scan reads only new processes.
    """
    cache: dict[int, int] = {} if parent_of is None else parent_of
    try:
        pids = {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}
    except OSError:
        return set()
    for pid in list(cache):
        if pid not in pids:
            del cache[pid]
    for pid in pids - cache.keys():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses; cut at the last ")"
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            cache[pid] = int(fields[1])
    children: dict[int, list[int]] = {}
    for pid, ppid in cache.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


class Sampler:
    """A thread sampling every ``interval`` seconds between ``__enter__`` and ``__exit__``.

    ``exclude_threads`` is subtracted from this process's count: the sampler's own thread is always
    excluded, add e.g. 1 for an HTTP server thread that is not part of what is measured. With
    ``children=True`` new child processes are summed in (threads, memory) and counted.
    """

    def __init__(self, interval: float = 0.01, children: bool = False, exclude_threads: int = 0):
        self.interval = interval
        self.children = children and _PROC
        self.exclude = 1 + exclude_threads
        self.baseline_threads: int | None = None
        self.baseline_rss: int | None = None
        self.peak_threads: int | None = None
        self.peak_rss: int | None = None
        self.peak_procs = 1
        self.samples = 0
        self._known_children: set[int] = set()
        self._children: set[int] = set()
        self._parent_of: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        own = read_status() if _PROC else None
        if own is None:
            threads, rss = threading.active_count(), None
        else:
            threads, rss = own
        threads -= self.exclude
        procs = 1
        if self.children:
            self._children = child_pids(self._parent_of) - self._known_children
            for pid in self._children:
                status = read_status(pid)
                if status is not None:
                    procs += 1
                    threads += status[0]
                    rss = None if rss is None else rss + status[1]
        self.samples += 1
        self.peak_threads = (
            threads if self.peak_threads is None else max(self.peak_threads, threads)
        )
        self.peak_procs = max(self.peak_procs, procs)
        if rss is not None:
            self.peak_rss = rss if self.peak_rss is None else max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Sampler:
        if self.children:
            self._known_children = child_pids(self._parent_of)
        own = read_status() if _PROC else None
        self.baseline_threads = (own[0] if own else threading.active_count()) - self.exclude + 1
        self.baseline_rss = own[1] if own else None
        self._thread = threading.Thread(target=self._run, name="fastlcel-compare-sampler")
        self._thread.daemon = True
        self._thread.start()
        self._sample()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

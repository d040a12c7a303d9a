"""The study: every selected approach on every selected workload, timed and sampled."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fastlcel.compare._approaches import (
    APPROACHES,
    Approach,
    Options,
    default_mp_context,
    select_approaches,
)
from fastlcel.compare._sampler import Sampler
from fastlcel.compare._server import MAX_BODY_SIZE, LatencyServer
from fastlcel.compare._workloads import (
    ASYNC_CLIENTS,
    SYNC_CLIENTS,
    WORKLOADS,
    Workload,
    calibrate_cpu_work,
    client_available,
    cpu_workload,
    http_workload,
    sleep_workload,
)

SCHEMA = "fastlcel.compare/1"

#: What ``python -m fastlcel.compare`` runs with no option.
DEFAULTS: dict[str, Any] = {
    "n": 160,
    "latency": 0.05,
    "sleep": 0.02,
    "body_size": 10_000,
    "workers": 5,
    "repeat": 1,
    "cpu_seconds": 0.75,
}
#: What ``--quick`` changes (an explicit option still wins).
QUICK: dict[str, Any] = {
    "n": 12,
    "latency": 0.01,
    "sleep": 0.005,
    "body_size": 1_000,
    "repeat": 1,
    "cpu_seconds": 0.05,
}

Progress = Callable[[int, int, str], None]  # (runs done, runs in all, what is happening)


@dataclass
class Result:
    """One approach on one workload. ``outputs`` (the returned list) is kept out of the JSON."""

    workload: str
    approach: str
    label: str
    family: str
    style: str
    n: int
    ok: bool = False
    error: str | None = None
    wall_s: float | None = None
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    speedup: float | None = None
    best: bool = False
    peak_threads: int | None = None
    baseline_threads: int | None = None
    peak_procs: int = 1
    peak_rss_mib: float | None = None
    baseline_rss_mib: float | None = None
    results_digest: str | None = None
    outputs: list[Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["outputs"]
        return data


@dataclass
class Study:
    """What :func:`run_study` returns: the settings, the machine, and one Result per run."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, str | None]
    workloads: list[dict[str, Any]] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    created: str = ""
    total_s: float = 0.0
    command: list[str] | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def result(self, workload: str, approach: str) -> Result:
        for r in self.results:
            if r.workload == workload and r.approach == approach:
                return r
        raise KeyError((workload, approach))

    def best(self, workload: str) -> Result | None:
        for r in self.results:
            if r.workload == workload and r.best:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created": self.created,
            "command": self.command,
            "total_s": round(self.total_s, 3),
            "settings": self.settings,
            "machine": self.machine,
            "versions": self.versions,
            "workloads": self.workloads,
            "results": [r.to_dict() for r in self.results],
            "skipped": self.skipped,
        }

    def write_json(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    def table(self) -> str:
        from fastlcel.compare._report import format_table

        return format_table(self)


# --------------------------------------------------------------------------- machine and versions


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_mib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """The facts that explain a result: CPUs, load, Python, the GIL."""
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS or Windows
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    gil = getattr(sys, "_is_gil_enabled", None)
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "mem_total_mib": _mem_total_mib(),
        "load_avg": load,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "gil_enabled": True if gil is None else bool(gil()),
    }


VERSIONED = ("fastlcel", "langchain-core", "aiohttp", "requests", "httpx", "matplotlib")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for dist in VERSIONED:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    return found


# --------------------------------------------------------------------------- running


def resolve_settings(
    *,
    workloads: Sequence[str] | str | None = None,
    approaches: Sequence[str] | None = None,
    quick: bool = False,
    n: int | None = None,
    latency: float | None = None,
    sleep: float | None = None,
    body_size: int | None = None,
    workers: int | None = None,
    processes: int | None = None,
    max_concurrency: int | None = None,
    repeat: int | None = None,
    cpu_seconds: float | None = None,
    cpu_work: int | None = None,
    sync_client: str = "urllib",
    async_client: str = "asyncio",
    mp_context: str | None = None,
    server: str = "process",
) -> dict[str, Any]:
    """Fill in defaults (or the ``quick`` presets) and check every value; ValueError if bad."""
    preset = {**DEFAULTS, **(QUICK if quick else {})}
    given = {
        "n": n,
        "latency": latency,
        "sleep": sleep,
        "body_size": body_size,
        "workers": workers,
        "repeat": repeat,
        "cpu_seconds": cpu_seconds,
    }
    s: dict[str, Any] = {k: preset[k] if v is None else v for k, v in given.items()}
    if isinstance(workloads, str):
        workloads = [workloads]
    names = [w.strip().lower() for item in workloads or ["all"] for w in item.split(",")]
    names = list(WORKLOADS) if "all" in names else names
    for name in names:
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}, all")
    s["workloads"] = [w for w in WORKLOADS if w in names]
    s["approaches"] = [a.key for a in select_approaches(approaches)]
    s["processes"] = processes if processes is not None else max(2, os.cpu_count() or 1)
    s["max_concurrency"] = max_concurrency
    s["cpu_work"] = cpu_work
    s["sync_client"] = sync_client
    s["async_client"] = async_client
    s["mp_context"] = mp_context = mp_context or default_mp_context()
    s["server"] = server
    s["quick"] = quick

    def positive(key: str, value: Any) -> None:
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"{key} must be at least 1, not {value!r}")

    for key in ("n", "workers", "repeat", "processes", "max_concurrency", "cpu_work"):
        positive(key, s[key])
    for key in ("latency", "sleep"):
        if not 0 <= s[key] <= 60:
            raise ValueError(f"{key} must be between 0 and 60 seconds, not {s[key]!r}")
    if not 0 <= s["body_size"] <= MAX_BODY_SIZE:
        raise ValueError(f"body_size must be between 0 and {MAX_BODY_SIZE}, not {s['body_size']}")
    if not 0 < s["cpu_seconds"] <= 600:
        raise ValueError(f"cpu_seconds must be above 0 (and at most 600), not {s['cpu_seconds']}")
    if sync_client not in SYNC_CLIENTS:
        raise ValueError(f"sync_client must be one of {', '.join(SYNC_CLIENTS)}")
    if async_client not in ASYNC_CLIENTS:
        raise ValueError(f"async_client must be one of {', '.join(ASYNC_CLIENTS)}")
    if "http" in s["workloads"]:
        for client in (sync_client, async_client):
            if not client_available(client):
                raise ValueError(
                    f"the HTTP client {client!r} is not installed (pip install {client})"
                )
    import multiprocessing

    if mp_context not in multiprocessing.get_all_start_methods():
        methods = ", ".join(multiprocessing.get_all_start_methods())
        raise ValueError(f"mp_context {mp_context!r} is not available here; choose from {methods}")
    if server not in ("process", "thread"):
        raise ValueError("server must be 'process' or 'thread'")
    return s


def run_study(
    workloads: Sequence[str] | str | None = None,
    *,
    approaches: Sequence[str] | None = None,
    quick: bool = False,
    n: int | None = None,
    latency: float | None = None,
    sleep: float | None = None,
    body_size: int | None = None,
    workers: int | None = None,
    processes: int | None = None,
    max_concurrency: int | None = None,
    repeat: int | None = None,
    cpu_seconds: float | None = None,
    cpu_work: int | None = None,
    sync_client: str = "urllib",
    async_client: str = "asyncio",
    mp_context: str | None = None,
    server: str = "process",
    progress: Progress | None = None,
) -> Study:
    """Run the comparison and return a :class:`Study` (``.results``, ``.table()``, ``.to_dict()``).

    - ``workloads``: any of "http", "sleep", "cpu" (default all);
    - ``approaches``: keys or groups of :data:`APPROACHES` (default all; those whose library is
      not installed are listed in ``skipped``);
    - ``n`` items per workload; ``latency`` seconds per HTTP response; ``sleep`` seconds per
      sleep; ``body_size`` bytes per HTTP response;
    - ``workers`` threads of ThreadPoolExecutor; ``processes`` workers of ProcessPoolExecutor
      (default the CPU count, at least 2) and ``mp_context`` its start method (default
      forkserver, or spawn where there is none);
    - ``max_concurrency``: the runnables' config, and a cap on asyncio.gather (default none: each
      library's own behaviour);
    - ``repeat`` runs per approach, the best is kept;
    - ``cpu_seconds``: the sequential time the cpu workload is sized to (or ``cpu_work``
      iterations per item);
    - ``quick=True`` shrinks everything, for CI; an explicit value still wins.

    Every value is checked first: ``ValueError`` if one is bad.
    """
    settings = resolve_settings(
        workloads=workloads,
        approaches=approaches,
        quick=quick,
        n=n,
        latency=latency,
        sleep=sleep,
        body_size=body_size,
        workers=workers,
        processes=processes,
        max_concurrency=max_concurrency,
        repeat=repeat,
        cpu_seconds=cpu_seconds,
        cpu_work=cpu_work,
        sync_client=sync_client,
        async_client=async_client,
        mp_context=mp_context,
        server=server,
    )
    report = progress or (lambda done, total, message: None)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no event loop in this thread
        return _run(settings, report)
    # Called from a running loop (a Jupyter cell): the async approaches need asyncio.run, which
    # cannot nest, so the study runs on a thread of its own while this one waits.
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(_run(settings, report))
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=target, name="fastlcel-compare-study")
    thread.start()
    thread.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _run(s: dict[str, Any], progress: Progress) -> Study:
    started = time.perf_counter()
    study = Study(
        settings=dict(s),
        machine=machine_info(),
        versions=versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    options = Options(
        workers=s["workers"],
        processes=s["processes"],
        max_concurrency=s["max_concurrency"],
        mp_context=s["mp_context"],
    )
    runnable: list[Approach] = []
    for approach in APPROACHES:
        if approach.key not in s["approaches"]:
            continue
        reason = approach.available()
        if reason is None:
            runnable.append(approach)
        else:
            study.skipped.append({"approach": approach.key, "reason": reason})
    total = len(s["workloads"]) * len(runnable) * s["repeat"]
    if any(a.family == "langchain" for a in runnable):
        progress(0, total, "warming up langchain_core")
        _warm_up_langchain()
    inputs = list(range(s["n"]))
    with contextlib.ExitStack() as stack:
        workloads: list[Workload] = []
        extra_threads = 0
        for name in s["workloads"]:
            if name == "http":
                progress(0, total, "http: starting the local HTTP server")
                srv = LatencyServer(s["latency"], s["body_size"], mode=s["server"])
                stack.enter_context(srv)
                extra_threads = 1 if s["server"] == "thread" else 0
                workload = http_workload(
                    srv.url,
                    latency=s["latency"],
                    body_size=s["body_size"],
                    sync_client=s["sync_client"],
                    async_client=s["async_client"],
                )
            elif name == "sleep":
                workload = sleep_workload(latency=s["sleep"])
            else:
                work = s["cpu_work"]
                if work is None:
                    progress(0, total, "cpu: sizing the work to this machine")
                    work = calibrate_cpu_work(s["cpu_seconds"], s["n"])
                workload = cpu_workload(work=work, target_seconds=s["cpu_seconds"])
            workloads.append(workload)
            study.workloads.append(
                {"name": name, "description": workload.description, "params": workload.params}
            )
        expected: dict[str, list[Any] | None] = {
            w.name: None if w.expected is None else [w.expected(i) for i in inputs]
            for w in workloads
        }
        # Approach by approach (each over every workload), so that a pool that an approach keeps
        # alive (fastlcel's) shows in its own rows and in the rows after it only.
        done = 0
        for approach in runnable:
            for workload in workloads:
                result = _run_one(
                    workload,
                    approach,
                    inputs,
                    options,
                    s,
                    extra_threads,
                    expected[workload.name],
                    progress,
                    done,
                    total,
                )
                done += s["repeat"]
                if expected[workload.name] is None and result.ok:
                    expected[workload.name] = result.outputs  # the first approach is the reference
                study.results.append(result)
    order = {name: index for index, name in enumerate(s["workloads"])}
    study.results.sort(key=lambda r: order[r.workload])  # stable: approach order within
    for name in s["workloads"]:
        _rank(study, name)
    progress(total, total, "done")
    study.total_s = time.perf_counter() - started
    return study


def _noop(x: Any) -> Any:
    return x


async def _anoop(x: Any) -> Any:
    return x


def _warm_up_langchain() -> None:
    """Import what langchain_core imports on first use, before anything is measured.

    Its first batch/abatch imports the callback and tracer machinery: that one-time cost (about a
    second, and tens of MiB) would otherwise land on whichever row ran first.
    """
    from langchain_core.runnables import RunnableLambda, RunnableParallel

    RunnableLambda(_noop).batch([0, 1])
    RunnableParallel({"a": RunnableLambda(_noop), "b": RunnableLambda(_noop)}).invoke(0)

    async def both() -> None:
        await RunnableLambda(_anoop).abatch([0, 1])
        await RunnableLambda(_noop).abatch([0, 1])

    asyncio.run(both())


def _run_one(
    workload: Workload,
    approach: Approach,
    inputs: list[int],
    options: Options,
    s: dict[str, Any],
    extra_threads: int,
    expected: list[Any] | None,
    progress: Progress,
    done: int,
    total: int,
) -> Result:
    label = approach.label(options, len(inputs))
    result = Result(
        workload=workload.name,
        approach=approach.key,
        label=label,
        family=approach.family,
        style=approach.style,
        n=len(inputs),
    )
    try:
        go = approach.prepare(workload, inputs, options)
    except Exception as exc:
        result.error = f"setting up failed: {type(exc).__name__}: {exc}"
        return result
    peaks_threads: list[int] = []
    peaks_rss: list[int] = []
    for run in range(s["repeat"]):
        suffix = f" (run {run + 1}/{s['repeat']})" if s["repeat"] > 1 else ""
        progress(done + run, total, f"{workload.name}: {label}{suffix}")
        gc.collect()
        sampler = Sampler(children=approach.processes, exclude_threads=extra_threads)
        error: BaseException | None = None
        outputs: list[Any] | None = None
        with sampler:
            start = time.perf_counter()
            try:
                outputs = go()
            except Exception as exc:
                error = exc
            elapsed = time.perf_counter() - start
        workload.close()
        if run == 0:
            result.baseline_threads = sampler.baseline_threads
            result.baseline_rss_mib = _mib(sampler.baseline_rss)
        if sampler.peak_threads is not None:
            peaks_threads.append(sampler.peak_threads)
        if sampler.peak_rss is not None:
            peaks_rss.append(sampler.peak_rss)
        result.peak_procs = max(result.peak_procs, sampler.peak_procs)
        if error is not None:
            result.error = f"{type(error).__name__}: {error}"
            break
        assert outputs is not None
        problem = _check(outputs, expected)
        if problem is not None:
            result.error = problem
            break
        result.times_s.append(round(elapsed, 6))
        result.outputs = outputs
    result.peak_threads = max(peaks_threads) if peaks_threads else None
    result.peak_rss_mib = _mib(max(peaks_rss)) if peaks_rss else None
    if result.error is None:
        result.ok = True
        result.wall_s = min(result.times_s)
        ordered = sorted(result.times_s)
        result.median_s = ordered[len(ordered) // 2]
        result.results_digest = hashlib.sha256(repr(result.outputs).encode()).hexdigest()[:16]
    return result


def _check(outputs: Any, expected: list[Any] | None) -> str | None:
    if not isinstance(outputs, list):
        return f"returned a {type(outputs).__name__}, not a list"
    if expected is None:
        return None
    if len(outputs) != len(expected):
        return f"returned {len(outputs)} results for {len(expected)} items"
    for i, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        if got != want:
            return f"wrong result for item {i}: {got!r:.60} instead of {want!r:.60}"
    return None


def _mib(size: int | None) -> float | None:
    return None if size is None else round(size / (1024 * 1024), 1)


def _rank(study: Study, workload: str) -> None:
    mine = [r for r in study.results if r.workload == workload and r.ok]
    sequential = next((r for r in mine if r.approach == "sequential"), None)
    for r in mine:
        if sequential is not None and r.wall_s:
            assert sequential.wall_s is not None
            r.speedup = round(sequential.wall_s / r.wall_s, 2)
    if mine:
        min(mine, key=lambda r: r.wall_s or 0.0).best = True

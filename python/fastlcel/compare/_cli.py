"""``python -m fastlcel.compare``: the command line of the study."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TextIO

from fastlcel.compare._approaches import APPROACHES, Options, default_mp_context
from fastlcel.compare._report import matplotlib_missing, plot_study
from fastlcel.compare._study import DEFAULTS, QUICK, resolve_settings, run_study
from fastlcel.compare._workloads import ASYNC_CLIENTS, SYNC_CLIENTS

DEFAULT_PLOT = "compare.png"

EPILOG = """\
examples:
  python -m fastlcel.compare                       # all workloads, all approaches (< 1 min)
  python -m fastlcel.compare --quick               # a few seconds, for CI
  python -m fastlcel.compare --workload http --latency 100ms --workers 32
  python -m fastlcel.compare --approach sequential,threads,fastlcel --json out.json
  python -m fastlcel.compare --plot                # also a bar chart: compare.png (matplotlib)
  python -m fastlcel.compare --plot docs/run.png   # ... at that path

The table goes to stdout, progress to stderr. Exit status: 0 when every approach returned the
right results, 1 when one failed, 2 for a bad option.
"""


def _duration(text: str) -> float:
    """Seconds: "0.05", "0.05s", "50ms", "50000us"."""
    value = text.strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if value.endswith(suffix):
            value, scale = value[: -len(suffix)], factor
            break
    try:
        return float(value) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 0.05, 50ms)") from None


def _size(text: str) -> int:
    """Bytes: "10000", "10k", "1M" (k = 1000)."""
    value = text.strip().lower()
    factor = 1
    if value and value[-1] in "km":
        value, factor = value[:-1], 1000 if value[-1] == "k" else 1_000_000
    try:
        return int(float(value) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10000, 10k)") from None


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    d, q = DEFAULTS, QUICK
    parser = argparse.ArgumentParser(
        prog="python -m fastlcel.compare",
        description=(
            "The asyncio vs threading vs processes study, with fastlcel as a contender: the same "
            "job (HTTP requests to a local server, sleeps, pure-Python CPU work) done every way, "
            "timed, with peak threads and memory."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--workload",
        action="append",
        metavar="NAME",
        help="http, sleep, cpu or all (default all); repeat or comma-separate",
    )
    add(
        "--approach",
        action="append",
        metavar="KEY",
        help="approach keys or groups (stdlib, asyncio, langchain, fastlcel); see --list",
    )
    add("--n", type=int, metavar="N", help=f"items per workload (default {d['n']}; quick {q['n']})")
    add(
        "--latency",
        type=_duration,
        metavar="SECONDS",
        help="latency of each HTTP response: 0.05 or 50ms "
        f"(default {d['latency'] * 1000:g}ms; quick {q['latency'] * 1000:g}ms)",
    )
    add(
        "--sleep",
        type=_duration,
        metavar="SECONDS",
        help="duration of each sleep of the sleep workload "
        f"(default {d['sleep'] * 1000:g}ms; quick {q['sleep'] * 1000:g}ms)",
    )
    add(
        "--body-size",
        type=_size,
        metavar="BYTES",
        help=f"HTTP response body size (default {d['body_size']}; quick {q['body_size']})",
    )
    add("--workers", type=int, help=f"ThreadPoolExecutor workers (default {d['workers']})")
    add("--processes", type=int, help="ProcessPoolExecutor workers (default: CPU count, min 2)")
    add(
        "--max-concurrency",
        type=int,
        metavar="K",
        help="config max_concurrency of the runnables' batch/abatch and a cap on asyncio.gather "
        "(default: none, each library's own behaviour)",
    )
    add("--repeat", type=int, help=f"runs per approach, the best is kept (default {d['repeat']})")
    add(
        "--cpu-seconds",
        type=float,
        metavar="S",
        help="size the cpu workload so that sequential takes about S seconds "
        f"(default {d['cpu_seconds']:g}; quick {q['cpu_seconds']:g})",
    )
    add("--cpu-work", type=int, metavar="ITER", help="fixed loop iterations per cpu item instead")
    add("--sync-client", choices=SYNC_CLIENTS, default="urllib", help="default urllib")
    add("--async-client", choices=ASYNC_CLIENTS, default="asyncio", help="default asyncio streams")
    add(
        "--mp-context",
        choices=("spawn", "forkserver", "fork"),
        help="ProcessPoolExecutor start method (default forkserver, spawn where there is none)",
    )
    add(
        "--server",
        choices=("process", "thread"),
        default="process",
        help="run the HTTP server in a child process (default) or a thread of this one",
    )
    add("--json", metavar="FILE", help="write every result, the machine and versions as JSON")
    add(
        "--plot",
        nargs="?",
        const=DEFAULT_PLOT,
        metavar="FILE.png",
        help=f"write a bar chart as a PNG to FILE.png (default {DEFAULT_PLOT}); needs "
        "matplotlib, which the [compare] extra installs",
    )
    add("--quick", action="store_true", help="small and fast (a few seconds), for CI")
    add("--quiet", "-q", action="store_true", help="no progress on stderr")
    add("--list", action="store_true", help="list the approaches and exit")
    return parser


class _Progress:
    """``[ 3/39   4s] http: ThreadPoolExecutor(5)`` on stderr; one updating line on a terminal."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int, message: str) -> None:
        elapsed = time.perf_counter() - self.start
        width = len(str(total))
        text = f"[{done:>{width}}/{total} {elapsed:4.0f}s] {message}"
        if self.tty:
            end = "\n" if message == "done" else ""
            self.stream.write(f"\r\x1b[K{text}{end}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _check_output_path(parser: argparse.ArgumentParser, option: str, path: str | None) -> None:
    """Before the study runs, not after a minute of it: a path that can be written."""
    if path is None:
        return
    if os.path.isdir(path):
        parser.error(f"{option}: {path} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"{option}: the folder {folder} does not exist")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        options = Options(
            workers=args.workers or DEFAULTS["workers"],
            processes=args.processes or max(2, os.cpu_count() or 1),
            max_concurrency=args.max_concurrency,
            mp_context=args.mp_context or default_mp_context(),
        )
        for approach in APPROACHES:
            missing = approach.available()
            note = f"  (not available: {missing})" if missing else ""
            print(f"{approach.key:24} {approach.label(options, args.n or DEFAULTS['n'])}{note}")
        return 0
    study_args = dict(
        workloads=_split(args.workload),
        approaches=_split(args.approach),
        quick=args.quick,
        n=args.n,
        latency=args.latency,
        sleep=args.sleep,
        body_size=args.body_size,
        workers=args.workers,
        processes=args.processes,
        max_concurrency=args.max_concurrency,
        repeat=args.repeat,
        cpu_seconds=args.cpu_seconds,
        cpu_work=args.cpu_work,
        sync_client=args.sync_client,
        async_client=args.async_client,
        mp_context=args.mp_context,
        server=args.server,
    )
    try:
        resolve_settings(**study_args)
    except ValueError as exc:
        parser.error(str(exc))
    _check_output_path(parser, "--json", args.json)
    _check_output_path(parser, "--plot", args.plot)
    if args.plot and os.path.splitext(args.plot)[1].lower() not in ("", ".png"):
        parser.error(f"--plot writes a PNG: name it FILE.png, not {args.plot}")
    if args.plot and (missing := matplotlib_missing()):
        parser.error(missing)

    progress = None if args.quiet else _Progress(sys.stderr)
    try:
        study = run_study(**study_args, progress=progress)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    study.command = ["python", "-m", "fastlcel.compare", *(sys.argv[1:] if argv is None else argv)]
    print(study.table())
    if args.json:
        study.write_json(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot_study(study, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0 if study.ok else 1

"""The table printed on stdout, the JSON report's documented fields, and the optional bar chart."""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastlcel.compare._study import Study

_NUM = (int, float)
_NONE = type(None)

#: Top-level fields of the ``--json`` report: name -> (accepted JSON types, meaning).
REPORT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "schema": ((str,), 'format id, "fastlcel.compare/1"'),
    "created": ((str,), "start time, ISO 8601 UTC"),
    "command": ((list, _NONE), "the command-line arguments; null from run_study()"),
    "total_s": (_NUM, "duration of the whole study, seconds"),
    "settings": ((dict,), "every setting after defaults: n, latency, workers, processes, ..."),
    "machine": ((dict,), "platform, cpu_model, cpu_count, cpus_usable, load_avg, python, ..."),
    "versions": ((dict,), "installed version (or null) of fastlcel, langchain-core, clients"),
    "workloads": ((list,), "per workload: name, description, params"),
    "results": ((list,), "one object per (workload, approach), fields below"),
    "skipped": ((list,), "approaches not run: {approach, reason}"),
}

#: Fields of each object in ``results``.
RESULT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "workload": ((str,), "http, sleep or cpu"),
    "approach": ((str,), "approach key (see --approach), e.g. threads, fastlcel-batch"),
    "label": ((str,), "the approach as shown in the table"),
    "family": ((str,), "stdlib, langchain or fastlcel"),
    "style": ((str,), "sync (runs the def function) or async (runs the async def function)"),
    "n": ((int,), "number of items"),
    "ok": ((bool,), "ran and returned the right results"),
    "error": ((str, _NONE), "why not ok, else null"),
    "wall_s": (_NUM + (_NONE,), "best wall time of the runs, seconds"),
    "median_s": (_NUM + (_NONE,), "median wall time of the runs, seconds"),
    "times_s": ((list,), "wall time of every run, seconds"),
    "speedup": (_NUM + (_NONE,), "sequential wall_s / this wall_s"),
    "best": ((bool,), "fastest of its workload"),
    "peak_threads": ((int, _NONE), "most OS threads at once (sampler excluded; + pool workers')"),
    "baseline_threads": ((int, _NONE), "OS threads just before the run"),
    "peak_procs": ((int,), "most processes at once: 1 + new child processes"),
    "peak_rss_mib": (_NUM + (_NONE,), "most resident memory at once, MiB (+ pool workers')"),
    "baseline_rss_mib": (_NUM + (_NONE,), "resident memory just before the run, MiB"),
    "results_digest": ((str, _NONE), "hash of the returned list: equal across approaches"),
}


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # a bool is an int in Python, never in the schema
    return isinstance(value, types)


def validate_report(report: Any) -> list[str]:
    """The problems of a ``--json`` report against the documented fields (empty: valid)."""
    if not isinstance(report, dict):
        return ["the report is not a JSON object"]
    problems = []
    for name, (types, _) in REPORT_FIELDS.items():
        if name not in report:
            problems.append(f"missing field {name!r}")
        elif not _type_ok(report[name], types):
            problems.append(f"field {name!r} has type {type(report[name]).__name__}")
    problems += [f"undocumented field {k!r}" for k in report if k not in REPORT_FIELDS]
    if report.get("schema") not in (None, "fastlcel.compare/1"):
        problems.append(f"unknown schema {report.get('schema')!r}")
    for index, result in enumerate(report.get("results") or []):
        if not isinstance(result, dict):
            problems.append(f"results[{index}] is not an object")
            continue
        for name, (types, _) in RESULT_FIELDS.items():
            if name not in result:
                problems.append(f"results[{index}] misses {name!r}")
            elif not _type_ok(result[name], types):
                kind = type(result[name]).__name__
                problems.append(f"results[{index}].{name} has type {kind}")
        problems += [
            f"results[{index}] has undocumented field {k!r}"
            for k in result
            if k not in RESULT_FIELDS
        ]
        if result.get("ok") and result.get("wall_s") is None:
            problems.append(f"results[{index}] is ok without a wall_s")
    return problems


# --------------------------------------------------------------------------- the table


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def format_table(study: Study) -> str:
    """A Markdown table (aligned for the terminal), with a header and notes."""
    m, v = study.machine, study.versions
    lines = [
        f"fastlcel.compare: Python {m['python']} ({m['implementation']}"
        f"{'' if m['gil_enabled'] else ', free-threaded'}) on {m['platform']}, "
        f"{m['cpus_usable']} CPUs, load average {_load(m['load_avg'])}",
        "versions: "
        + ", ".join(f"{k} {ver}" for k, ver in v.items() if ver is not None)
        + f"; n={study.settings['n']}, repeat={study.settings['repeat']}",
        "",
    ]
    lines += [f"- {w['name']}: {w['description']}" for w in study.workloads]
    lines.append("")
    header = ["workload", "approach", "wall s", "speed-up", "peak threads", "peak RSS MiB", ""]
    rows = []
    for r in study.results:
        if r.ok:
            assert r.wall_s is not None
            wall = _seconds(r.wall_s)
            speedup = "-" if r.speedup is None else f"{r.speedup:.1f}x"
        else:
            wall, speedup = "FAILED", "-"
        threads = "-" if r.peak_threads is None else str(r.peak_threads)
        if r.peak_threads is not None and r.baseline_threads is not None:
            threads += f" (+{max(r.peak_threads - r.baseline_threads, 0)})"
        if r.peak_procs > 1:
            threads += f" in {r.peak_procs} procs"
        rss = "-" if r.peak_rss_mib is None else f"{r.peak_rss_mib:.0f}"
        rows.append([r.workload, r.label, wall, speedup, threads, rss, "<- best" if r.best else ""])
    right = {2, 3, 4, 5}
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
    lines += [line(header), "|" + "|".join(rule) + "|"]
    lines += [line(row) for row in rows]
    lines.append("")
    repeat = study.settings["repeat"]
    lines.append(
        f"wall s: {'best of ' + str(repeat) + ' runs' if repeat > 1 else 'one run'}; "
        "speed-up: sequential's wall time / this one's."
    )
    lines.append(
        "peak threads: most OS threads of this process during the run, as the kernel counts them "
        "(so fastlcel's Rust pool threads count), (+new ones started by the run); a pool that an "
        "earlier row left alive counts in the total but not as new."
    )
    lines.append(
        "ProcessPoolExecutor: its rows count the threads and memory of its worker processes too, "
        "and its times include starting the pool (and the fork server, on its first row)."
    )
    for r in study.results:
        if not r.ok:
            lines.append(f"FAILED {r.workload} / {r.approach}: {r.error}")
    for skipped in study.skipped:
        lines.append(f"skipped {skipped['approach']}: {skipped['reason']}")
    return "\n".join(lines)


def _load(load: Any) -> str:
    return "?" if not load else " ".join(f"{x:.2f}" for x in load)


# --------------------------------------------------------------------------- the chart


def matplotlib_missing() -> str | None:
    """None when ``--plot`` can work, else the message to show."""
    import importlib.util

    try:  # not an import: matplotlib (numpy, its BLAS threads) would skew the measurements
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return (
            "--plot needs matplotlib, which is not installed "
            "(pip install matplotlib; the [compare] extra has it)"
        )
    return None


_COLORS = {"stdlib": "#8c8c8c", "langchain": "#2f6db3", "fastlcel": "#e4572e"}


def plot_study(study: Study, path: str) -> None:
    """A PNG bar chart at ``path`` (whatever its extension): one panel per workload, wall time
    per approach (log scale)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    seconds = FuncFormatter(lambda value, _pos: f"{value:g}")
    # between the powers of ten, label 2x and 5x only: "0.02", "0.05", not "2e-02"
    minor = FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")

    workloads = [w["name"] for w in study.workloads]
    per = {w: [r for r in study.results if r.workload == w] for w in workloads}
    height = sum(max(len(rs), 1) for rs in per.values()) * 0.32 + 1.2 * len(workloads)
    fig = Figure(figsize=(10, max(height, 3)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(workloads), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, workloads, strict=True):
        rows = [r for r in per[name] if r.ok]
        labels = [r.label for r in rows]
        times = [r.wall_s or 0.0 for r in rows]
        colors = [_COLORS.get(r.family, "#555555") for r in rows]
        ypos = list(range(len(rows)))
        ax.barh(ypos, times, color=colors)
        ax.set_yticks(ypos)
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(seconds)
        ax.xaxis.set_minor_formatter(minor)
        ax.set_xlabel("wall time, seconds (log scale; shorter is better)")
        desc = next(w["description"] for w in study.workloads if w["name"] == name)
        ax.set_title(textwrap.fill(f"{name}: {desc}", 110), fontsize=9, loc="left")
        for y, r in zip(ypos, rows, strict=True):
            note = f" {r.wall_s:.3g} s" + ("" if r.speedup is None else f"  {r.speedup:.1f}x")
            ax.text(r.wall_s or 0.0, y, note, va="center", fontsize=7)
        if times:
            ax.set_xlim(min(times) / 1.5, max(times) * 4)
    m = study.machine
    fig.suptitle(
        f"python -m fastlcel.compare: n={study.settings['n']}, Python {m['python']}, "
        f"{m['cpus_usable']} CPUs",
        fontsize=10,
    )
    handles = [Patch(color=color, label=family) for family, color in _COLORS.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=3)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    # format="png": the file is a PNG at exactly ``path`` (matplotlib would otherwise append
    # ".png" to a name without an extension, or pick the format from the extension)
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    _write_small_png(image.getvalue(), path)


def _write_small_png(data: bytes, path: str) -> None:
    """The chart's flat colours fit a 256-colour palette: a third of the RGBA file's size, the
    same picture. Pillow comes with matplotlib; without it, the RGBA file as it is."""
    try:
        from PIL import Image
    except ImportError:
        with open(path, "wb") as out:
            out.write(data)
        return
    with Image.open(io.BytesIO(data)) as rgba:
        rgba.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)

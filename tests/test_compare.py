"""python -m fastlcel.compare: the local HTTP server, the study, the command line, the report."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("fastlcel._core", reason="the fastlcel extension is not built")

from fastlcel.compare import (  # noqa: E402
    APPROACH_KEYS,
    REPORT_FIELDS,
    RESULT_FIELDS,
    LatencyServer,
    Study,
    main,
    run_study,
    validate_report,
)
from fastlcel.compare._approaches import select_approaches  # noqa: E402
from fastlcel.compare._cli import _duration  # noqa: E402
from fastlcel.compare._report import plot_study  # noqa: E402
from fastlcel.compare._sampler import Sampler, child_pids, read_status  # noqa: E402
from fastlcel.compare._server import body_digest, make_body, port_is_free  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs" / "compare.md"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def os_threads() -> int:
    status = read_status()
    return threading.active_count() if status is None else status[0]


def settles_to(expected: int, count: Callable[[], int], timeout: float = 2.0) -> bool:
    """True once ``count()`` equals ``expected`` (an OS thread outlives its join by a moment)."""
    deadline = time.monotonic() + timeout
    while count() != expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def get(url: str) -> bytes:
    with NO_PROXY.open(url, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def quick_study() -> Study:
    """One --quick study (every workload, every approach), shared by the tests that read it."""
    return run_study(quick=True)


# --------------------------------------------------------------------------- the HTTP server


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_server_starts_serves_and_stops_cleanly(mode: str) -> None:
    threads_before = os_threads()
    children_before = child_pids()
    with LatencyServer(latency=0.0, body_size=100, mode=mode) as server:
        port = server.port
        assert port is not None and not port_is_free(port)
        assert get(server.url + "/item/3") == make_body("/item/3", 100)
        pid = server.pid
    assert port_is_free(port), "the port is still open after stop()"
    assert settles_to(threads_before, os_threads), "a server thread outlived stop()"
    assert child_pids() == children_before, "the server process outlived stop()"
    if mode == "process":
        assert pid is not None and not os.path.exists(f"/proc/{pid}")
    server.stop()  # idempotent


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_server_stops_with_connections_still_open(
    mode: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with LatencyServer(latency=5.0, mode=mode) as server:
        idle = socket.create_connection(("127.0.0.1", server.port))  # sends nothing
        waiting = socket.create_connection(("127.0.0.1", server.port))
        waiting.sendall(b"GET /slow HTTP/1.0\r\n\r\n")  # its answer is 5 s away
        time.sleep(0.1)
        start = time.perf_counter()
    assert time.perf_counter() - start < 2
    assert waiting.recv(100) == b""  # closed without an answer
    idle.close()
    waiting.close()
    assert capfd.readouterr().err == ""  # the server process printed no traceback
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_server_stop_without_start_and_bad_arguments() -> None:
    LatencyServer().stop()
    with pytest.raises(ValueError):
        LatencyServer(mode="fork")
    with pytest.raises(ValueError):
        LatencyServer(latency=-1)


def test_server_applies_the_latency_and_the_query_overrides() -> None:
    with LatencyServer(latency=0.1, body_size=50, mode="thread") as server:
        start = time.perf_counter()
        assert len(get(server.url + "/a")) == 50
        assert time.perf_counter() - start >= 0.1
        start = time.perf_counter()
        body = get(server.url + "/a?latency=0&size=7")
        assert time.perf_counter() - start < 0.1
        assert body == make_body("/a", 7)


def test_bodies_depend_on_the_path_only() -> None:
    assert make_body("/item/1", 1000) == make_body("/item/1", 1000)
    assert make_body("/item/1", 1000) != make_body("/item/2", 1000)
    assert len(make_body("/x", 12345)) == 12345
    assert body_digest(b"abc").startswith("3:")


def test_server_is_not_the_bottleneck() -> None:
    """300 clients at once, 0.3 s each: concurrent, not queued (300 x 0.3 s would be 90 s)."""

    async def one(port: int, i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /item/{i} HTTP/1.0\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data.partition(b"\r\n\r\n")[2]

    async def many(port: int) -> list[bytes]:
        return await asyncio.gather(*(one(port, i) for i in range(300)))

    with LatencyServer(latency=0.3, body_size=64) as server:
        assert server.port is not None
        start = time.perf_counter()
        bodies = asyncio.run(many(server.port))
        elapsed = time.perf_counter() - start
    assert bodies == [make_body(f"/item/{i}", 64) for i in range(300)]
    assert elapsed < 3.0


# --------------------------------------------------------------------------- the study


def test_every_approach_returns_the_same_results(quick_study: Study) -> None:
    assert quick_study.skipped == [] or all(
        s["approach"].startswith("langchain") for s in quick_study.skipped
    )
    failures = [(r.workload, r.approach, r.error) for r in quick_study.results if not r.ok]
    assert failures == []
    for workload in ("http", "sleep", "cpu"):
        rows = [r for r in quick_study.results if r.workload == workload]
        ran = {r.approach for r in rows}
        skipped = {s["approach"] for s in quick_study.skipped}
        assert ran | skipped == set(APPROACH_KEYS)
        assert len({r.results_digest for r in rows}) == 1, workload
        reference = rows[0].outputs
        assert reference is not None and len(reference) == quick_study.settings["n"]
        assert all(r.outputs == reference for r in rows)
    n = quick_study.settings["n"]
    http = quick_study.result("http", "fastlcel-batch").outputs
    assert http == [body_digest(make_body(f"/item/{i}", 1000)) for i in range(n)]
    assert quick_study.result("sleep", "fastlcel-abatch-async").outputs == list(range(n))


def test_the_study_measures_and_ranks(quick_study: Study) -> None:
    for workload in ("http", "sleep", "cpu"):
        best = quick_study.best(workload)
        assert best is not None
        rows = [r for r in quick_study.results if r.workload == workload]
        assert sum(r.best for r in rows) == 1
        assert best.wall_s == min(r.wall_s for r in rows if r.wall_s is not None)
        assert quick_study.result(workload, "sequential").speedup == 1.0
    for r in quick_study.results:
        assert r.peak_threads is not None and r.peak_threads >= 1
        assert r.peak_rss_mib is not None and r.peak_rss_mib > 1
    threads = quick_study.result("sleep", "threads")
    assert threads.peak_threads is not None and threads.baseline_threads is not None
    assert threads.peak_threads >= threads.baseline_threads + 2  # the pool's workers showed
    processes = quick_study.result("cpu", "processes")
    assert processes.peak_procs >= 2  # the pool's worker processes were counted
    # IO overlaps even at n=12: asyncio beats the for loop
    assert quick_study.result("sleep", "asyncio-gather").speedup > 2


def test_quick_is_quick(quick_study: Study) -> None:
    assert quick_study.settings["n"] <= 20
    assert quick_study.total_s < 20


def test_the_study_leaves_no_server_thread_or_process_behind() -> None:
    threads_before = set(threading.enumerate())
    children_before = child_pids()
    study = run_study(["http", "sleep"], approaches=["sequential", "threads"], quick=True, n=3)
    assert study.ok
    assert set(threading.enumerate()) <= threads_before
    assert child_pids() <= children_before


def test_run_study_from_a_running_event_loop() -> None:
    """As in a Jupyter cell: asyncio.run cannot nest, so the study runs on a thread of its own."""

    async def cell() -> Study:
        return run_study("sleep", approaches=["asyncio", "fastlcel-abatch-async"], quick=True, n=3)

    study = asyncio.run(cell())
    assert study.ok and len(study.results) == 3


def test_table_has_every_row_and_marks_the_best(quick_study: Study) -> None:
    table = quick_study.table()
    for r in quick_study.results:
        assert r.label in table
    assert table.count("<- best") == 3
    assert "| workload | approach" in table


def test_report_validates_and_is_json(quick_study: Study) -> None:
    report = json.loads(json.dumps(quick_study.to_dict()))
    assert validate_report(report) == []
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert report["versions"]["fastlcel"] is not None
    broken = dict(report, results=[{**report["results"][0], "wall_s": "fast"}], extra=1)
    del broken["machine"]
    problems = validate_report(broken)
    assert any("machine" in p for p in problems)
    assert any("wall_s" in p for p in problems)
    assert any("extra" in p for p in problems)


def test_json_fields_are_the_documented_ones() -> None:
    section = DOCS.read_text(encoding="utf-8").split("### The `--json` report", 1)[1]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert documented == set(REPORT_FIELDS) | set(RESULT_FIELDS)


def test_run_study_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="workload"):
        run_study("disk")
    with pytest.raises(ValueError, match="n must be"):
        run_study(n=0)
    with pytest.raises(ValueError, match="approach"):
        run_study(approaches=["gevent"])


def test_approach_groups() -> None:
    assert [a.key for a in select_approaches(["fastlcel"])] == [
        "fastlcel-batch",
        "fastlcel-abatch-async",
        "fastlcel-abatch-sync",
        "fastlcel-parallel",
        "fastlcel-executor",
    ]
    asyncio_keys = [a.key for a in select_approaches(["asyncio"])]
    assert asyncio_keys == ["asyncio-gather", "asyncio-to-thread"]
    assert len(select_approaches(None)) == len(APPROACH_KEYS)


def test_sampler_counts_os_threads_and_memory() -> None:
    release = threading.Event()
    workers = [threading.Thread(target=release.wait) for _ in range(4)]
    with Sampler() as sampler:
        for worker in workers:
            worker.start()
        time.sleep(0.05)
        release.set()
        for worker in workers:
            worker.join()
    assert sampler.baseline_threads is not None and sampler.peak_threads is not None
    assert sampler.peak_threads >= sampler.baseline_threads + 4
    assert sampler.peak_rss is not None and sampler.peak_rss > 1024 * 1024


# --------------------------------------------------------------------------- the command line


def test_the_command_quick_with_json(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fastlcel.compare", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "| workload | approach" in proc.stdout
    assert "fastlcel Lambda.batch" in proc.stdout
    assert "[" in proc.stderr and "done" in proc.stderr  # progress went to stderr
    assert "done" not in proc.stdout
    report = json.loads(out.read_text())
    assert validate_report(report) == []
    assert report["command"][-3:] == ["--quick", "--json", str(out)]
    assert report["settings"]["quick"] is True
    assert elapsed < 30


@pytest.mark.parametrize(
    "argv",
    [
        ["--n", "0"],
        ["--workload", "disk"],
        ["--approach", "gevent"],
        ["--latency", "fast"],
        ["--latency", "-1"],
        ["--workers", "0"],
        ["--sync-client", "curl"],
        ["--json", "/no/such/folder/x.json"],
        ["--plot", "/no/such/folder/c.png"],
        ["--plot", "chart.svg"],
        ["--plot", "."],
        ["--unknown"],
    ],
)
def test_bad_options_exit_with_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_list_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(key in listed for key in APPROACH_KEYS)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--plot" in capsys.readouterr().out


def test_plot_without_matplotlib_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--plot", str(tmp_path / "c.png")])
    assert exit_info.value.code == 2
    assert "pip install matplotlib" in capsys.readouterr().err


def test_plot_writes_a_png(quick_study: Study, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "compare.png"
    plot_study(quick_study, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SMALL_STUDY = ["--quick", "--quiet", "--workload", "sleep", "--n", "3"]
SMALL_STUDY += ["--approach", "sequential,fastlcel-batch"]


def test_plot_option_writes_a_png_at_the_path_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart"  # no extension: written as is, not as chart.png
    assert main([*SMALL_STUDY, "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["chart"]
    assert f"wrote {path}" in capsys.readouterr().err


def test_plot_option_without_a_path_writes_compare_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main([*SMALL_STUDY, "--plot"]) == 0
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("text", "seconds"), [("0.05", 0.05), ("50ms", 0.05), ("2s", 2.0), ("500us", 0.0005)]
)
def test_latency_units(text: str, seconds: float) -> None:
    assert _duration(text) == pytest.approx(seconds)

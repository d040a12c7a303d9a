"""langchain_core's own runnable tests as the judge of fastlcel's drop-in claim.

    python tests/langchain_suite/judge.py [--record [--force]] [--cache-dir DIR] [--timeout S]

Downloads the sdist of the installed langchain_core (cached), installs the test dependencies its
``tests/unit_tests/runnables/`` needs, runs those tests twice, as shipped and with the imports of
the runnable classes rewritten to fastlcel, and prints ``X of Y langchain-passing tests pass``
followed by every remaining failure under its documented reason (``reasons.toml``). Exits 1 if X
is below the figure recorded for this langchain_core version in ``figures.json``; ``--record``
raises that figure (lowering it takes ``--force``).

The test dependencies go into the running environment, where pytest-asyncio breaks this
repository's own pytest run (its deprecation warning is an error there): run the judge in a venv
made with ``--system-site-packages`` over the environment fastlcel is installed in, as CI does.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterable, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REASONS_FILE = HERE / "reasons.toml"
FIGURES_FILE = HERE / "figures.json"
SUITE = "tests/unit_tests/runnables"
LC_PACKAGE = "langchain_core.runnables"

# The packages of langchain_core's `test` dependency group that SUITE needs (the rest serve other
# folders or its CI: numpy, responses, pytest-socket, pytest-xdist, benchmarks, ...). Versions
# come from langchain_core's pyproject.
TEST_DEPS = (
    "pytest",
    "pytest-asyncio",  # asyncio_mode = "auto" runs the async tests
    "syrupy",  # the snapshot fixture
    "freezegun",  # test_runnable, test_runnable_events_*
    "pytest-mock",  # the mocker fixture
    "blockbuster",  # the autouse fixture of tests/unit_tests/conftest.py
    "grandalf",  # Graph.draw_ascii
)
OUR_DEPS = ("pytest-timeout",)  # a hanging test must not hang the run

MAX_RESTARTS = 20


@dataclass
class Result:
    outcome: str
    message: str = ""
    longrepr: str = ""


@dataclass
class Run:
    """The outcome of every test of one run of the suite, by test id."""

    results: dict[str, Result] = field(default_factory=dict)
    collect_errors: dict[str, str] = field(default_factory=dict)  # file -> message
    seconds: float = 0.0


@dataclass
class Reason:
    """A documented reason for failures: the tests it names, or the errors it recognises."""

    name: str
    description: str
    tests: list[str]
    errors: list[str]

    def claims(self, test: str, message: str) -> bool:
        return any(_glob(p, test) for p in self.tests) or any(
            re.search(e, message) for e in self.errors
        )


# -- sources and dependencies ------------------------------------------------------------------


def fetch_sources(version: str, cache: Path) -> Path:
    """The unpacked sdist of langchain-core ``version``, downloaded once into ``cache``."""
    unpacked = cache / f"langchain_core-{version}"
    if (unpacked / "pyproject.toml").exists():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:"]
        pip += ["--no-deps", f"langchain-core=={version}", "--dest", tmp]
        subprocess.run(pip, check=True)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)  # noqa: S202 (a PyPI sdist; old Python without filters)
        (top,) = (p for p in Path(tmp).iterdir() if p.is_dir())
        top.rename(unpacked)  # only a complete tree ever gets the final name
    return unpacked


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def suite_requirements(sources: Path) -> list[str]:
    """TEST_DEPS with the version constraints of langchain_core's ``test`` group, plus ours."""
    pyproject = tomllib.loads((sources / "pyproject.toml").read_text(encoding="utf-8"))
    group = pyproject.get("dependency-groups", {}).get("test", [])
    constrained = {_canonical(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]): r for r in group}
    return [constrained.get(name, name) for name in TEST_DEPS] + list(OUR_DEPS)


def _satisfied(requirement: str) -> bool:
    from packaging.requirements import Requirement  # a langchain_core dependency

    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate():
        return True
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(installed, prereleases=True)


def install(requirements: list[str]) -> None:
    missing = [r for r in requirements if not _satisfied(r)]
    if missing:
        print(f"installing {', '.join(missing)} into {sys.prefix}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)


# -- the rewrite -------------------------------------------------------------------------------


def drop_in_names() -> frozenset[str]:
    """The runnable classes fastlcel exports, but its abstract base ``Runnable``: tests subclass
    and isinstance-check langchain_core's, which fastlcel's runnables already count as."""
    import fastlcel

    def concrete_runnable(obj: object) -> bool:
        return isinstance(obj, type) and issubclass(obj, fastlcel.Runnable)

    exported = {name: getattr(fastlcel, name) for name in fastlcel.__all__}
    return frozenset(
        name for name, obj in exported.items() if concrete_runnable(obj) and name != "Runnable"
    )


def _char_offset(lines: list[str], lineno: int, col: int) -> int:
    """The string offset of ast's (1-based line, UTF-8 byte column)."""
    before = sum(len(line) for line in lines[: lineno - 1])
    return before + len(lines[lineno - 1].encode()[:col].decode())


def rewrite_imports(source: str, names: Set[str]) -> tuple[str, int]:
    """``source`` with ``from langchain_core.runnables[.x] import ...`` of ``names`` turned into
    ``from fastlcel import ...``, in place (line numbers kept); and how many statements changed.
    """
    edits: list[tuple[int, int, str]] = []
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level or node.module is None:
            continue
        if node.module != LC_PACKAGE and not node.module.startswith(LC_PACKAGE + "."):
            continue
        moved = [alias for alias in node.names if alias.name in names]
        if not moved:
            continue
        kept = [alias for alias in node.names if alias.name not in names]
        statements = [f"from {node.module} import {_aliases(kept)}"] if kept else []
        statements.append(f"from fastlcel import {_aliases(moved)}")
        assert node.end_lineno is not None and node.end_col_offset is not None
        start = _char_offset(lines, node.lineno, node.col_offset)
        end = _char_offset(lines, node.end_lineno, node.end_col_offset)
        padding = "\n" * (node.end_lineno - node.lineno)
        edits.append((start, end, "; ".join(statements) + padding))
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source, len(edits)


def _aliases(aliases: Iterable[ast.alias]) -> str:
    return ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in aliases)


def prepare_tree(sources: Path, dest: Path, names: Set[str] = frozenset()) -> int:
    """A copy of the sdist's tests (not its package: the installed one runs), with the imports
    of ``names`` rewritten to fastlcel; returns the number of import statements rewritten."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(sources / "tests", dest / "tests")
    shutil.copy2(sources / "pyproject.toml", dest / "pyproject.toml")
    rewritten = 0
    for path in sorted((dest / SUITE).rglob("*.py")) if names else []:
        text, count = rewrite_imports(path.read_text(encoding="utf-8"), names)
        if count:
            path.write_text(text, encoding="utf-8")
            rewritten += count
    return rewritten


# -- running the suite -------------------------------------------------------------------------


def _pytest_once(tree: Path, ids: list[str] | None, timeout: float, budget: float) -> list[Any]:
    """One pytest process on ``tree``; the events its outcomes plugin wrote (see there)."""
    outcomes = tree / "outcomes.jsonl"
    outcomes.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", *(ids or [SUITE]), "-p", "outcomes_plugin"]
    # --tb=native: pytest's own format parses the whole test file again for every failure
    # (0.1 s for test_runnable.py's 6,500 lines, 13 s for its failures with fastlcel).
    command += ["-p", "no:cacheprovider", "-q", "--tb=native", "--continue-on-collection-errors"]
    # hypothesis (fastlcel's own test extra) is no plugin of langchain_core's suite: not loading
    # it saves ~1 s of start-up per pytest process, which a restart after a crash pays again.
    command += ["-p", "no:hypothesispytest"]
    command += [f"--timeout={timeout}", f"--rootdir={tree}", "-c", str(tree / "pyproject.toml")]
    # Fast exit: a LangChainTracer of test_tracing_interops leaves langsmith's non-daemon thread
    # retrying the hosted API at exit (11 s offline); nothing after the session judges a test.
    env = dict(os.environ, LCSUITE_OUTCOMES=str(outcomes), LCSUITE_FAST_EXIT="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    with open(tree / "pytest.log", "a", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            process.wait(budget)
            code = process.returncode
            how = signal.Signals(-code).name if code < 0 else f"exit status {code}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            how = f"hung: killed after {budget:.0f} s"
    text = outcomes.read_text(encoding="utf-8") if outcomes.exists() else ""
    events = [json.loads(line) for line in text.splitlines()]
    if not events or events[-1]["event"] != "finished":
        events.append({"event": "died", "how": how})
    return events


def run_suite(tree: Path, timeout: float, budget: float) -> Run:
    """Every test of SUITE in ``tree``; after a crash or a hang, the tests not yet run."""
    run = Run()
    started = time.monotonic()
    collected: list[str] = []
    ids: list[str] | None = None
    for _ in range(MAX_RESTARTS):
        current, died = None, ""
        for event in _pytest_once(tree, ids, timeout, budget):
            kind = event["event"]
            if kind == "collected" and ids is None:
                collected = event["ids"]
            elif kind == "collect_error":
                run.collect_errors[event["id"]] = f"{short(event['id'])}: {event['message']}"
            elif kind == "start":
                current = event["id"]
            elif kind == "outcome":
                run.results[event["id"]] = Result(
                    event["outcome"], event["message"], event["longrepr"]
                )
                current = None
            elif kind == "died":
                died = event["how"]
        if current is not None:  # the test that crashed pytest, or an INTERNALERROR's
            what = f"pytest died ({died})" if died else "pytest INTERNALERROR"
            run.results[current] = Result("crashed", f"{what}, see {tree / 'pytest.log'}")
        elif died:
            raise RuntimeError(f"pytest died ({died}) outside any test: {tree / 'pytest.log'}")
        ids = [test for test in collected if test not in run.results]
        if current is None or not ids:
            break
    run.seconds = time.monotonic() - started
    return run


# -- judging -----------------------------------------------------------------------------------


def short(test_id: str) -> str:
    return test_id.removeprefix(SUITE + "/")


def _glob(pattern: str, test: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), test) is not None


def load_reasons(path: Path = REASONS_FILE) -> list[Reason]:
    entries = tomllib.loads(path.read_text(encoding="utf-8"))["reason"]
    return [
        Reason(e["name"], e["description"], e.get("tests", []), e.get("errors", []))
        for e in entries
    ]


def failures(langchain: Run, fastlcel: Run) -> tuple[list[str], dict[str, Result]]:
    """The langchain-passing tests, and those of them that do not pass with fastlcel (a test
    missing from the fastlcel run because its file could not be collected fails with that)."""
    passing = [test for test, r in langchain.results.items() if r.outcome == "passed"]
    failed = {}
    for test in passing:
        result = fastlcel.results.get(test)
        if result is None:
            error = fastlcel.collect_errors.get(test.split("::")[0])
            result = Result("collection error", error) if error else Result("not run")
        if result.outcome != "passed":
            failed[test] = result
    return passing, failed


def classify(failed: dict[str, Result], reasons: list[Reason]) -> dict[str, list[str]]:
    """Test ids by reason: the first that claims the test, else "collection error: ..." or
    "unexplained"."""
    groups: dict[str, list[str]] = {}
    for test, result in failed.items():
        reason = next((r for r in reasons if r.claims(short(test), result.message)), None)
        if reason is not None:
            group = reason.name
        elif result.outcome == "collection error":
            group = f"collection error: {result.message}"
        else:
            group = "unexplained"
        groups.setdefault(group, []).append(test)
    return groups


def report(
    passing: list[str], failed: dict[str, Result], reasons: list[Reason], tracebacks: bool
) -> None:
    print(f"{len(passing) - len(failed)} of {len(passing)} langchain-passing tests pass")
    groups = classify(failed, reasons)
    described = {r.name: r.description for r in reasons}
    order = [r.name for r in reasons] + sorted(g for g in groups if g not in described)
    for group in (g for g in order if g in groups):
        print(f"\n== {group} ({len(groups[group])})")
        if group in described:
            print(
                textwrap.fill(
                    described[group], 100, initial_indent=" " * 3, subsequent_indent=" " * 3
                )
            )
        for test in groups[group]:
            result = failed[test]
            line = (result.message.strip().splitlines() or [""])[0]
            print(f"  {short(test)}  [{result.outcome}] {line[:160]}")
            if tracebacks and group == "unexplained":
                print(textwrap.indent(result.longrepr, "    "))
    names = [short(test) for test in failed]
    stale = [p for r in reasons for p in r.tests if not any(_glob(p, n) for n in names)]
    if stale:
        print(f"\nlisted in {REASONS_FILE.name} but passing now (remove them): {stale}")


def summary(run: Run) -> str:
    counts = Counter(result.outcome for result in run.results.values())
    counts.update({"collection errors": len(run.collect_errors)} if run.collect_errors else {})
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))


def check_figure(version: str, passed: int, total: int, record: bool, force: bool) -> int:
    figures = json.loads(FIGURES_FILE.read_text(encoding="utf-8"))
    recorded = figures.get(version, {}).get("passing")
    if recorded is not None and figures[version]["of"] != total:
        print(f"\nnote: {total} langchain-passing tests, {figures[version]['of']} when recorded")
    if record and (recorded is None or passed >= recorded or force):
        figures[version] = {"passing": passed, "of": total}
        FIGURES_FILE.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        print(f"\nrecorded {passed} of {total} for langchain_core {version} in {FIGURES_FILE.name}")
        return 0
    if recorded is None:
        print(f"\nno figure recorded for langchain_core {version} (--record records one)")
        return 0
    print(f"\nrecorded figure for langchain_core {version}: {recorded}")
    if passed < recorded:
        print(f"FAIL: {passed} is below the recorded {recorded} (--record --force lowers it)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    parser.add_argument("--cache-dir", type=Path, default=default_cache / "fastlcel-lc-suite")
    parser.add_argument("--timeout", type=float, default=30, help="seconds per test")
    parser.add_argument("--budget", type=float, default=900, help="seconds per pytest process")
    parser.add_argument("--record", action="store_true", help="record X if it went up")
    parser.add_argument("--force", action="store_true", help="with --record: also if it fell")
    parser.add_argument("--tracebacks", action="store_true", help="of unexplained failures")
    parser.add_argument("--serial", action="store_true", help="one run after the other")
    args = parser.parse_args(argv)

    version = metadata.version("langchain-core")
    sources = fetch_sources(version, args.cache_dir)
    install(suite_requirements(sources))
    names = drop_in_names()
    work = args.cache_dir / "work"
    prepare_tree(sources, work / "langchain")
    count = prepare_tree(sources, work / "fastlcel", names)
    print(f"langchain_core {version}: {count} imports rewritten to fastlcel ({SUITE})", flush=True)

    def run(tree: str) -> Run:
        return run_suite(work / tree, args.timeout, args.budget)

    with ThreadPoolExecutor(1 if args.serial else 2) as pool:
        langchain, fastlcel = pool.map(run, ["langchain", "fastlcel"])
    print(f"as shipped ({langchain.seconds:.0f} s): {summary(langchain)}")
    print(f"with fastlcel ({fastlcel.seconds:.0f} s): {summary(fastlcel)}\n")
    passing, failed = failures(langchain, fastlcel)
    report(passing, failed, load_reasons(), args.tracebacks)
    passed = len(passing) - len(failed)
    return check_figure(version, passed, len(passing), args.record, args.force)


if __name__ == "__main__":
    sys.exit(main())

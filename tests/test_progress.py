"""The `progress` config key: a bar (tqdm, else one line on stderr) over a batch, the
as-completed iterators, a Parallel and map(): items done of total, failures, rate, ETA."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import pytest
from conftest import run_async
from fastlcel import FastLcelTypeError, Lambda, Parallel

N = 20
FAILING = {3, 7, 11, 15, 19}  # 5 of 20


def flaky(x: int) -> int:
    if x in FAILING:
        raise ValueError(x)
    return x


async def aflaky(x: int) -> int:
    await asyncio.sleep(0)
    return flaky(x)


@pytest.fixture(params=["tqdm", "line"])
def drawer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: drawn by tqdm, and by the plain line (tqdm made unimportable)."""
    if request.param == "tqdm":
        pytest.importorskip("tqdm.auto")
    else:
        monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    return request.param


def final_state(err: str, drawer: str) -> str:
    """The last drawing of the one bar on stderr (a bar ends with its only newline)."""
    assert err.count("\n") == 1 and err.endswith("\n"), repr(err)
    return err.rstrip("\n").split("\r")[-1]


def assert_finished(err: str, drawer: str, label: str, total: int, failed: int) -> None:
    last = final_state(err, drawer)
    if drawer == "tqdm":
        assert re.match(rf"{re.escape(label)}: 100%\|#+\| {total}/{total} \[", last), last
        assert re.search(r"it/s, " + str(failed) + r" failed\]$", last), last
    else:
        pattern = rf"{re.escape(label)}: {total}/{total} 100% \[\d\d:\d\d<00:00, .* it/s, "
        assert re.match(pattern + rf"{failed} failed\]\s*$", last), last


def options(label: str, drawer: str) -> Any:
    # tqdm's own options pass through (ascii bars compare as text); the line reads `desc`.
    return {"desc": label, "ascii": True} if drawer == "tqdm" else label


def test_batch_with_failures(capsys: pytest.CaptureFixture[str], drawer: str) -> None:
    out = Lambda(flaky).batch(
        list(range(N)), {"progress": options("items", drawer)}, return_exceptions=True
    )
    assert [isinstance(v, ValueError) for v in out] == [i in FAILING for i in range(N)]
    assert_finished(capsys.readouterr().err, drawer, "items", N, len(FAILING))


def test_abatch_of_async_steps_with_failures(
    capsys: pytest.CaptureFixture[str], drawer: str
) -> None:
    out = run_async(
        lambda: Lambda(aflaky).abatch(
            list(range(N)), {"progress": options("async", drawer)}, return_exceptions=True
        )
    )
    assert sum(isinstance(v, ValueError) for v in out) == len(FAILING)
    assert_finished(capsys.readouterr().err, drawer, "async", N, len(FAILING))


def test_batch_as_completed(capsys: pytest.CaptureFixture[str], drawer: str) -> None:
    pairs = list(
        Lambda(flaky).batch_as_completed(
            list(range(N)), {"progress": options("sync", drawer)}, return_exceptions=True
        )
    )
    assert sorted(i for i, _ in pairs) == list(range(N))
    assert_finished(capsys.readouterr().err, drawer, "sync", N, len(FAILING))


def test_abatch_as_completed(capsys: pytest.CaptureFixture[str], drawer: str) -> None:
    async def collect() -> list[Any]:
        config = {"progress": options("async", drawer)}
        it = Lambda(aflaky).abatch_as_completed(list(range(N)), config, return_exceptions=True)
        return [pair async for pair in it]

    assert len(run_async(collect)) == N
    assert_finished(capsys.readouterr().err, drawer, "async", N, len(FAILING))


def test_the_default_label_is_the_runnable_name(
    capsys: pytest.CaptureFixture[str], drawer: str
) -> None:
    Lambda(flaky).batch([1, 2], {"progress": True})
    assert final_state(capsys.readouterr().err, drawer).startswith("flaky: ")


def test_a_parallel_shows_its_steps(capsys: pytest.CaptureFixture[str], drawer: str) -> None:
    steps = {f"s{i}": (lambda x, i=i: x + i) for i in range(12)}
    out = Parallel(steps).invoke(1, {"progress": options("steps", drawer)})
    assert out == {f"s{i}": 1 + i for i in range(12)}
    assert_finished(capsys.readouterr().err, drawer, "steps", 12, 0)


def test_map_shows_its_items(capsys: pytest.CaptureFixture[str], drawer: str) -> None:
    assert Lambda(lambda x: x * 2).map().invoke([1, 2, 3], {"progress": True}) == [2, 4, 6]
    assert final_state(capsys.readouterr().err, drawer).startswith("RunnableEach<")


def test_one_bar_per_call_however_nested(capsys: pytest.CaptureFixture[str], drawer: str) -> None:
    # A batch of Parallels whose steps are map()s: only the batch's items are counted.
    inner = Parallel(a=Lambda(lambda x: x).map(), b=Lambda(lambda x: x).map())
    chain = Lambda(lambda x: [x, x]) | inner
    assert len(chain.batch(list(range(5)), {"progress": options("outer", drawer)})) == 5
    assert_finished(capsys.readouterr().err, drawer, "outer", 5, 0)


def test_a_failing_batch_ends_its_bar(capsys: pytest.CaptureFixture[str], drawer: str) -> None:
    with pytest.raises(ValueError):
        Lambda(flaky).batch(list(range(N)), {"progress": True, "max_concurrency": 1})
    last = final_state(capsys.readouterr().err, drawer)
    assert "1 failed" in last, last


def test_no_output_when_off(capsys: pytest.CaptureFixture[str]) -> None:
    Lambda(flaky).batch(list(range(N)), return_exceptions=True)
    Lambda(flaky).batch(list(range(N)), {"progress": False}, return_exceptions=True)
    Lambda(flaky).batch(list(range(N)), {"progress": None}, return_exceptions=True)
    run_async(lambda: Lambda(aflaky).abatch(list(range(N)), return_exceptions=True))
    Parallel(a=flaky, b=flaky).invoke(1)
    assert capsys.readouterr() == ("", "")


def test_invoke_of_a_single_step_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert Lambda(flaky).invoke(1, {"progress": True}) == 1
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "value, message",
    [
        (3, r"config\['progress'\] must be True, a label \(str\) or a dict of tqdm options"),
        ({1: "x"}, r"config\['progress'\] options must have str keys .* key 1 \(an int\)"),
    ],
)
def test_a_bad_value_is_refused_at_the_call(value: Any, message: str) -> None:
    with pytest.raises(FastLcelTypeError, match=message):
        Lambda(flaky).batch([1], {"progress": value})


def test_same_results_as_langchain_core_with_the_key(lcel: Any) -> None:
    # langchain_core has no bar: the key changes nothing else, there or here.
    out = lcel.RunnableLambda(flaky).batch(
        list(range(N)), {"progress": "items"}, return_exceptions=True
    )
    assert [repr(v) for v in out] == [
        repr(ValueError(i)) if i in FAILING else repr(i) for i in range(N)
    ]

"""bench/busy.py at tiny sizes: the report has every contender in both
conditions, the goals the issue names, and the busy neighbour it starts is
ended by its PID. Not speeds: those are the benchmark's to report."""

from __future__ import annotations

import json
import os
import sys

import pytest
from helpers import bench_modules

pytestmark = pytest.mark.slow  # they train, on the real data


@pytest.fixture(scope="module")
def bench():
    yield from bench_modules("busy")


def run_busy(bench, capsys, *argv: str) -> tuple[dict, str]:
    assert bench["busy"].main(["--iters", "2", "--repeat", "3", "--json", *argv]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def test_the_report_covers_every_contender_in_both_conditions(bench, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as where torch is not installed: skipped
    report, err = run_busy(bench, capsys)
    assert err.startswith("reference_torch: torch not importable (")
    graphc = ["graphc default", "graphc auto", "graphc 1 thread", "graphc 2 threads"]
    assert list(report["seconds_per_1000"]) == ["quiet", "busy"]
    for condition in ("quiet", "busy"):
        figures = report["seconds_per_1000"][condition]
        assert list(figures) == graphc
        for figure in figures.values():
            assert len(figure["runs"]) == 3
            assert figure["min"] <= figure["median"] <= figure["max"]
            assert figure["min"] > 0
        assert len(report["auto_choices"][condition]) == 3
    assert set(report["goals"]) == {
        "default within 1.15x of the best fixed count, quiet",
        "default within 1.15x of the best fixed count, busy",
        "default busy at most 3x its quiet time",
    }
    assert report["rounding"]["1 thread, rerun"] == 0.0  # the default's promise: bit-identical
    assert report["rounding"]["1 thread vs 2"] >= 0.0
    assert set(report["ratios"]) == {
        "default / best fixed count, quiet",
        "default / best fixed count, busy",
        "default busy / default quiet",
    }


def test_a_neighbour_runs_during_each_busy_round_only_and_is_ended_by_its_pid(bench, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    busy = bench["busy"]
    alive_while = {}
    real = busy.graphc_run

    def watched(data, threads, *args):
        # the neighbour of the current round, if any, is a child of this process
        alive_while.setdefault(threads, []).append(sorted(busy.running_neighbours()))
        return real(data, threads, *args)

    monkeypatch.setattr(busy, "graphc_run", watched)
    report, _ = run_busy(bench, capsys)
    assert len(report["neighbours"]) == 3  # one per busy round
    seen = alive_while["auto"]  # the one contender of its setting
    assert seen == [[], [report["neighbours"][0]], [], [report["neighbours"][1]], [], [report["neighbours"][2]]]
    for pid in report["neighbours"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # ended and waited for: no such process any more


def test_the_benchmark_refuses_fewer_than_three_runs(bench, capsys):
    with pytest.raises(SystemExit):
        bench["busy"].main(["--repeat", "2"])
    assert "argument --repeat: must be at least 3, got 2" in capsys.readouterr().err


def test_goals_follow_the_medians(bench):
    def stats(default, one, two, torch):
        figures = {"graphc default": default, "graphc 1 thread": one, "graphc 2 threads": two}
        figures["pytorch cpu 2 thr"] = torch
        return {name: {"median": value} for name, value in figures.items()}

    ratios, goals = bench["busy"].ratios_and_goals(
        {"quiet": stats(1.0, 1.0, 0.9, 2.0), "busy": stats(3.5, 3.5, 8.0, 3.0)}
    )
    assert ratios["default / best fixed count, quiet"] == pytest.approx(1 / 0.9)
    assert ratios["default busy / default quiet"] == pytest.approx(3.5)
    assert goals == {
        "default within 1.15x of the best fixed count, quiet": True,
        "default within 1.15x of the best fixed count, busy": True,
        "default busy at most 3x its quiet time": False,
        "default faster than PyTorch CPU (2 threads), quiet and busy": False,
    }


def test_the_speed_page_holds_the_benchmarks_figures():
    from helpers import ROOT

    text = (ROOT / "docs" / "speed.md").read_text(encoding="utf-8")
    begin = text.index("<!-- bench busy: written by `python bench/busy.py --write-docs`")
    region = text[begin : text.index("<!-- end bench busy -->")]
    assert "Measured on " in region and "load average" in region
    assert "\n$ python bench/busy.py" in region
    for goal in ("default within 1.15x of the best fixed count, quiet", "default busy at most 3x its quiet time"):
        assert goal in region

"""bench/train_cnn.py and its numpy reference, at small sizes: the benchmark
runs without torch, says so, and what it compares graphc against really trains."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import bench_modules

pytestmark = pytest.mark.slow  # they train, on the real data


@pytest.fixture(scope="module")
def bench():
    yield from bench_modules("reference_cnn_numpy", "reference_cnn_torch", "train_cnn")


def test_the_numpy_reference_learns(bench):
    data = bench["mnist"]
    images = data["x_train"].reshape(-1, 1, 28, 28)
    steps: list[int] = []
    result = bench["reference_cnn_numpy"].train_cnn_numpy(images, data["t_train"], 60, on_step=steps.append)
    assert steps == list(range(1, 61))
    assert all(p.dtype == np.float32 for p in result["params"].values())
    predicted = bench["reference_cnn_numpy"].predict_cnn_numpy(
        result["params"], data["x_test"][:1000].reshape(-1, 1, 28, 28)
    )
    assert np.mean(predicted == data["t_test"][:1000]) > 0.8  # 10% by chance


def test_torch_is_skipped_with_a_message_when_not_installed(bench, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as where torch is not installed
    data = bench["mnist"]
    assert (
        bench["reference_cnn_torch"].train_cnn_torch(
            data["x_train"][:200].reshape(-1, 1, 28, 28), data["t_train"][:200], 1
        )
        is None
    )
    assert capsys.readouterr().err.startswith("reference_cnn_torch: torch not importable (")
    assert bench["train_cnn"].run_child("pytorch cpu", 1, 0, 10, 1) == {
        "skipped": "torch is not installed (pip install torch)"
    }


def test_the_benchmark_reports_every_contender_it_runs(bench, capsys):
    only = "graphc codegen,graphc interpreter,numpy reference"  # torch not needed
    assert bench["train_cnn"].main(["--iters", "2", "--warmup", "1", "--rounds", "2", "--only", only, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ran = ["graphc codegen", "graphc interpreter", "numpy reference"]
    assert list(report["seconds_per_100"]) == ran
    for name in ran:
        figures = report["seconds_per_100"][name]
        assert 0 < figures["min"] <= figures["median"] <= figures["max"]
        assert report["peak_rss_mb"][name] > 0 and report["step_peak_mb"][name] > 0
    # The two engines run the same arithmetic from the same seed.
    assert report["last_loss"]["graphc codegen"] == report["last_loss"]["graphc interpreter"]
    assert set(report["ratios"]) == {"graphc codegen / numpy reference", "graphc interpreter / numpy reference"}
    assert list(report["goals"]) == ["graphc no slower than the numpy reference"]
    assert report["skipped"] == {}

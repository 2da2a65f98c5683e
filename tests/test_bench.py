"""bench/train_mnist.py and its numpy references, at small sizes: the
benchmark runs, and what it compares graphc against really trains."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import bench_modules

pytestmark = pytest.mark.slow  # they train, on the real data


@pytest.fixture(scope="module")
def bench():
    yield from bench_modules("reference_numpy", "reference_tight", "train_mnist")


def test_the_loader_gives_the_book_data_and_its_bytes(bench):
    data = bench["mnist"]
    assert data["x_train"].dtype == np.float32 and data["x_train"].shape == (60000, 784)
    assert data["x_train_bytes"].dtype == np.uint8
    assert data["x_train"].tobytes() == (data["x_train_bytes"].astype(np.float32) / np.float32(255)).tobytes()
    assert data["t_train_onehot"].dtype == np.float64
    assert np.array_equal(data["t_train_onehot"].argmax(axis=1), data["t_train"])


def test_the_book_reference_trains(bench):
    data = bench["mnist"]
    result = bench["reference_numpy"].train_reference(data["x_train"], data["t_train_onehot"], 600)
    assert bench["reference_numpy"].accuracy(result["net"], data["x_test"], data["t_test"]) > 0.85


def test_the_tight_floor_trains(bench):
    data = bench["mnist"]
    result = bench["reference_tight"].train_tight(data["x_train_bytes"], data["t_train"], 600)
    predicted = bench["reference_tight"].predict_tight(result["params"], data["x_test"])
    assert np.mean(predicted == data["t_test"]) > 0.85
    assert all(p.dtype == np.float32 for p in result["params"].values())


def test_the_benchmark_reports_every_contender(bench, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as where torch is not installed: skipped
    argv = ["--iters", "5", "--repeat", "1", "--whole-iters", "0", "--memory-iters", "5", "--json"]
    assert bench["train_mnist"].main(argv) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)  # the JSON alone: the skip message goes to stderr
    assert err.startswith("reference_torch: torch not importable (")
    assert set(report["seconds_per_1000"]) == {
        "reference",
        "graphc interp f64",
        "graphc interp f32",
        "graphc codegen f64",
        "graphc codegen f32",
        "tight numpy f32",
    }
    assert report["ratio"]["reference"] == 1.0
    assert all(seconds > 0 for seconds in report["seconds_per_1000"].values())
    assert report["faster_f32_engine"] in ("codegen", "interpreter")
    # Whole runs' peak memory, each a process of its own: more than numpy alone, less than a gigabyte.
    assert set(report["peak_rss_mb"]) == {"graphc train f32", "graphc train f64", "book reference"}
    assert all(20 < mb < 1024 for mb in report["peak_rss_mb"].values())
    assert {"whole run f32 under 250 MB", "whole run f64 under 250 MB"} <= set(report["goals"])
    assert "f32 at least 3x faster than the reference" in report["goals"]

"""Every model in models/ runs through `graphc run` with its `expect` lines
holding; the two-layer net's gradients agree with numerical ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.cli import main
from graphc.compiler import front_end_file
from graphc.testing import check_grads

MODELS = Path(__file__).resolve().parent.parent / "models"
MODEL_FILES = sorted(MODELS.glob("*.graph"))


def test_models_are_found():
    names = {p.name for p in MODEL_FILES}
    assert {"apple.graph", "apple_orange.graph", "fanout.graph", "sigmoid.graph", "two_layer_net.graph"} <= names


def _expect_lines(path: Path) -> list[int]:
    return [i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith("expect ")]


def _graph_names(path: Path) -> list[str]:
    return [graph.name for graph in front_end_file(path)]


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_runs_with_every_expectation_holding(path: Path, capsys):
    lines = _expect_lines(path)
    assert lines, f"{path.name} states no expectations"
    checked = []
    for graph in _graph_names(path):  # each graph of the file checks its own expect lines
        status = main(["run", str(path), "--graph", graph, "--json"])
        captured = capsys.readouterr()
        report = json.loads(captured.out)
        checked += [e["line"] for e in report["expects"]]
        failed = [e for e in report["expects"] if not e["ok"]]
        assert not failed, failed
        assert status == 0
        assert captured.err == ""  # and no warnings either
    assert checked == lines


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_text_output_says_every_expectation_holds(path: Path, capsys):
    out = ""
    for graph in _graph_names(path):
        assert main(["run", str(path), "--graph", graph]) == 0
        text = capsys.readouterr().out
        n = text.count("\n  ok ")
        assert f"{n} of {n} expectations hold" in text
        out += text
    for line in _expect_lines(path):
        assert f"ok {path}:{line} " in " ".join(out.split()) + " "


@pytest.mark.slow
def test_two_layer_net_gradients_match_numerical_ones():
    program = graphc.compile_file(MODELS / "two_layer_net.graph")
    rows = check_grads(program, eps=1e-4, rtol=1e-7)
    assert [r.name for r in rows] == ["x", "W1", "b1", "W2", "b2"]
    assert [r.shape for r in rows] == [(3, 784), (784, 50), (50,), (50, 10), (10,)]
    for row in rows:
        assert row.ok and row.max_rel_error <= 1e-7, row


def test_two_layer_net_starts_at_ln_10():
    program = graphc.compile_file(MODELS / "two_layer_net.graph")
    loss = program.forward()["loss"]
    assert loss.shape == () and loss.dtype == np.float64
    assert float(loss) == pytest.approx(np.log(10), abs=1e-2)


def test_fanout_gradients_are_summed():
    """f = x*x + x*y at x = 3, y = 4: x is read three times, df/dx = 2x + y."""
    program = graphc.compile_file(MODELS / "fanout.graph")
    assert float(program.forward()["f"]) == 21
    grads = program.backward()
    assert float(grads["x"]) == 10
    assert float(grads["y"]) == 3
    assert set(grads) == {"x", "y"}


def test_sigmoid_neuron_by_hand():
    program = graphc.compile_file(MODELS / "sigmoid.graph")
    assert float(program.forward()["y"]) == 0.5
    grads = program.backward()
    assert {name: float(g) for name, g in grads.items()} == {"x": 0.125, "w": 0.5, "b": 0.25}

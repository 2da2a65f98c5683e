"""models/multi_layer_net.graph: the book's chapter-6 MultiLayerNet (784 -> 100 x 5 -> 10,
He, ReLU), with Batch Normalization and with Dropout, each a short file of blocks; its
gradients, and Batch Normalization's head start in training (the book's figure 6-18)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.cli import main
from graphc.testing import check_grads
from graphc.train import Trainer, TrainOptions, load_data

GRAPHS = ("multi_layer_net", "multi_layer_net_bn", "multi_layer_net_dropout")


@pytest.fixture
def path(models):
    return models / "multi_layer_net.graph"


# The five hidden layers: uses hidden.1 ... hidden.4, then hidden (the chain's result).
USES = ("hidden.1", "hidden.2", "hidden.3", "hidden.4", "hidden")


def hidden(*items: str) -> list[str]:
    return [f"{use}.{item}" for use in USES for item in items]


def test_each_graph_is_the_books_net(path):
    plain, bn, dropout = (graphc.compile_file(path, graph=g) for g in GRAPHS)
    assert list(plain.param_names) == hidden("W", "b") + ["W", "b"]
    assert list(dropout.param_names) == hidden("W", "b") + ["W", "b"]
    assert list(bn.param_names) == hidden("W", "b", "gamma", "beta") + ["W", "b"]
    assert list(bn.state) == hidden("batchnorm1.running_mean", "batchnorm1.running_var")
    assert [plain.params[name].shape for name in hidden("W")] == [(784, 100)] + [(100, 100)] * 4
    # He: std sqrt(2 / fan_in), as the book's weight_init_std="relu"
    assert abs(plain.params["hidden.2.W"].std() - np.sqrt(2 / 100)) < 0.01
    assert sum(p.size for p in plain.params.values()) == 784 * 100 + 100 + 4 * (100 * 100 + 100) + 100 * 10 + 10


@pytest.mark.parametrize("graph", GRAPHS)
def test_each_graph_meets_its_expectations(path, graph, capsys):
    assert main(["run", str(path), "--graph", graph]) == 0
    assert "expect" not in capsys.readouterr().err


def narrow(text: str) -> str:
    """The same graphs, 12 pixels and hidden layers of 8: a gradient check in moments. A batch
    of 6, not 3: normalized over 3 rows, a layer this narrow is too curved for differences."""
    text = text.replace("784", "12").replace("(100", "(8").replace("[100, 10]", "[8, 10]")
    return text.replace("dim N = 3", "dim N = 6").replace("expect", "# expect")


@pytest.mark.parametrize("graph", GRAPHS)
def test_gradients_match_numerical_ones_with_masks_held(path, tmp_path, graph):
    small = tmp_path / "multi_layer_net.graph"
    small.write_text(narrow(path.read_text()))
    program = graphc.compile_file(small, graph=graph)
    assert program.params["hidden.1.W"].shape == (12, 8)
    rows = check_grads(program)
    assert [r.name for r in rows][1:] == list(program.param_names)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    # Only the bias right before each batchnorm has a gradient that is zero (the
    # normalization takes its mean away); every other one is measured.
    zero = [r.name for r in rows if r.zero]
    assert zero == (hidden("b") if graph == "multi_layer_net_bn" else [])


@pytest.mark.slow
@pytest.mark.parametrize("graph, tensors", [("multi_layer_net_bn", 23), ("multi_layer_net_dropout", 13)])
def test_the_full_size_nets_pass_gradcheck(path, graph, tensors, capsys):
    assert main(["gradcheck", str(path), "--graph", graph]) == 0
    assert capsys.readouterr().out.endswith(f"ok: {tensors} tensors within relative error 1e-06\n")


@pytest.mark.slow
def test_batchnorm_learns_faster_in_the_first_iterations(path):
    """The book's figure 6-18, measured: the same seed, data and 300 SGD steps (lr 0.01, half
    an epoch); the net with Batch Normalization is ahead in mean training loss over the run and
    in test accuracy at its end (by 1.2 points here: 0.864 to 0.852)."""
    results = {}
    for graph in ("multi_layer_net", "multi_layer_net_bn"):
        program = graphc.compile_file(path, graph=graph, dtype="float32", seed=0)
        data = load_data("mnist", program)
        results[graph] = Trainer(program, data, TrainOptions(iters=300, lr=0.01, seed=0)).run()
    plain, bn = results["multi_layer_net"], results["multi_layer_net_bn"]
    assert bn.losses.mean() < plain.losses.mean() - 0.05
    assert bn.test_acc is not None and plain.test_acc is not None
    assert bn.test_acc > plain.test_acc + 0.005


def test_the_standard_librarys_full_chapter_6_unit(tmp_path):
    """bn_relu_dropout: Affine -> BatchNorm -> ReLU -> Dropout, its gradients with the masks held
    and its state named by the use."""
    path = tmp_path / "unit.graph"
    path.write_text(
        'import "std/layers.graph"\n'
        "graph unit {\n"
        "    dim N = 6\n"
        "    input x: f64[N, 5] = uniform(0, 1)\n"
        "    input t: f64[N, 3] = onehot\n"
        "    x -> bn_relu_dropout(4, 0.25) as h -> linear(3) -> y\n"
        "    loss = softmax_loss(y, t)\n"
        "    output loss\n"
        "}\n"
    )
    program = graphc.compile_file(path)
    assert list(program.param_names) == ["h.W", "h.b", "h.gamma", "h.beta", "y.W", "y.b"]
    assert list(program.state) == ["h.batchnorm1.running_mean", "h.batchnorm1.running_var"]
    rows = check_grads(program)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    assert [r.name for r in rows if r.zero] == ["h.b"]

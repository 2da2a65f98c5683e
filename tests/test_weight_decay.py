"""`graphc train --weight-decay LAMBDA`: the book's L2 penalty ½λΣ‖W‖² over the
weights (each affine's W, never a bias), in the loss reported and as λW in
each weight's gradient; kept in checkpoints and on --resume; bad values refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import error_of, graphc_cli, mnist_slice, rewrite_meta, two_layer_net

import graphc
from graphc.checkpoint import read_checkpoint, read_meta
from graphc.train import Trainer, TrainOptions, decayed_weights

LAMBDA = 0.1


def net(dtype: str = "float64", seed: int = 0) -> graphc.Program:
    return two_layer_net(dtype, seed)


@pytest.fixture(scope="module")
def data64():
    """The first 600 training images (and 100 test ones), for the float64 net."""
    return mnist_slice(net("float64"), 600, 100)


@pytest.fixture(scope="module")
def data32():
    return mnist_slice(net("float32"), 600, 100)


def trained(data, options: TrainOptions, dtype: str = "float32", seed: int = 0, checkpoint=None) -> graphc.Program:
    """The two-layer net after a run of `options` on `data`."""
    program = net(dtype, seed)
    Trainer(program, data, options).run(checkpoint=checkpoint)
    return program


def params_of(program: graphc.Program) -> dict[str, bytes]:
    return {name: program.params[name].tobytes() for name in program.param_names}


def first_minibatch(data) -> dict[str, np.ndarray]:
    """The trainer's first minibatch of 100 (its generator seeded with 0)."""
    index = np.random.default_rng(0).integers(0, data.train_size, 100)
    return {"x": data.x_train[index], "t": data.t_train[index]}


def penalty(params, lam: float = LAMBDA) -> float:
    return 0.5 * lam * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2))


def test_the_weights_are_the_affine_ws():
    assert decayed_weights(net()) == ("W1", "W2")


@pytest.mark.parametrize("engine", ["interpreter", "codegen"])
def test_one_sgd_step_with_weight_decay_is_the_books(data64, engine):
    """W -= lr * (dW + λW) for the weights, b -= lr * db for the biases; the loss
    reported is the data loss plus ½λΣW²."""
    program, data = net(), data64
    before = {n: program.params[n].copy() for n in program.param_names}
    options = TrainOptions(iters=1, lr=0.5, evaluate=False, engine=engine, weight_decay=LAMBDA)
    result = Trainer(program, data, options).run()
    loss, grads = net().loss_and_grads(first_minibatch(data))
    for w in ("W1", "W2"):
        expected = before[w] - 0.5 * (grads[w] + LAMBDA * before[w])
        np.testing.assert_allclose(program.params[w], expected, rtol=1e-12, atol=1e-17)
    for b in ("b1", "b2"):
        np.testing.assert_allclose(program.params[b], before[b] - 0.5 * grads[b], rtol=1e-12, atol=1e-17)
    assert result.losses[0] == pytest.approx(float(loss) + penalty(before), rel=1e-13)
    assert penalty(before) > 0.1  # large enough to tell apart


def test_an_adam_step_with_weight_decay_takes_the_decayed_gradient(data64):
    """Optimizers that take the gradient itself get dW + λW (not scaled by lr)."""
    program, data = net(), data64
    before = {n: program.params[n].copy() for n in program.param_names}
    options = TrainOptions(iters=1, optimizer="adam", lr=0.01, evaluate=False, weight_decay=LAMBDA)
    Trainer(program, data, options).run()
    _, grads = net().loss_and_grads(first_minibatch(data))
    for name in program.param_names:
        g = grads[name] + (LAMBDA * before[name] if name.startswith("W") else 0)
        m, v = 0.1 * g, 0.001 * g * g  # Adam's first step, from zero state
        step = 0.01 * math.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(program.params[name], before[name] - step, rtol=1e-10, atol=1e-15)


def test_engines_train_bit_identical_weights_with_weight_decay(data32):
    weights = {
        engine: params_of(
            trained(data32, TrainOptions(iters=40, evaluate=False, engine=engine, weight_decay=0.01), seed=2)
        )
        for engine in ("interpreter", "codegen")
    }
    assert weights["interpreter"] == weights["codegen"]


def test_no_weight_decay_trains_as_before(data32):
    runs = []
    for options in (TrainOptions(iters=30, evaluate=False), TrainOptions(iters=30, evaluate=False, weight_decay=0.0)):
        program = net("float32", seed=1)
        result = Trainer(program, data32, options).run()
        runs.append((params_of(program), result.losses.tobytes()))
    assert runs[0] == runs[1]


def test_weight_decay_shrinks_the_weights(data32):
    norms = {}
    for lam in (0.0, 0.5):
        program = trained(data32, TrainOptions(iters=200, batch=10, evaluate=False, weight_decay=lam), seed=1)
        norms[lam] = float(np.sum(program.params["W1"].astype(np.float64) ** 2))
    assert norms[0.5] < 0.5 * norms[0.0]


# --- checkpoints and resuming ------------------------------------------------------------


def test_a_checkpoint_keeps_lambda_and_a_resume_continues_bit_for_bit(data32, tmp_path):
    straight = trained(data32, TrainOptions(iters=20, evaluate=False, weight_decay=0.01))
    path = tmp_path / "w.npz"
    trained(data32, TrainOptions(iters=10, evaluate=False, weight_decay=0.01), checkpoint=path)
    assert read_meta(path).weight_decay == 0.01
    resumed = net("float32")
    options = TrainOptions(iters=20, evaluate=False, weight_decay=read_meta(path).weight_decay)
    Trainer(resumed, data32, options, resume=read_checkpoint(path, resumed)).run()
    for name in straight.param_names:
        assert resumed.params[name].tobytes() == straight.params[name].tobytes(), name


@pytest.fixture
def checkpoint(data32, tmp_path):
    """A checkpoint of two iterations without weight decay."""
    path = tmp_path / "w.npz"
    trained(data32, TrainOptions(iters=2, evaluate=False), checkpoint=path)
    return path


def test_a_checkpoint_without_the_field_has_none(checkpoint):
    with np.load(checkpoint, allow_pickle=False) as npz:
        assert json.loads(str(npz["meta"]))["weight_decay"] == 0.0
    rewrite_meta(checkpoint, lambda meta: meta.pop("weight_decay"))  # as graphc wrote them before --weight-decay
    assert read_meta(checkpoint).weight_decay == 0.0


def test_a_negative_lambda_in_a_checkpoint_is_corrupt(checkpoint):
    path = rewrite_meta(checkpoint, lambda meta: meta.update(weight_decay=-1))
    assert error_of(read_meta, path) == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `weight_decay` must be a number at least 0, got -1\n"
        "hint: the file is damaged; use another checkpoint or train again"
    )


def test_cli_resume_takes_the_checkpoints_lambda_unless_told_otherwise(models, capsys, tmp_path):
    graph, path = models / "two_layer_net.graph", tmp_path / "w.npz"
    status, out, _ = graphc_cli(
        capsys, "train", graph, "--iters", 3, "--weight-decay", "1e-3", "--save", path, "--dtype", "float32"
    )
    assert status == 0
    assert out.splitlines()[0].endswith("batch 100, seed 0, weight decay 0.001")
    status, out, _ = graphc_cli(capsys, "train", graph, "--iters", 6, "--resume", path, "--save", path, "--json")
    assert status == 0 and json.loads(out)["weight_decay"] == 0.001
    status, out, _ = graphc_cli(capsys, "train", graph, "--iters", 9, "--resume", path, "--weight-decay", 0)
    assert status == 0
    assert out.splitlines()[0].endswith("batch 100, seed 0")  # as lr: the flag wins


@pytest.mark.parametrize(
    "value, message",
    [
        ("-1", "--weight-decay must be a number at least 0, got -1"),
        ("nan", "--weight-decay must be a number at least 0, got nan"),
        ("inf", "--weight-decay must be a number at least 0, got inf"),
        ("1e400", "--weight-decay must be a number at least 0, got 1e400"),
        ("lots", "--weight-decay takes a number, got `lots`"),
    ],
)
def test_cli_refuses_a_bad_lambda(models, capsys, value, message):
    status, out, err = graphc_cli(capsys, "train", models / "two_layer_net.graph", f"--weight-decay={value}")
    assert (status, out) == (2, "")
    assert err == f"graphc: error[E502]: {message}\nhint: e.g. `--weight-decay 1e-4`, or 0 for none\n"


@pytest.mark.parametrize("lam", [-0.5, float("nan"), float("inf")])
def test_train_options_refuse_a_bad_lambda(lam):
    assert (
        error_of(TrainOptions, weight_decay=lam)
        == f"graphc: error[E502]: weight decay must be a number at least 0, got {lam}"
    )


def test_a_graph_without_weights_cannot_be_decayed(capsys, tmp_path):
    """Scores made with no affine (the new reductions make one): nothing to decay."""
    path = tmp_path / "m.graph"
    path.write_text(
        "graph no_weights {\n"
        "    input x: f64[N, 784] from images\n"
        "    input t: f64[N, 10] from labels\n"
        "    param s: [10] = normal(0.01)\n"
        "    x -> mean(axis=1, keepdims=true) -> m\n"
        "    y = mul(m, s)\n"
        "    loss = softmax_loss(y, t)\n"
        "    output loss\n"
        "}\n"
    )
    status, out, err = graphc_cli(capsys, "train", path, "--iters", 2, "--weight-decay", "0.1")
    assert (status, out) == (2, "")
    assert err == (
        f"{path}:1:7: error[E905]: weight decay needs weights to decay: graph `no_weights` reads no param as the W of "
        "an `affine`\n"
        " 1 | graph no_weights {\n"
        "   |       ^^^^^^^^^^\n"
        "hint: train without --weight-decay\n"
    )
    assert graphc_cli(capsys, "train", path, "--iters", 2, "--dtype", "float32")[0] == 0  # without it, it trains

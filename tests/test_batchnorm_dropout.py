"""dropout and batchnorm: the book's Dropout and BatchNormalization (chapter 6),
against a direct numpy transcription of the book's classes, bit for bit; their
gradients against central differences in both modes, with dropout's mask held;
codegen against the interpreter; and the mistakes a person can make with them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.cli import main
from graphc.codegen import load_module
from graphc.errors import GraphcError
from graphc.ops import REGISTRY
from graphc.testing import check_grads

# --- the book's classes, transcribed (common/layers.py), with a generator for the masks ---


class BookDropout:
    def __init__(self, dropout_ratio: float, rng: np.random.Generator):
        self.dropout_ratio = dropout_ratio
        self.rng = rng
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            # The book draws np.random.rand(*x.shape); graphc draws from the run's generator.
            self.mask = self.rng.random(x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask


class BookBatchNormalization:
    def __init__(self, gamma, beta, momentum=0.9, eps=1e-7):
        self.gamma, self.beta, self.momentum, self.eps = gamma, beta, momentum, eps
        self.running_mean = np.zeros(gamma.shape)
        self.running_var = np.zeros(gamma.shape)

    def forward(self, x, train_flg=True):
        if train_flg:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc**2, axis=0)
            std = np.sqrt(var + self.eps)
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = x.shape[0], xc, xn, std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xc = x - self.running_mean
            xn = xc / (np.sqrt(self.running_var + self.eps))
        return self.gamma * xn + self.beta

    def backward(self, dout):
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        return dx, dgamma, dbeta


def source(block: str) -> str:
    return textwrap.dedent(block).lstrip("\n")


BN = source("""
    graph bn {
        input x: f64[N, 3]
        param gamma: [3] = uniform(0.5, 1.5)
        param beta: [3] = uniform(-1, 1)
        y = batchnorm(x, gamma, beta, momentum=0.8, eps=1e-5)
        output y
    }
""")

DROP = source("""
    graph drop {
        input x: f64[N, 5]
        y = dropout(x, ratio=0.3)
        output y
    }
""")

# Both ops in a small network: what gradcheck and codegen are run on.
NET = source("""
    graph net {
        dim N = 6
        input x: f64[N, 4] = uniform(-1, 1)
        input t: f64[N, 3] = onehot
        param W1: [4, 5] = he
        param gamma: [5] = uniform(0.5, 1.5)
        param beta: [5] = uniform(-0.5, 0.5)
        param W2: [5, 3] = he
        param b2: [3] = zeros
        x -> mul(2.0) -> affine(W1, beta) as h -> batchnorm(gamma, beta) as bn1 -> relu
          -> dropout(ratio=0.4) as drop -> affine(W2, b2) -> y
        loss = softmax_loss(y, t)
        output loss
    }
""")


def batches(count: int, rows: int = 7, features: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((rows, features)) * (1 + i) + i for i in range(count)]


def bn(**options) -> graphc.Program:
    return graphc.compile_source(BN, "bn.graph", **options)


def drop(**options) -> graphc.Program:
    return graphc.compile_source(DROP, "d.graph", **options)


def net(**options) -> graphc.Program:
    return graphc.compile_source(NET, "net.graph", **options)


# --- batchnorm is the book's, bit for bit ------------------------------------------


def test_batchnorm_training_forward_backward_and_running_statistics_are_the_books():
    program = bn()
    gamma, beta = program.params["gamma"], program.params["beta"]
    book = BookBatchNormalization(gamma.copy(), beta.copy(), momentum=0.8, eps=1e-5)
    rng = np.random.default_rng(1)
    for x in batches(3):
        out = program.forward(x=x)["y"]
        np.testing.assert_array_equal(out, book.forward(x), strict=True)
        dout = rng.standard_normal(x.shape)
        grads = program.backward(dout)
        dx, dgamma, dbeta = book.backward(dout)
        np.testing.assert_array_equal(grads["x"], dx, strict=True)
        np.testing.assert_array_equal(grads["gamma"], dgamma, strict=True)
        np.testing.assert_array_equal(grads["beta"], dbeta, strict=True)
        np.testing.assert_array_equal(program.state["y.running_mean"], book.running_mean, strict=True)
        np.testing.assert_array_equal(program.state["y.running_var"], book.running_var, strict=True)
    assert not np.array_equal(book.running_var, np.zeros(3))


def test_batchnorm_in_eval_mode_uses_the_running_statistics_and_leaves_them():
    train = bn()
    book = BookBatchNormalization(train.params["gamma"].copy(), train.params["beta"].copy(), momentum=0.8, eps=1e-5)
    for x in batches(2):
        train.forward(x=x)
        book.forward(x)
    predict = bn(mode="eval")
    for name in train.state:
        predict.state[name][...] = train.state[name]
    before = {k: v.copy() for k, v in predict.state.items()}
    x = batches(1, seed=5)[0]
    np.testing.assert_array_equal(predict.forward(x=x)["y"], book.forward(x, train_flg=False), strict=True)
    np.testing.assert_array_equal(predict.evaluate(("y",), {"x": x})["y"], book.forward(x, train_flg=False))
    for name, value in before.items():
        np.testing.assert_array_equal(predict.state[name], value)


def test_batchnorm_state_starts_at_zero_and_is_not_a_param():
    program = bn(dtype="float32")
    assert list(program.state) == ["y.running_mean", "y.running_var"]
    for value in program.state.values():
        assert value.dtype == np.float32 and value.shape == (3,) and not value.any()
    assert set(program.param_names) == {"gamma", "beta"}
    program.forward(x=batches(1)[0].astype(np.float32))
    assert set(program.backward()) == {"x", "gamma", "beta"}  # no gradient of a running statistic


def test_batchnorm_normalizes_each_feature_to_zero_mean_and_unit_variance():
    program = graphc.compile_source(BN.replace("uniform(0.5, 1.5)", "ones").replace("uniform(-1, 1)", "zeros"), "b")
    out = program.forward(x=batches(1, rows=50)[0] * 1000 + 7)["y"]
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1, rtol=1e-8)


def test_batchnorm_of_a_constant_feature_is_finite():
    """Variance 0: eps inside the square root keeps it 0 / sqrt(eps), not 0 / 0."""
    program = bn()
    x = np.ones((4, 3))
    program.forward(x=x)
    grads = program.backward()
    assert np.isfinite(program.values["y"]).all()
    assert all(np.isfinite(g).all() for g in grads.values())


# --- dropout is the book's -------------------------------------------------------


def test_dropout_training_keeps_what_the_generator_says_and_eval_scales():
    program = drop(seed=4)
    book = BookDropout(0.3, np.random.default_rng(np.random.SeedSequence(4).spawn(3)[2]))
    rng = np.random.default_rng(0)
    for _ in range(3):  # successive runs draw successive masks
        x = rng.standard_normal((6, 5))
        np.testing.assert_array_equal(program.forward(x=x)["y"], book.forward(x), strict=True)
        dout = rng.standard_normal((6, 5))
        np.testing.assert_array_equal(program.backward(dout)["x"], book.backward(dout), strict=True)
    assert 0 < book.mask.sum() < book.mask.size
    predict = drop(mode="eval")
    x = rng.standard_normal((6, 5))
    np.testing.assert_array_equal(predict.forward(x=x)["y"], x * 0.7, strict=True)
    np.testing.assert_array_equal(predict.backward(np.ones((6, 5)))["x"], np.full((6, 5), 0.7))


def test_dropout_keeps_the_dtype():
    program = drop(dtype="float32")
    x = np.ones((2, 5), np.float32)
    assert program.forward(x=x)["y"].dtype == np.float32
    assert drop(dtype="float32", mode="eval").forward(x=x)["y"].dtype == np.float32


def test_dropout_ratio_zero_keeps_everything():
    program = graphc.compile_source(DROP.replace("0.3", "0"), "d.graph")
    x = np.random.default_rng(0).standard_normal((20, 5))
    np.testing.assert_array_equal(program.forward(x=x)["y"], x)


# --- gradients against central differences, dropout's mask held --------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradcheck_passes_in_both_modes(mode):
    program = net(seed=2, mode=mode)
    if mode == "eval":  # running statistics of some batches, so eval mode normalizes by something
        trained = net(seed=2)
        for seed in range(3):
            trained.forward(**{**trained.default_feeds(), "x": batches(1, 6, 4, seed)[0]})
        for name in program.state:
            program.state[name][...] = trained.state[name]
    rows = check_grads(program)
    assert [r.name for r in rows] == ["x", "W1", "gamma", "beta", "W2", "b2"]
    assert all(r.ok for r in rows), rows
    assert max(r.max_rel_error for r in rows) < 1e-7


def test_gradcheck_holds_the_mask_backprop_used():
    """The differences must see the mask backprop saw: drawn anew, they would
    differentiate another function and disagree by far more than the tolerance."""
    program = net(seed=2)
    state = {k: v.copy() for k, v in program.state.items()}
    rows = check_grads(program)
    assert all(r.ok for r in rows)
    # The differences leave the running statistics as one forward left them.
    once = net(seed=2)
    once.forward()
    for name in state:
        np.testing.assert_array_equal(program.state[name], once.state[name])
    # A generator that moves on between forwards gives a different loss each time.
    first = program.forward()["loss"]
    assert program.forward()["loss"] != first


# --- codegen == interpreter, both modes ----------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_generated_module_computes_what_the_interpreter_does(mode):
    compiled = net().compiled
    program = graphc.Program(compiled, seed=7, mode=mode)
    for name in program.state:  # running statistics that are not zeros
        program.state[name][...] = np.arange(5) * 0.5 + (0.1 if name.endswith("mean") else 1.0)
    state = {k: v.copy() for k, v in program.state.items()}
    model = load_module(compiled, wrt=program.param_names + program.input_names, mode=mode)
    rng = np.random.default_rng(np.random.SeedSequence(7).spawn(3)[2])  # Program(seed=7).rng, fresh
    feeds = program.default_feeds()
    for _ in range(2):  # the second run draws new masks and reads updated statistics
        expected = program.forward(**feeds)
        expected_grads = program.backward()
        extra = {"state": state, "rng": rng} if mode == "train" else {"state": state}
        outputs, saved = model.module.forward(program.params, **feeds, **extra)
        grads = model.module.backward(program.params, saved)
        np.testing.assert_array_equal(outputs["loss"], expected["loss"], strict=True)
        for name in expected_grads:
            if name in grads:
                np.testing.assert_array_equal(grads[name], expected_grads[name], strict=True)
        for name in state:
            np.testing.assert_array_equal(state[name], program.state[name], strict=True)
    assert ("rng=None" in model.source) == (mode == "train")  # eval mode draws nothing
    assert f"forward and backward run in {mode} mode; scores() and predict() predict, in eval mode." in model.source
    # Predictions are made in eval mode by both.
    scores = model.module.scores(program.params, x=feeds["x"], state=state)
    np.testing.assert_array_equal(scores, program.evaluate(("y",), {"x": feeds["x"]})["y"], strict=True)


def test_generated_module_by_default_draws_as_a_program_with_seed_0():
    compiled = net().compiled
    program = graphc.Program(compiled)
    module = load_module(compiled).module
    feeds = program.default_feeds()
    outputs, _ = module.forward(program.params, **feeds)
    assert outputs["loss"] == program.forward(**feeds)["loss"]
    assert set(module.init_state()) == {"bn1.running_mean", "bn1.running_var"}


# --- the registry knows them ---------------------------------------------------------


def test_dropout_and_batchnorm_say_what_is_random_and_what_is_state():
    dropout, batchnorm = REGISTRY["dropout"], REGISTRY["batchnorm"]
    assert dropout.random and not dropout.state
    assert not batchnorm.random and set(batchnorm.state) == {"running_mean", "running_var"}
    assert batchnorm.saves_in("train") == ("gamma", "xc", "std", "xn")
    assert batchnorm.saves_in("eval") == ("gamma", "std", "xn")
    assert dropout.saves_in("eval") == ()


def test_plans_show_each_modes_rules():
    compiled = net().compiled
    train = graphc.Program(compiled).plan.text()
    predict = graphc.Program(compiled, mode="eval").plan.text()
    assert "d_relu1 = d_drop * drop.mask" in train
    assert "d_h = batchnorm_dx(d_bn1, gamma, bn1.xc, bn1.std)" in train
    assert "d_relu1 = d_drop * (1.0 - 0.4)" in predict
    assert "d_h = d_bn1 * gamma / bn1.std" in predict


# --- mistakes ------------------------------------------------------------------------


def error(src: str) -> str:
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(source(src), "m.graph")
    return info.value.render()


def test_a_dropout_ratio_of_one_or_more_is_an_error_at_the_attribute():
    assert error("""
        graph g {
            input x: [2, 3]
            y = dropout(x, ratio=1.5)
            output y
        }
    """) == (
        "m.graph:3:26: error[E107]: `ratio` of `dropout` must be in [0, 1), got `1.5`\n"
        " 3 |     y = dropout(x, ratio=1.5)\n"
        "   |                          ^^^\n"
        "hint: the book drops half: `ratio=0.5`; `ratio=0` keeps everything"
    )


def test_a_dropout_ratio_that_is_not_a_number_is_an_error():
    assert error("""
        graph g {
            input x: [2, 3]
            x -> dropout(ratio=half) -> y
            output y
        }
    """) == (
        "m.graph:3:24: error[E107]: `ratio` of `dropout` must be a number, got `half`\n"
        " 3 |     x -> dropout(ratio=half) -> y\n"
        "   |                        ^^^^\n"
        "hint: the book drops half: `ratio=0.5`; `ratio=0` keeps everything"
    )


def batchnorm_error(call: str = "batchnorm(x, g, b)", x: str = "[N, 3]", gamma: str = "[3]") -> str:
    """The error in a graph that normalizes input `x` by `call`, with params g (gamma) and b (beta)."""
    return error(f"""
        graph g {{
            input x: {x}
            param g: {gamma} = ones
            param b: [3] = zeros
            y = {call}
            output y
        }}
    """)


def test_batchnorm_of_a_single_row_is_an_error_at_the_operand():
    assert batchnorm_error(x="[3]") == (
        "m.graph:5:19: error[E202]: batchnorm: `x` must be a batch of rows [N, features], got [3]\n"
        " 5 |     y = batchnorm(x, g, b)\n"
        "   |                   ^\n"
        "hint: input `x` is declared f64[3] at line 2"
    )


def test_batchnorm_with_gamma_of_the_wrong_size_is_an_error():
    assert batchnorm_error(gamma="[4]") == (
        "m.graph:5:22: error[E201]: shape mismatch in `batchnorm`: `g` [4] must be one number per feature of `x` "
        "[N, 3], [3]\n"
        " 5 |     y = batchnorm(x, g, b)\n"
        "   |                      ^\n"
        "hint: param `g` is declared f64[4] at line 3"
    )


def test_a_momentum_of_one_is_an_error():
    assert batchnorm_error("batchnorm(x, g, b, momentum=1)") == (
        "m.graph:5:37: error[E107]: `momentum` of `batchnorm` must be in [0, 1), got `1`\n"
        " 5 |     y = batchnorm(x, g, b, momentum=1)\n"
        "   |                                     ^\n"
        "hint: the book's is `momentum=0.9`"
    )


def test_an_unknown_mode_is_an_error():
    with pytest.raises(GraphcError) as info:
        drop(mode="test")
    assert info.value.render() == "graphc: error[E503]: unknown mode `test`\nhint: modes: train, eval"


def test_an_eps_of_zero_is_an_error():
    assert batchnorm_error("batchnorm(x, g, b, eps=0)") == (
        "m.graph:5:32: error[E107]: `eps` of `batchnorm` must be in (0, 1), got `0`\n"
        " 5 |     y = batchnorm(x, g, b, eps=0)\n"
        "   |                                ^\n"
        "hint: a small positive number keeps a feature of zero variance finite, e.g. `eps=1e-7`"
    )


# --- gradient checks of a gradient that is zero ---------------------------------------


BIAS_BEFORE_BN = Path(__file__).parent / "data" / "bias_before_batchnorm.graph"


def test_a_bias_before_batchnorm_has_a_zero_gradient_and_passes(capsys):
    """The normalization takes the batch's mean away, so the bias's gradient is zero; both
    sides give rounding noise, whose relative error means nothing: ok, marked zero."""
    rows = {r.name: r for r in check_grads(graphc.compile_file(BIAS_BEFORE_BN))}
    assert rows["b"].ok and rows["b"].zero and rows["b"].max_abs_error < 1e-12
    assert not any(r.zero for name, r in rows.items() if name != "b")
    assert main(["gradcheck", str(BIAS_BEFORE_BN)]) == 0
    assert "b         [5]      " in capsys.readouterr().out


def test_a_wrong_gradient_is_not_taken_for_zero(monkeypatch):
    """The noise floor is far below a real gradient: a backward that drops a term still fails."""
    program = graphc.compile_file(BIAS_BEFORE_BN)
    backward = program.backward

    def halved_w(*args, **kwargs):
        grads = backward(*args, **kwargs)
        grads["W2"] = grads["W2"] * 0.5
        return grads

    monkeypatch.setattr(program, "backward", halved_w)
    rows = {r.name: r for r in check_grads(program)}
    assert not rows["W2"].ok and not rows["W2"].zero

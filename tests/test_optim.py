"""Optimizers: one step against numbers worked out by hand, in place, dtype kept."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.errors import GraphcError
from graphc.optim import OPTIMIZERS, SGD, AdaGrad, Adam, Momentum, make_optimizer


def params(dtype=np.float64) -> dict[str, np.ndarray]:
    return {"W": np.array([1.0, -2.0], dtype), "b": np.array([0.5], dtype)}


GRADS = {"W": np.array([0.5, 0.25]), "b": np.array([-1.0])}


def test_sgd_step():
    p = params()
    SGD(p, lr=0.1).step(p, GRADS)
    # W - 0.1 * dW
    assert p["W"].tolist() == pytest.approx([0.95, -2.025], abs=1e-15)
    assert p["b"].tolist() == pytest.approx([0.6], abs=1e-15)


def test_sgd_default_lr_is_the_books():
    assert SGD(params()).lr == 0.1


def test_momentum_two_steps():
    p = params()
    opt = Momentum(p, lr=0.1)
    opt.step(p, GRADS)
    # v = -0.1 * dW = [-0.05, -0.025]; W + v
    assert p["W"].tolist() == pytest.approx([0.95, -2.025], abs=1e-15)
    opt.step(p, GRADS)
    # v = 0.9 * [-0.05, -0.025] - [0.05, 0.025] = [-0.095, -0.0475]
    assert opt.state["v"]["W"].tolist() == pytest.approx([-0.095, -0.0475], abs=1e-15)
    assert p["W"].tolist() == pytest.approx([0.855, -2.0725], abs=1e-15)


@pytest.mark.parametrize("cls", [SGD, Momentum])
def test_gradients_scaled_by_lr_move_params_the_same(cls):
    plain, scaled = params(), params()
    plain_opt, scaled_opt = cls(plain, lr=0.25), cls(scaled, lr=0.25)
    assert scaled_opt.takes_lr_scaled
    for _ in range(2):  # momentum's second step reads the velocity the first left
        plain_opt.step(plain, GRADS)
        scaled_opt.step(scaled, {n: 0.25 * g for n, g in GRADS.items()}, lr_scaled=True)  # exact: a power of 2
    for name in plain:
        assert scaled[name].tolist() == plain[name].tolist()
    assert scaled_opt.steps == 2


@pytest.mark.parametrize("cls", [AdaGrad, Adam])
def test_adaptive_optimizers_refuse_scaled_gradients(cls):
    p = params()
    opt = cls(p)
    assert not opt.takes_lr_scaled
    with pytest.raises(ValueError, match=f"{cls.name} needs the gradients themselves, not scaled by lr"):
        opt.step(p, GRADS, lr_scaled=True)
    assert all(np.array_equal(p[n], params()[n]) for n in p)
    assert opt.steps == 0


def test_adagrad_step():
    p = params()
    opt = AdaGrad(p, lr=0.1)
    opt.step(p, GRADS)
    # h = dW^2 = [0.25, 0.0625]; W - 0.1 * dW / (sqrt(h) + 1e-7)
    assert opt.state["h"]["W"].tolist() == [0.25, 0.0625]
    assert p["W"].tolist() == pytest.approx([1 - 0.05 / 0.5000001, -2 - 0.025 / 0.2500001], abs=1e-15)
    assert p["W"].tolist() == pytest.approx([0.90000002, -2.09999996], abs=1e-8)


def test_adam_first_step_moves_each_weight_by_lr():
    p = params()
    opt = Adam(p, lr=0.001)
    opt.step(p, GRADS)
    # m = 0.1 dW, v = 0.001 dW^2; the bias correction makes m / sqrt(v) = sign(dW) * sqrt(0.001) / 0.1,
    # and lr_t = 0.001 * sqrt(0.001) / 0.1: the step is lr, less a hair for eps.
    assert opt.state["m"]["W"].tolist() == pytest.approx([0.05, 0.025], abs=1e-15)
    assert opt.state["v"]["W"].tolist() == pytest.approx([0.00025, 0.0000625], abs=1e-15)
    assert p["W"].tolist() == pytest.approx([0.999, -2.001], abs=2e-8)  # eps takes ~1e-8 off
    assert p["b"].tolist() == pytest.approx([0.501], abs=1e-8)


def test_adam_second_step():
    p = params()
    opt = Adam(p, lr=0.001)
    opt.step(p, GRADS)
    opt.step(p, {"W": np.array([-0.5, 0.25]), "b": np.array([-1.0])})
    # W[0]: m = 0.9 * 0.05 + 0.1 * -0.5 = -0.005; v = 0.999 * 0.00025 + 0.001 * 0.25 = 0.00049975
    # lr_t = 0.001 * sqrt(1 - 0.999^2) / (1 - 0.9^2) = 0.001 * 0.0447101778 / 0.19
    lr_t = 0.001 * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    expected = 0.999 + lr_t * 0.005 / (np.sqrt(0.00049975) + 1e-7)
    assert opt.state["m"]["W"][0] == pytest.approx(-0.005, abs=1e-15)
    assert p["W"][0] == pytest.approx(expected, abs=1e-8)
    assert p["W"][0] == pytest.approx(0.9990526, abs=1e-7)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_updates_in_place_and_keep_float32(name):
    p = params(np.float32)
    arrays = dict(p)
    opt = make_optimizer(name, p)
    grads = {k: v.astype(np.float32) for k, v in GRADS.items()}
    for _ in range(3):
        opt.step(p, grads)
    for key in p:
        assert p[key] is arrays[key]
        assert p[key].dtype == np.float32
    for slot in opt.state.values():
        assert all(a.dtype == np.float32 for a in slot.values())
    assert opt.steps == 3


def test_a_param_without_a_gradient_stays():
    p = params()
    SGD(p).step(p, {"W": GRADS["W"]})
    assert p["b"].tolist() == [0.5]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_round_trip_continues_identically(name):
    a = params()
    first = make_optimizer(name, a, lr=0.05)
    for i in range(3):
        first.step(a, {k: v * (i + 1) for k, v in GRADS.items()})
    b = {k: v.copy() for k, v in a.items()}
    second = make_optimizer(name, b, lr=0.05)
    second.load_state_dict({k: v.copy() for k, v in first.state_dict().items()})
    first.step(a, GRADS)
    second.step(b, GRADS)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes()


def test_state_dict_names():
    opt = Adam(params())
    assert sorted(opt.state_dict()) == ["m/W", "m/b", "steps", "v/W", "v/b"]
    assert sorted(SGD(params()).state_dict()) == ["steps"]


def test_load_state_errors():
    opt = Momentum(params())
    with pytest.raises(GraphcError) as err:
        opt.load_state_dict({"steps": np.array(1)})
    assert err.value.message == "momentum state has no `v/W`"
    with pytest.raises(GraphcError) as err:
        opt.load_state_dict({"steps": np.array(1), "v/W": np.zeros(3), "v/b": np.zeros(1)})
    assert err.value.message == "momentum state `v/W` has shape [3], param `W` has [2]"
    with pytest.raises(GraphcError) as err:
        opt.load_state_dict({"steps": np.array(1), "v/W": np.zeros(2), "v/b": np.zeros(1), "h/W": np.zeros(2)})
    assert err.value.message == "momentum state has `h/W`, which this model has no use for"


def test_unknown_optimizer():
    with pytest.raises(GraphcError) as err:
        make_optimizer("adma", params())
    assert err.value.render() == "graphc: error[E503]: unknown optimizer `adma`\nhint: did you mean `adam`?"

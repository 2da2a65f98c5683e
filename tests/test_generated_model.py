"""The trainer's handle on a generated module (codegen.GeneratedModel): the
state and the generator it is given reach the module's forward."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphc.codegen import load_module
from graphc.compiler import front_end_file

MODELS = Path(__file__).resolve().parent.parent / "models"


def _model(graph: str):
    compiled = next(g for g in front_end_file(MODELS / "multi_layer_net.graph") if g.name == graph)
    model = load_module(compiled)
    params = model.module.init_params(seed=0)
    rng = np.random.default_rng(5)
    feeds = {"x": rng.random((4, 784)), "t": np.eye(10)[[1, 2, 3, 4]]}
    return model, params, feeds


def test_dropout_draws_from_the_generator_it_is_given():
    model, params, feeds = _model("multi_layer_net_dropout")
    assert model.takes_rng and not model.takes_state
    given = model.loss_and_grads(params, feeds, **model.extra({}, np.random.default_rng(123)))[0]
    again = model.loss_and_grads(params, feeds, **model.extra({}, np.random.default_rng(123)))[0]
    default = model.loss_and_grads(params, feeds)[0]  # the module's own fixed generator
    assert given == again
    assert given != default


def test_batchnorm_updates_the_state_it_is_given():
    model, params, feeds = _model("multi_layer_net_bn")
    assert model.takes_state and not model.takes_rng
    state = model.module.init_state()
    before = {name: value.copy() for name, value in state.items()}
    model.loss_and_grads(params, feeds, **model.extra(state, np.random.default_rng(0)))
    changed = [name for name in state if not np.array_equal(state[name], before[name])]
    assert changed and len(changed) == len(state)  # every running mean and variance moved
    assert all(value.dtype == np.float64 for value in state.values())

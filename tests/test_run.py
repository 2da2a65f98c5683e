"""The interpreter: what it calls, in what order, and what it hands back."""

from __future__ import annotations

import textwrap

import numpy as np

import graphc
from graphc.plan import make_plan
from graphc.run import Interpreter

GRAPH = """
    graph g {
        input x: [2, 3] = [[1, -2, 3], [-4, 5, -6]]
        param w: [3] = [0.5, -1, 2]
        param unused: [3] = [1, 1, 1]
        h = mul(x, w)
        r = relu(h)
        s = sigmoid(r)
        loss = softmax_loss(s, [0, 2])
        k = mul(unused, 2)
        output loss, k
    }
"""


def program() -> graphc.Program:
    return graphc.compile_source(textwrap.dedent(GRAPH), "g.graph")


def test_observe_sees_every_step_of_both_passes_with_its_containers():
    p = program()
    plan = make_plan(p.checked, p.types, wrt=("w",))
    calls = []

    def observe(phase, index, *containers):
        calls.append((phase, index, tuple(type(c).__name__ for c in containers)))
        if phase == "forward":
            env, tape = containers
            assert plan.forward[index].out in env  # its result is stored
        else:
            tape, grads = containers
            assert all(w.target in grads for w in plan.backward[index].writes)

    interpreter = Interpreter(plan, free=True, observe=observe)
    env = dict(p.consts)
    env.update(p.params)
    env["x"] = p.feed("x", p.default_feeds()["x"])
    tape = interpreter.forward(env)
    interpreter.backward(tape, np.ones(()))
    assert calls == [("forward", i, ("dict", "list")) for i in range(len(plan.forward))] + [
        ("backward", j, ("list", "dict")) for j in range(len(plan.backward))
    ]


def test_backward_computes_only_the_gradients_the_plan_needs():
    """Gradients nothing wants are not computed at all (w's yes, x's no)."""
    p = program()
    plan = make_plan(p.checked, p.types, wrt=("w",))
    handed: dict[str, tuple] = {}

    def wrap(kind, step, function):
        if kind != "backward":
            return function

        def recorded(saved, dout):
            results = function(saved, dout)
            handed[step.node] = tuple(g is not None for g in results)
            return results

        return recorded

    interpreter = Interpreter(plan, free=False, wrap=wrap)
    env = dict(p.consts)
    env.update(p.params)
    env["x"] = p.feed("x", p.default_feeds()["x"])
    grads = interpreter.backward(interpreter.forward(env), np.ones(()))
    assert handed == {"loss": (True, False), "s": (True,), "r": (True,), "h": (False, True)}
    assert set(grads) == {"d_loss", "d_s", "d_r", "d_h", "d_w"}


def test_forward_keeps_only_what_backward_reads():
    p = program()
    plan = make_plan(p.checked, p.types, wrt=("w",))
    interpreter = Interpreter(plan, free=True)
    env = dict(p.consts)
    env.update(p.params)
    env["x"] = p.feed("x", p.default_feeds()["x"])
    tape = interpreter.forward(env)
    kept = {step.out: entry for step, entry in zip(plan.forward, tape)}
    assert kept["k"] is None  # nothing goes back through k
    assert len(kept["h"]) == 2 and kept["h"][0] is env["x"]  # mul keeps both operands
    assert kept["r"][0].dtype == np.bool_  # relu keeps its mask, not x
    assert kept["s"][0] is env.get("s", kept["s"][0])  # sigmoid keeps its output
    assert len(kept["loss"]) == 2  # the labels and the probabilities

"""Edges of ops that the generic op tests do not reach: ties in a pooling
window, and the printed count of a mean over a symbolic batch (both found
by mutation testing: a `>=` for a `>` and a garbled join went unnoticed)."""

from __future__ import annotations

import textwrap

import numpy as np

from graphc.compiler import front_end
from graphc.ops import REGISTRY
from graphc.plan import make_plan


def test_a_tie_in_a_pooling_window_sends_the_gradient_to_the_first_max():
    """As the book's Pooling (np.argmax): the first of equal maxima, in row-major window order."""
    pool = REGISTRY["max_pool"]
    attrs = {"size": 2, "stride": 2, "pad": 0}
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]])  # one window, three equal maxima
    step = pool.compile(attrs, pool.types_of(attrs, x))
    out, saved = step.forward(x)
    (dx,) = step.backward(saved, np.array([[[[5.0]]]]))
    assert out.tolist() == [[[[3.0]]]]
    assert dx.tolist() == [[[[0.0, 5.0], [0.0, 0.0]]]]


def test_a_mean_over_a_symbolic_batch_prints_its_count():
    [graph] = front_end(
        textwrap.dedent("""
            graph g {
                input x: [N, 3]
                m = mean(x)
                output m
            }
        """).lstrip("\n"),
        "m.graph",
    )
    plan = make_plan(graph.checked, graph.types)
    assert plan.text().splitlines()[6] == "  1  mean  d_x = broadcast_to(d_m / (N * 3), x.shape)  reads x"

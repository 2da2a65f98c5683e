"""Graph texts that more than one test module runs."""

from __future__ import annotations

# Two losses, each with labels of its own: `t` and `u` reach an output only as
# labels, so neither gets a gradient (not even a zero one).
LABELS_NOWHERE = """
    graph g {
        input y: [2, 3] = [[1, 2, 3], [0, 0, 1]]
        input t: i64[2] = [0, 2]
        input u: i64[2] = [1, 1]
        param w: [3] = [1, 1, 1]
        z = mul(y, w)
        loss = softmax_loss(z, t)
        other = softmax_loss(y, u)
        output loss, other
    }
"""

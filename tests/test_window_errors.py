"""The whole rendered refusals of the window ops (conv2d, max_pool), flatten
and the reductions, caret included: where the caret goes is part of the
message, as mutation testing showed (tests/test_conv.py checks the first
lines of many more)."""

from __future__ import annotations

import textwrap

import pytest

import graphc
from graphc.errors import GraphcError


def rendered_error(body: str) -> str:
    source = "graph g {\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n    output c\n}\n"
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(source, "m.graph")
    return info.value.render()


CASES = {
    "filters that are not four-dimensional": (
        """
        input x: [N, 1, 4, 4]
        param W: [3, 2, 2] = normal(0.1)
        param b: [3] = 0
        c = conv2d(x, W, b)
        """,
        """
        m.graph:5:19: error: conv2d: filters `W` must be [FN, C, FH, FW], got [3, 2, 2]
         5 |     c = conv2d(x, W, b)
           |                   ^
        hint: param `W` is declared f64[3, 2, 2] at line 3
        """,
    ),
    "filters of a symbolic shape": (
        """
        dim K = 3
        input x: [N, 1, 4, 4]
        input W: [K, 1, 2, 2]
        param b: [3] = 0
        c = conv2d(x, W, b)
        """,
        """
        m.graph:6:19: error: conv2d: the shape of filters `W` [K, 1, 2, 2] must be numbers
         6 |     c = conv2d(x, W, b)
           |                   ^
        hint: input `W` is declared f64[K, 1, 2, 2] at line 4
        """,
    ),
    "max_pool of integers": (
        """
        input x: i64[N, 1, 4, 4]
        c = max_pool(x)
        """,
        """
        m.graph:3:18: error: `max_pool` needs a float operand, `x` is i64
         3 |     c = max_pool(x)
           |                  ^
        hint: input `x` is declared i64[N, 1, 4, 4] at line 2
        """,
    ),
    "flatten of integers": (
        """
        input x: i64[N, 4]
        c = flatten(x)
        """,
        """
        m.graph:3:17: error: `flatten` needs a float operand, `x` is i64
         3 |     c = flatten(x)
           |                 ^
        hint: input `x` is declared i64[N, 4] at line 2
        """,
    ),
    "sum of integers": (
        """
        input x: i64[N, 4]
        c = sum(x)
        """,
        """
        m.graph:3:13: error: `sum` needs a float operand, `x` is i64
         3 |     c = sum(x)
           |             ^
        hint: input `x` is declared i64[N, 4] at line 2
        """,
    ),
    "a pooling width that is not whole": (
        """
        input x: [N, 1, 4, 3]
        c = max_pool(x, size=2, stride=2)
        """,
        """
        m.graph:3:36: error: max_pool: the output width (3 + 2·0 − 2) / 2 + 1 is not a whole number
         3 |     c = max_pool(x, size=2, stride=2)
           |                                    ^
        hint: `stride` must divide 3 + 2·0 − 2 = 1
        """,
    ),
    "a pooling window wider than the input": (
        """
        input x: [N, 1, 4, 1]
        c = max_pool(x, size=2, stride=1)
        """,
        """
        m.graph:3:26: error: max_pool: the output width (1 + 2·0 − 2) / 1 + 1 is less than 1: the window is larger than the padded input
         3 |     c = max_pool(x, size=2, stride=1)
           |                          ^
        hint: padded, the input is 1 across, the window 2
        """,
    ),
    "flatten of one dimension": (
        """
        input x: [4]
        c = flatten(x)
        """,
        """
        m.graph:3:17: error: flatten: `x` must be a batch [N, ...], got [4]
         3 |     c = flatten(x)
           |                 ^
        hint: input `x` is declared f64[4] at line 2
        """,
    ),
    "a reduction's axis out of range": (
        """
        input x: [N, 4]
        c = sum(x, axis=2)
        """,
        """
        m.graph:3:21: error: axis 2 is out of range for `x` [N, 4]
         3 |     c = sum(x, axis=2)
           |                     ^
        hint: `x` has 2 axes: 0 to 1, or -2 to -1 from the end
        """,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_refusal_whole(case):
    body, expected = CASES[case]
    assert rendered_error(body) == textwrap.dedent(expected).strip("\n")

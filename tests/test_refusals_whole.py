"""Refusals of the ops with attributes and windows (conv2d, max_pool,
flatten, the reductions, dropout, batchnorm), each rendered whole: where the
caret goes and which bound is open are part of the message, as mutation
testing showed (tests/test_conv.py and tests/test_batchnorm_dropout.py check
the first lines of many more)."""

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
        m.graph:5:19: error[E202]: conv2d: filters `W` must be [FN, C, FH, FW], got [3, 2, 2]
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
        m.graph:6:19: error[E202]: conv2d: the shape of filters `W` [K, 1, 2, 2] must be numbers
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
        m.graph:3:18: error[E203]: `max_pool` needs a float operand, `x` is i64
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
        m.graph:3:17: error[E203]: `flatten` needs a float operand, `x` is i64
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
        m.graph:3:13: error[E203]: `sum` needs a float operand, `x` is i64
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
        m.graph:3:36: error[E205]: max_pool: the output width (3 + 2·0 − 2) / 2 + 1 is not a whole number
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
        m.graph:3:26: error[E205]: max_pool: the output width (1 + 2·0 − 2) / 1 + 1 is less than 1: the window is larger than the padded input
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
        m.graph:3:17: error[E202]: flatten: `x` must be a batch [N, ...], got [4]
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
        m.graph:3:21: error[E204]: axis 2 is out of range for `x` [N, 4]
         3 |     c = sum(x, axis=2)
           |                     ^
        hint: `x` has 2 axes: 0 to 1, or -2 to -1 from the end
        """,
    ),
    "dropout's ratio of 1": (
        """
        input x: [N, 4]
        c = dropout(x, ratio=1)
        """,
        """
        m.graph:3:26: error[E107]: `ratio` of `dropout` must be in [0, 1), got `1`
         3 |     c = dropout(x, ratio=1)
           |                          ^
        hint: the book drops half: `ratio=0.5`; `ratio=0` keeps everything
        """,
    ),
    "a negative dropout ratio": (
        """
        input x: [N, 4]
        c = dropout(x, ratio=-0.5)
        """,
        """
        m.graph:3:26: error[E107]: `ratio` of `dropout` must be in [0, 1), got `-0.5`
         3 |     c = dropout(x, ratio=-0.5)
           |                          ^^^^
        hint: the book drops half: `ratio=0.5`; `ratio=0` keeps everything
        """,
    ),
    "a dropout ratio that is not a number": (
        """
        input x: [N, 4]
        c = dropout(x, ratio=true)
        """,
        """
        m.graph:3:26: error[E107]: `ratio` of `dropout` must be a number, got `true`
         3 |     c = dropout(x, ratio=true)
           |                          ^^^^
        hint: the book drops half: `ratio=0.5`; `ratio=0` keeps everything
        """,
    ),
    "batchnorm's eps of 0": (
        """
        input x: [N, 4]
        param g: [4] = 1
        param b: [4] = 0
        c = batchnorm(x, g, b, eps=0)
        """,
        """
        m.graph:5:32: error[E107]: `eps` of `batchnorm` must be in (0, 1), got `0`
         5 |     c = batchnorm(x, g, b, eps=0)
           |                                ^
        hint: a small positive number keeps a feature of zero variance finite, e.g. `eps=1e-7`
        """,
    ),
    "batchnorm's eps of 1": (
        """
        input x: [N, 4]
        param g: [4] = 1
        param b: [4] = 0
        c = batchnorm(x, g, b, eps=1)
        """,
        """
        m.graph:5:32: error[E107]: `eps` of `batchnorm` must be in (0, 1), got `1`
         5 |     c = batchnorm(x, g, b, eps=1)
           |                                ^
        hint: a small positive number keeps a feature of zero variance finite, e.g. `eps=1e-7`
        """,
    ),
    "batchnorm's momentum of 1": (
        """
        input x: [N, 4]
        param g: [4] = 1
        param b: [4] = 0
        c = batchnorm(x, g, b, momentum=1)
        """,
        """
        m.graph:5:37: error[E107]: `momentum` of `batchnorm` must be in [0, 1), got `1`
         5 |     c = batchnorm(x, g, b, momentum=1)
           |                                     ^
        hint: the book's is `momentum=0.9`
        """,
    ),
    "a batchnorm shift of the wrong shape": (
        """
        input x: [N, 4]
        param g: [4] = 1
        param b: [3] = 0
        c = batchnorm(x, g, b)
        """,
        """
        m.graph:5:25: error[E201]: shape mismatch in `batchnorm`: `b` [3] must be one number per feature of `x` [N, 4], [4]
         5 |     c = batchnorm(x, g, b)
           |                         ^
        hint: param `b` is declared f64[3] at line 4
        """,
    ),
    "filters wider than the input": (
        """
        input x: [N, 1, 4, 4]
        param W: [3, 1, 2, 5] = normal(0.1)
        param b: [3] = 0
        c = conv2d(x, W, b)
        """,
        """
        m.graph:5:19: error[E205]: conv2d: the output width (4 + 2·0 − 5) / 1 + 1 is less than 1: the window is larger than the padded input
         5 |     c = conv2d(x, W, b)
           |                   ^
        hint: padded, the input is 4 across, the window 5
        """,
    ),
    "a convolution width that is not whole": (
        """
        input x: [N, 1, 4, 3]
        param W: [3, 1, 2, 2] = normal(0.1)
        param b: [3] = 0
        c = conv2d(x, W, b, stride=2)
        """,
        """
        m.graph:5:32: error[E205]: conv2d: the output width (3 + 2·0 − 2) / 2 + 1 is not a whole number
         5 |     c = conv2d(x, W, b, stride=2)
           |                                ^
        hint: `stride` must divide 3 + 2·0 − 2 = 1
        """,
    ),
    "a bias of the wrong length": (
        """
        input x: [N, 1, 4, 4]
        param W: [3, 1, 2, 2] = normal(0.1)
        param b: [2] = 0
        c = conv2d(x, W, b)
        """,
        """
        m.graph:5:22: error[E201]: shape mismatch in `conv2d`: bias `b` [2] must be one number per filter, [3]
         5 |     c = conv2d(x, W, b)
           |                      ^
        hint: param `b` is declared f64[2] at line 4
        """,
    ),
    "pooling a matrix": (
        """
        input x: [N, 16]
        c = max_pool(x)
        """,
        """
        m.graph:3:18: error[E202]: max_pool: `x` must be a batch of images [N, C, H, W], got [N, 16]
         3 |     c = max_pool(x)
           |                  ^
        hint: input `x` is declared f64[N, 16] at line 2
        """,
    ),
    "pooling a symbolic height": (
        """
        dim H = 4
        input x: [N, 1, H, 4]
        c = max_pool(x)
        """,
        """
        m.graph:4:18: error[E202]: max_pool: the height and width of `x` [N, 1, H, 4] must be numbers
         4 |     c = max_pool(x)
           |                  ^
        hint: input `x` is declared f64[N, 1, H, 4] at line 3
        """,
    ),
    "a window larger than the padded input": (
        """
        input x: [N, 1, 2, 2]
        c = max_pool(x, size=5, stride=1, pad=1)
        """,
        """
        m.graph:3:26: error[E205]: max_pool: the output height (2 + 2·1 − 5) / 1 + 1 is less than 1: the window is larger than the padded input
         3 |     c = max_pool(x, size=5, stride=1, pad=1)
           |                          ^
        hint: padded, the input is 4 across, the window 5
        """,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_refusal_whole(case):
    body, expected = CASES[case]
    assert rendered_error(body) == textwrap.dedent(expected).strip("\n")


@pytest.mark.parametrize(
    "call",
    ["dropout(x, ratio=0)", "batchnorm(x, g, b, eps=1e-300)", "batchnorm(x, g, b, momentum=0)"],
)
def test_the_closed_ends_of_the_ranges_are_accepted(call):
    source = f"graph g {{\n    input x: [N, 4]\n    param g: [4] = 1\n    param b: [4] = 0\n    c = {call}\n    output c\n}}\n"
    assert graphc.compile_source(source, "m.graph").compiled.name == "g"

"""conv2d, max_pool and flatten: forward against slow loop-by-loop numpy,
every operand's gradient against central differences (strides and padding
included), the generated module against the interpreter, and the refusals
with their whole messages."""

from __future__ import annotations

import itertools
import textwrap

import numpy as np
import pytest
from test_memory import environment, measure

import graphc
import graphc.compiler
from graphc.codegen import python_module
from graphc.errors import GraphcError
from graphc.memory import bind_dims, predict_memory
from graphc.ops import REGISTRY, im2col
from graphc.plan import make_plan
from graphc.program import Program

CONV = REGISTRY["conv2d"]
POOL = REGISTRY["max_pool"]
FLATTEN = REGISTRY["flatten"]


def text(block: str) -> str:
    return textwrap.dedent(block).strip("\n")


def error(src: str) -> str:
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(textwrap.dedent(src).lstrip("\n"), "m.graph")
    return info.value.render()


# --- references: one output pixel at a time ------------------------------------------


def padded(x: np.ndarray, pad: int) -> np.ndarray:
    n, c, h, w = x.shape
    img = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    img[:, :, pad : pad + h, pad : pad + w] = x
    return img


def slow_conv(x, w, b, stride, pad):
    img = padded(x, pad)
    fn, _, fh, fw = w.shape
    oh, ow = (img.shape[2] - fh) // stride + 1, (img.shape[3] - fw) // stride + 1
    out = np.zeros((len(x), fn, oh, ow))
    for i, f, r, c in itertools.product(range(len(x)), range(fn), range(oh), range(ow)):
        window = img[i, :, r * stride : r * stride + fh, c * stride : c * stride + fw]
        out[i, f, r, c] = np.sum(window * w[f]) + b[f]
    return out


def slow_pool(x, size, stride, pad):
    img = padded(x, pad)
    oh, ow = (img.shape[2] - size) // stride + 1, (img.shape[3] - size) // stride + 1
    out = np.zeros((*x.shape[:2], oh, ow))
    for i, ch, r, c in itertools.product(range(len(x)), range(x.shape[1]), range(oh), range(ow)):
        out[i, ch, r, c] = img[i, ch, r * stride : r * stride + size, c * stride : c * stride + size].max()
    return out


def run(op, attrs, values, dout=None):
    step = op.compile(attrs, op.types_of(attrs, *values))
    out, saved = step.forward(*values)
    return out, (None if dout is None else step.backward(saved, dout))


def numerical(op, attrs, values, i, dout, eps=1e-6):
    grad = np.zeros_like(values[i])
    for index in np.ndindex(values[i].shape):
        changed = [v.copy() for v in values]
        changed[i][index] += eps
        up = np.sum(run(op, attrs, changed)[0] * dout)
        changed[i][index] -= 2 * eps
        down = np.sum(run(op, attrs, changed)[0] * dout)
        grad[index] = (up - down) / (2 * eps)
    return grad


CONV_CASES = [
    # x, W, stride, pad
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 0),
    ((2, 3, 5, 5), (4, 3, 3, 3), 2, 1),
    ((1, 2, 7, 6), (3, 2, 3, 2), 2, 0),
    ((2, 1, 4, 4), (2, 1, 2, 2), 1, 1),
    ((1, 1, 3, 3), (1, 1, 3, 3), 3, 0),
]
POOL_CASES = [
    # x, size, stride, pad
    ((2, 3, 4, 4), 2, 2, 0),
    ((1, 2, 5, 5), 3, 2, 1),
    ((2, 2, 4, 6), 2, 1, 0),
    ((1, 1, 4, 4), 2, 2, 1),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CONV_CASES)
def test_conv2d_forward_is_the_loop_by_loop_convolution(x_shape, w_shape, stride, pad):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    out, _ = run(CONV, {"stride": stride, "pad": pad}, [x, w, b])
    expected = slow_conv(x, w, b, stride, pad)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape, size, stride, pad", POOL_CASES)
def test_max_pool_forward_is_the_loop_by_loop_max(x_shape, size, stride, pad):
    x = np.random.default_rng(1).standard_normal(x_shape)
    out, _ = run(POOL, {"size": size, "stride": stride, "pad": pad}, [x])
    np.testing.assert_array_equal(out, slow_pool(x, size, stride, pad))


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CONV_CASES)
def test_conv2d_gradients_are_central_differences(x_shape, w_shape, stride, pad):
    rng = np.random.default_rng(2)
    values = [rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])]
    attrs = {"stride": stride, "pad": pad}
    out, _ = run(CONV, attrs, values)
    dout = rng.standard_normal(out.shape)
    _, grads = run(CONV, attrs, values, dout)
    for i, grad in enumerate(grads):
        assert grad.shape == values[i].shape
        np.testing.assert_allclose(grad, numerical(CONV, attrs, values, i, dout), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("x_shape, size, stride, pad", POOL_CASES)
def test_max_pool_gradient_is_central_differences(x_shape, size, stride, pad):
    rng = np.random.default_rng(3)
    x = rng.permutation(np.arange(np.prod(x_shape), dtype=np.float64)).reshape(x_shape) / 7  # no ties
    attrs = {"size": size, "stride": stride, "pad": pad}
    out, _ = run(POOL, attrs, [x])
    dout = rng.standard_normal(out.shape)
    _, (grad,) = run(POOL, attrs, [x], dout)
    np.testing.assert_allclose(grad, numerical(POOL, attrs, [x], 0, dout), rtol=1e-6, atol=1e-8)


def test_max_pool_sends_each_window_gradient_to_its_max():
    x = np.array([[[[1.0, 2.0, 5.0, 0.0], [4.0, 3.0, 1.0, 6.0], [0.0, 0.0, 2.0, 2.5], [9.0, 1.0, 3.0, 1.0]]]])
    out, (grad,) = run(POOL, {"size": 2, "stride": 2, "pad": 0}, [x], np.array([[[[10.0, 20.0], [30.0, 40.0]]]]))
    assert out.tolist() == [[[[4.0, 6.0], [9.0, 3.0]]]]
    assert grad.tolist() == [[[[0, 0, 0, 0], [10, 0, 0, 20], [0, 0, 0, 0], [30, 0, 40, 0]]]]


def test_flatten_and_its_gradient_keep_each_sample():
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    out, (grad,) = run(FLATTEN, {}, [x], np.arange(24.0).reshape(2, 12) * 2)
    assert out.shape == (2, 12) and out[1].tolist() == list(range(12, 24))
    np.testing.assert_array_equal(grad, x * 2)


def test_im2col_columns_are_the_windows_channel_major():
    x = np.arange(2 * 3 * 3.0).reshape(1, 2, 3, 3)
    col = im2col(x, 2, 2, 1, 0)
    assert col.shape == (1, 8, 4)  # [N, C·FH·FW, OH·OW]
    assert col[0, :, 2].tolist() == [3, 4, 6, 7, 12, 13, 15, 16]  # the window at row 1, column 0


def windows_of(x: np.ndarray, size: int, stride: int, pad: int) -> np.ndarray:
    """Each pooling window's numbers in a last axis, row by row: [N, C, OH, OW, size·size]."""
    img = padded(x, pad)
    oh, ow = (img.shape[2] - size) // stride + 1, (img.shape[3] - size) // stride + 1
    return np.stack(
        [
            img[:, :, r * stride : r * stride + size, c * stride : c * stride + size]
            for r in range(oh)
            for c in range(ow)
        ],
        axis=2,
    ).reshape(*x.shape[:2], oh, ow, size * size)


@pytest.mark.parametrize("x_shape, size, stride, pad", POOL_CASES)
def test_max_pool_keeps_argmax_where_windows_tie_and_max_where_nan(x_shape, size, stride, pad):
    """Ties: the first max wins, as np.argmax's; a NaN is the window's max, as np.max's."""
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 2, x_shape).astype(np.float64)  # few values: many ties, 0s as the padding's
    x[(0,) * x.ndim] = np.nan
    attrs = {"size": size, "stride": stride, "pad": pad}
    out, saved = POOL.compile(attrs, POOL.types_of(attrs, x)).forward(x)
    windows = windows_of(x, size, stride, pad)
    np.testing.assert_array_equal(out, windows.max(axis=-1))  # NaN where a window has one
    arg_max = dict(zip(POOL.saves, saved))["arg_max"]
    tied = ~np.isnan(windows).any(axis=-1)
    assert tied.sum() > 0 and (windows == windows.max(axis=-1, keepdims=True)).sum(axis=-1)[tied].max() > 1
    np.testing.assert_array_equal(arg_max[tied], windows.argmax(axis=-1)[tied])


@pytest.mark.parametrize("x_shape, size, stride, pad", POOL_CASES)
def test_max_pool_gradient_is_the_scatter_to_each_argmax(x_shape, size, stride, pad):
    """Loop by loop, ties included (central differences cannot see them); float32 stays float32."""
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 2, x_shape).astype(np.float32)
    attrs = {"size": size, "stride": stride, "pad": pad}
    out, _ = run(POOL, attrs, [x])
    dout = rng.standard_normal(out.shape).astype(np.float32)
    _, (grad,) = run(POOL, attrs, [x], dout)
    arg_max = windows_of(x, size, stride, pad).argmax(axis=-1)
    expected = np.zeros(padded(x, pad).shape, dtype=np.float32)
    for i, ch, r, c in itertools.product(*map(range, out.shape)):
        row, col = divmod(arg_max[i, ch, r, c], size)
        expected[i, ch, r * stride + row, c * stride + col] += dout[i, ch, r, c]
    assert grad.dtype == np.float32
    # Overlapping windows add up in another order: float32's rounding apart.
    np.testing.assert_allclose(
        grad, expected[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]], rtol=1e-6, atol=1e-6
    )


SMALL_CNN = """
graph g {
    input x: [N, 1, 6, 6]
    param W1: [3, 1, 3, 3] = normal(0.5)
    param b1: [3] = normal(0.1)
    param W2: [27, 2] = normal(0.5)
    param b2: [2] = 0
    c = conv2d(x, W1, b1, stride=1, pad=1)
    r = relu(c)
    p = max_pool(r, size=2, stride=2)
    f = flatten(p)
    h = affine(p, W2, b2)
    hf = affine(f, W2, b2)
    both = add(h, hf)
    sq = square(both)
    loss = sum(sq)
    output loss
}
"""


def test_a_small_cnn_generates_what_the_interpreter_computes():
    compiled = graphc.compile_source(SMALL_CNN, "g.graph").compiled
    program = Program(compiled, seed=0)
    namespace: dict = {}
    exec(compile(python_module(compiled), "<generated>", "exec"), namespace)
    params = namespace["init_params"](0)
    x = np.random.default_rng(4).uniform(-1, 1, (5, 1, 6, 6))
    outputs, saved = namespace["forward"](params, x=x)
    grads = namespace["backward"](params, saved)
    expected = program.forward(x=x)
    assert float(outputs["loss"]) == float(expected["loss"])
    for name, grad in program.backward().items():
        np.testing.assert_array_equal(grads[name], grad)


def test_the_batch_dim_stays_symbolic():
    compiled = graphc.compile_source(SMALL_CNN, "g.graph").compiled
    program = Program(compiled, seed=0)
    for n in (1, 3):
        assert np.shape(program.forward(x=np.ones((n, 1, 6, 6)))["loss"]) == ()
        assert program.values["c"].shape == (n, 3, 6, 6) and program.values["f"].shape == (n, 27)


# --- refusals ------------------------------------------------------------------------


def test_a_stride_that_does_not_fit_states_the_arithmetic():
    assert error("""
        graph g {
            input x: [N, 1, 28, 28]
            param W: [30, 1, 5, 5] = normal(0.01)
            param b: [30] = 0
            c = conv2d(x, W, b, stride=2)
            output c
        }
    """) == text("""
        m.graph:5:32: error[E205]: conv2d: the output height (28 + 2·0 − 5) / 2 + 1 is not a whole number
         5 |     c = conv2d(x, W, b, stride=2)
           |                                ^
        hint: `stride` must divide 28 + 2·0 − 5 = 23
    """)


def test_a_channel_mismatch_names_both_shapes():
    assert error("""
        graph g {
            input x: [N, 3, 28, 28]
            param W: [30, 1, 5, 5] = normal(0.01)
            param b: [30] = 0
            c = conv2d(x, W, b)
            output c
        }
    """) == text("""
        m.graph:5:19: error[E201]: shape mismatch in `conv2d`: `x` has 3 channels, filters `W` expect 1 (`x` is [N, 3, 28, 28], `W` is [30, 1, 5, 5])
         5 |     c = conv2d(x, W, b)
           |                   ^
        hint: param `W` is declared f64[30, 1, 5, 5] at line 3
    """)


def test_a_window_larger_than_the_padded_input_is_refused_at_its_size():
    assert error("""
        graph g {
            input x: [N, 1, 4, 4]
            p = max_pool(x, size=5, stride=1, pad=0)
            output p
        }
    """) == text("""
        m.graph:3:26: error[E205]: max_pool: the output height (4 + 2·0 − 5) / 1 + 1 is less than 1: the window is larger than the padded input
         3 |     p = max_pool(x, size=5, stride=1, pad=0)
           |                          ^
        hint: padded, the input is 4 across, the window 5
    """)


@pytest.mark.parametrize(
    "call, message",
    [
        ("conv2d(x, W, b, stride=0)", "`stride` of `conv2d` must be a positive whole number, got `0`"),
        ("conv2d(x, W, b, pad=-1)", "`pad` of `conv2d` must be a whole number, 0 or more, got `-1`"),
        ("max_pool(x, size=1.5)", "`size` of `max_pool` must be a positive whole number, got `1.5`"),
        ("conv2d(x, W, b2)", "shape mismatch in `conv2d`: bias `b2` [2] must be one number per filter, [3]"),
        ("conv2d(f, W, b)", "conv2d: `f` must be a batch of images [N, C, H, W], got [N, 16]"),
        ("max_pool(f)", "max_pool: `f` must be a batch of images [N, C, H, W], got [N, 16]"),
        ("flatten(b)", "flatten: `b` must be a batch [N, ...], got [3]"),
    ],
)
def test_attributes_and_operands_are_checked(call, message):
    rendered = error(f"""
        graph g {{
            input x: [N, 1, 4, 4]
            input f: [N, 16]
            param W: [3, 1, 2, 2] = normal(0.1)
            param b: [3] = 0
            param b2: [2] = 0
            c = {call}
            output c
        }}
    """)
    assert rendered.splitlines()[0].split("]: ", 1)[1] == message


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("pad", [0, 1])
def test_memory_prediction_counts_the_windows_to_the_byte(batch, pad):
    """im2col's rows, max_pool's argmax and every gradient, as the interpreter holds them."""
    [compiled] = graphc.compiler.front_end(
        SMALL_CNN.replace("pad=1", f"pad={pad}").replace("[27, 2]", f"[{3 * (2 + pad) ** 2}, 2]"), "g.graph"
    )
    program = Program(compiled)
    plan = make_plan(program.checked, program.types)
    dims = bind_dims(plan, program.ir, batch)
    predicted = predict_memory(plan, dims)
    assert [s.held for s in predicted.steps] == measure(plan, environment(program, dims))


# --- avg_pool ----------------------------------------------------------------------------

AVG = REGISTRY["avg_pool"]


def slow_avg_pool(x, size, stride, pad):
    img = padded(x, pad)
    oh, ow = (img.shape[2] - size) // stride + 1, (img.shape[3] - size) // stride + 1
    out = np.zeros((*x.shape[:2], oh, ow))
    for i, ch, r, c in itertools.product(range(len(x)), range(x.shape[1]), range(oh), range(ow)):
        out[i, ch, r, c] = img[i, ch, r * stride : r * stride + size, c * stride : c * stride + size].mean()
    return out


@pytest.mark.parametrize("x_shape, size, stride, pad", POOL_CASES)
def test_avg_pool_forward_is_the_loop_by_loop_mean_and_its_gradient_central_differences(x_shape, size, stride, pad):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape)
    attrs = {"size": size, "stride": stride, "pad": pad}
    out, _ = run(AVG, attrs, [x])
    np.testing.assert_allclose(out, slow_avg_pool(x, size, stride, pad), rtol=1e-14, atol=1e-15)
    dout = rng.standard_normal(out.shape)
    _, (grad,) = run(AVG, attrs, [x], dout)
    np.testing.assert_allclose(grad, numerical(AVG, attrs, [x], 0, dout), rtol=1e-6, atol=1e-8)


def test_avg_pool_shares_each_window_gradient_and_keeps_nothing():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out, (grad,) = run(AVG, {"size": 2, "stride": 2, "pad": 0}, [x], np.array([[[[4.0, 8.0], [12.0, 16.0]]]]))
    assert out.tolist() == [[[[2.5, 4.5], [10.5, 12.5]]]]
    assert grad.tolist() == [[[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]]]
    assert AVG.saves == ()  # x only for its shape, written into the rule as numbers


AVG_CNN = SMALL_CNN.replace("max_pool(r, size=2, stride=2)", "avg_pool(r, size=2, stride=2)")


def test_a_cnn_with_avg_pool_generates_what_the_interpreter_computes():
    compiled = graphc.compile_source(AVG_CNN, "g.graph").compiled
    program = Program(compiled, seed=0)
    namespace: dict = {}
    exec(compile(python_module(compiled), "<generated>", "exec"), namespace)
    params = namespace["init_params"](0)
    x = np.random.default_rng(8).uniform(-1, 1, (5, 1, 6, 6))
    outputs, saved = namespace["forward"](params, x=x)
    grads = namespace["backward"](params, saved)
    assert float(outputs["loss"]) == float(program.forward(x=x)["loss"])
    for name, grad in program.backward().items():
        np.testing.assert_array_equal(grads[name], grad)


@pytest.mark.parametrize("batch", [1, 7])
def test_memory_prediction_of_avg_pool_is_exact(batch):
    [compiled] = graphc.compiler.front_end(AVG_CNN, "g.graph")
    program = Program(compiled)
    plan = make_plan(program.checked, program.types)
    dims = bind_dims(plan, program.ir, batch)
    predicted = predict_memory(plan, dims)
    assert [s.held for s in predicted.steps] == measure(plan, environment(program, dims))


def test_avg_pool_states_the_arithmetic_of_a_stride_that_does_not_fit():
    message = error("""
        graph g {
            input x: [N, 3, 7, 7]
            p = avg_pool(x, size=2, stride=2)
            output p
        }
    """)
    assert message.splitlines()[0].split("]: ", 1)[1] == (
        "avg_pool: the output height (7 + 2·0 − 2) / 2 + 1 is not a whole number"
    )

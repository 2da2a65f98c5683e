"""Every op's numbers against references that share nothing with graphc.

Gradient checks compare backward with forward, so a mistake made in both
(softmax_loss dividing 1-D scores by the number of classes in forward and
backward alike) passes them. Here forward is compared with the op's math
computed independently, in 60-digit decimal arithmetic (Python's `decimal`,
over numpy object arrays): no numpy kernel, no graphc code. Gradients are
compared with central differences of that reference, in the same precision
(step 1e-25: truncation and rounding errors far below float64's).

The printed rules are checked the same way: the text a plan shows a learner
(`d_y = d_loss * (softmax(y) - t) / N`) is evaluated with its words given
their meaning (softmax, sum, N), and must equal the reference gradient.

Cases: every op's example shapes (broadcasting included), rows of very
different scales, single samples (1-D scores), class-index labels, f32, and
numbers derived by hand.
"""

from __future__ import annotations

import decimal
import itertools
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from graphc.ir import TensorType
from graphc.ops import REGISTRY, Op

CONTEXT = decimal.Context(prec=60, Emax=10**6, Emin=-(10**6))
STEP = Decimal("1e-25")


@pytest.fixture(autouse=True)
def sixty_digits():
    """Decimal arithmetic here (a * b over object arrays too) in 60 digits."""
    with decimal.localcontext(CONTEXT):
        yield


def dec(values: Any) -> np.ndarray:
    """float values as an object array of exact Decimals."""
    array = np.asarray(values, dtype=np.float64)
    out = np.empty(array.shape, dtype=object)
    for index in np.ndindex(array.shape):
        out[index] = Decimal(float(array[index]))
    return out


def dexp(x: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: CONTEXT.exp(v), otypes=[object])(x)


def dlog(x: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: CONTEXT.ln(v), otypes=[object])(x)


def total(x: np.ndarray) -> Decimal:
    result = Decimal(0)
    for v in np.asarray(x, dtype=object).flat:
        result = CONTEXT.add(result, v)
    return result


# --- the references: each op's math, in Decimal ---------------------------------------


def ref_mul(attrs, a, b):
    return a * b


def ref_add(attrs, a, b):
    return a + b


def ref_relu(attrs, x):
    return np.vectorize(lambda v: v if v > 0 else Decimal(0), otypes=[object])(x)


def ref_sigmoid(attrs, x):
    return np.vectorize(lambda v: CONTEXT.divide(1, 1 + CONTEXT.exp(-v)), otypes=[object])(x)


def ref_affine(attrs, x, w, b):
    rows = x.reshape(len(x), -1) if x.ndim > 2 else x
    if rows.ndim == 1:
        product = np.array([total(rows * w[:, j]) for j in range(w.shape[1])], dtype=object)
    else:
        product = np.array(
            [[total(rows[i] * w[:, j]) for j in range(w.shape[1])] for i in range(len(rows))], dtype=object
        )
    return product + b


def ref_softmax_loss(attrs, y, t):
    """-sum(t * log softmax(y)) per row, averaged over the rows (or summed); 1-D y is one row."""
    rows = y.reshape(1, -1) if y.ndim == 1 else y
    labels = one_hot(t, y.shape).reshape(rows.shape)
    losses = []
    for row, label in zip(rows, labels):
        log_total = CONTEXT.ln(total(dexp(row)))
        losses.append(total(label * (log_total - row)))
    loss = total(np.array(losses, dtype=object))
    return loss / len(rows) if attrs["reduction"] == "mean" else loss


def ref_sub(attrs, a, b):
    return a - b


def ref_div(attrs, a, b):
    return a / b


def ref_tanh(attrs, x):
    return np.vectorize(lambda v: CONTEXT.divide(CONTEXT.exp(2 * v) - 1, CONTEXT.exp(2 * v) + 1), otypes=[object])(x)


def ref_exp(attrs, x):
    return dexp(x)


def ref_log(attrs, x):
    return dlog(x)


def ref_square(attrs, x):
    return x * x


def ref_sum(attrs, x):
    """Over object arrays np.sum adds Decimals, in 60 digits."""
    return np.sum(x, axis=attrs["axis"], keepdims=attrs["keepdims"] == "true")


def ref_mean(attrs, x):
    x = np.asarray(x, dtype=object)
    count = x.size if attrs["axis"] is None else x.shape[attrs["axis"]]
    return ref_sum(attrs, x) / Decimal(count)


def ref_dropout(attrs, x):
    """The book's Dropout.forward while training, its mask drawn as graphc's
    interpreter draws it from the generator `extras` hands it."""
    mask = np.random.default_rng(0).random(x.shape) > attrs["ratio"]
    return x * mask


def ref_batchnorm(attrs, x, gamma, beta):
    """The book's BatchNormalization.forward while training, feature by feature."""
    n = len(x)
    eps = Decimal(attrs["eps"])
    out = np.empty(x.shape, dtype=object)
    for j in range(x.shape[1]):
        mu = total(x[:, j]) / n
        var = total((x[:, j] - mu) ** 2) / n
        out[:, j] = gamma[j] * (x[:, j] - mu) / CONTEXT.sqrt(var + eps) + beta[j]
    return out


def _padded(x, pad: int) -> np.ndarray:
    """x [N, C, H, W] with `pad` zeros around each image, as Decimals."""
    n, c, h, w = x.shape
    img = np.empty((n, c, h + 2 * pad, w + 2 * pad), dtype=object)
    img[...] = Decimal(0)
    img[:, :, pad : pad + h, pad : pad + w] = x
    return img


def ref_conv2d(attrs, x, w, b):
    """Each output pixel as the sum over its window, loop by loop."""
    stride, pad = attrs["stride"], attrs["pad"]
    img = _padded(x, pad)
    n, fn, (fh, fw) = len(x), len(w), w.shape[2:]
    oh, ow = (img.shape[2] - fh) // stride + 1, (img.shape[3] - fw) // stride + 1
    out = np.empty((n, fn, oh, ow), dtype=object)
    for i, f, r, c in itertools.product(range(n), range(fn), range(oh), range(ow)):
        window = img[i, :, r * stride : r * stride + fh, c * stride : c * stride + fw]
        out[i, f, r, c] = total((window * w[f]).reshape(-1)) + b[f]
    return out


def ref_max_pool(attrs, x):
    size, stride, pad = attrs["size"], attrs["stride"], attrs["pad"]
    img = _padded(x, pad)
    oh, ow = (img.shape[2] - size) // stride + 1, (img.shape[3] - size) // stride + 1
    out = np.empty((*x.shape[:2], oh, ow), dtype=object)
    for i, ch, r, c in itertools.product(range(len(x)), range(x.shape[1]), range(oh), range(ow)):
        out[i, ch, r, c] = max(img[i, ch, r * stride : r * stride + size, c * stride : c * stride + size].reshape(-1))
    return out


def ref_avg_pool(attrs, x):
    size, stride, pad = attrs["size"], attrs["stride"], attrs["pad"]
    img = _padded(x, pad)
    oh, ow = (img.shape[2] - size) // stride + 1, (img.shape[3] - size) // stride + 1
    out = np.empty((*x.shape[:2], oh, ow), dtype=object)
    for i, ch, r, c in itertools.product(range(len(x)), range(x.shape[1]), range(oh), range(ow)):
        window = img[i, ch, r * stride : r * stride + size, c * stride : c * stride + size].reshape(-1)
        out[i, ch, r, c] = total(window) / (size * size)
    return out


def ref_flatten(attrs, x):
    return x.reshape(len(x), -1)


def one_hot(t: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Labels as rows shaped like the scores: one-hot rows as they are, class indices made one-hot."""
    t = np.asarray(t)
    if t.shape == tuple(shape):
        return dec(t) if t.dtype != object else t
    rows = np.zeros(shape, dtype=object)
    rows[...] = Decimal(0)
    flat_rows = rows.reshape(-1, shape[-1])
    for i, k in enumerate(np.asarray(t, dtype=np.int64).reshape(-1)):
        flat_rows[i, k] = Decimal(1)
    return rows


REFERENCES = {
    "mul": ref_mul,
    "add": ref_add,
    "relu": ref_relu,
    "sigmoid": ref_sigmoid,
    "affine": ref_affine,
    "softmax_loss": ref_softmax_loss,
    "sub": ref_sub,
    "div": ref_div,
    "tanh": ref_tanh,
    "exp": ref_exp,
    "log": ref_log,
    "square": ref_square,
    "sum": ref_sum,
    "mean": ref_mean,
    "dropout": ref_dropout,
    "batchnorm": ref_batchnorm,
    "conv2d": ref_conv2d,
    "max_pool": ref_max_pool,
    "flatten": ref_flatten,
    "avg_pool": ref_avg_pool,
}


def reference_gradient(op: Op, attrs, values: list[np.ndarray], i: int, dout: np.ndarray) -> np.ndarray:
    """d sum(forward * dout) / d values[i], by central differences of the Decimal reference."""
    reference = REFERENCES[op.name]
    args = [dec(v) if op.differentiable(j) or np.asarray(v).dtype.kind == "f" else v for j, v in enumerate(values)]
    weights = dec(dout)
    x = args[i]
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + STEP
        plus = total(np.asarray(reference(attrs, *args), dtype=object) * weights)
        x[index] = original - STEP
        minus = total(np.asarray(reference(attrs, *args), dtype=object) * weights)
        x[index] = original
        grad[index] = float(CONTEXT.divide(plus - minus, 2 * STEP))
    return grad


def to_float(values: Any) -> np.ndarray:
    return np.vectorize(float, otypes=[np.float64])(np.asarray(values, dtype=object))


def assert_close(actual, expected, rtol: float, what: str) -> None:
    """max |actual - expected| <= rtol * max |expected| (exact where rtol is 0)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: {actual}"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert error <= rtol * scale, f"{what}: off by {error:.3g} (scale {scale:.3g})\n{actual}\n{expected}"


# --- running an op as the interpreter does ----------------------------------------------


def run(op: Op, attrs, values, dout=None):
    """Forward, and backward from dout, through the functions the interpreter compiles."""
    types = op.types_of(attrs, *values)
    code = op.compile(attrs, types)
    out, saved = code.forward(*values, *extras(op, attrs, values))
    if dout is None:
        return out, None
    return out, code.backward(saved, dout)


def extras(op: Op, attrs, values) -> tuple:
    """What forward takes after the operands: zero state, and a generator seeded
    alike every time, so that central differences hold dropout's mask fixed."""
    types = op.types_of(attrs, *values)
    state = tuple(np.zeros(types[like].shape) for like in op.state.values())
    return state + ((np.random.default_rng(0),) if op.random else ())


def attr_choices(op: Op) -> list[dict[str, Any]]:
    keys = list(op.attributes)
    options = [op.attributes[k].choices or (op.attributes[k].default,) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*options)]


def operand_values(op: Op, shapes, rng: np.random.Generator, scale: float = 1.0) -> list[np.ndarray]:
    values = []
    for i, shape in enumerate(shapes):
        if op.differentiable(i):
            value = rng.standard_normal(shape) * scale
            values.append(np.abs(value) + 0.5 if op.operands[i] in op.positive else value)  # log, 1/b
        else:  # labels, for the operand they label
            scores = tuple(shapes[op.label_positions()[i]])
            classes = scores[-1]
            index = rng.integers(0, classes, size=scores[:-1])
            values.append(np.eye(classes)[index] if tuple(shape) == scores else index)
    return values


def cases():
    for op in REGISTRY.values():
        for shapes in op.examples:
            for attrs in attr_choices(op):
                label = "".join(f"-{v}" for v in attrs.values())
                yield pytest.param(op, shapes, attrs, id=f"{op.name}-{'-'.join(str(list(s)) for s in shapes)}{label}")


# Forward: mul, add and relu round once (correctly, so exactly the reference
# rounded); the others within a few ulps of the reference.
FORWARD_RTOL = {
    "mul": 0.0,
    "add": 0.0,
    "relu": 0.0,
    "sigmoid": 4e-16,
    "affine": 1e-15,
    "softmax_loss": 1e-15,
    "dropout": 0.0,
    "batchnorm": 1e-14,
}
FORWARD_RTOL.update(sub=0.0, div=0.0, square=0.0, tanh=4e-16, exp=4e-16, log=4e-16, sum=1e-15, mean=1e-15)
FORWARD_RTOL.update(conv2d=1e-14, max_pool=0.0, flatten=0.0, avg_pool=1e-15)


def test_every_op_has_a_reference():
    assert set(REGISTRY) == set(REFERENCES)


@pytest.mark.parametrize("op, shapes, attrs", list(cases()))
def test_forward_equals_the_reference(op: Op, shapes, attrs):
    rng = np.random.default_rng(sum(map(ord, repr((op.name, shapes, attrs)))))
    values = operand_values(op, shapes, rng)
    out, _ = run(op, attrs, values)
    expected = REFERENCES[op.name](attrs, *[dec(v) if v.dtype.kind == "f" else v for v in values])
    assert_close(out, to_float(expected), FORWARD_RTOL[op.name], f"{op.name} forward")


@pytest.mark.parametrize("op, shapes, attrs", list(cases()))
def test_backward_equals_the_reference_gradient(op: Op, shapes, attrs):
    rng = np.random.default_rng(sum(map(ord, repr((op.name, shapes, attrs, "grad")))))
    values = operand_values(op, shapes, rng)
    out, _ = run(op, attrs, values)
    dout = rng.standard_normal(np.shape(out))
    _, grads = run(op, attrs, values, dout)
    for i, grad in enumerate(grads):
        if not op.differentiable(i):
            assert grad is None
            continue
        expected = reference_gradient(op, attrs, values, i, dout)
        assert_close(grad, expected, 1e-13, f"{op.name} d{op.operands[i]}")


# --- the rules people read ---------------------------------------------------------------


def reference_softmax(y: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed in Decimal and rounded: independent of graphc's kernel."""
    rows = dec(y).reshape(-1, y.shape[-1])
    probs = np.empty(rows.shape, dtype=object)
    for r, row in enumerate(rows):
        e = dexp(row)
        probs[r] = e / total(e)
    return to_float(probs).reshape(y.shape)


def _window_words(op: Op, attrs, values) -> dict[str, Any]:
    """The window ops' words (conv2d, max_pool, avg_pool): windows and back, loop by loop."""
    fh, fw = values[1].shape[2:] if op.name == "conv2d" else (attrs["size"], attrs["size"])
    stride, pad = attrs["stride"], attrs["pad"]

    def col2im(g, x):
        """Column r·OW + c of g[n] holds window (r, c) of image n, channel-major: add each back onto its pixels."""
        img = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * pad, x.shape[3] + 2 * pad))
        ow = (img.shape[3] - fw) // stride + 1
        for i, p in itertools.product(range(g.shape[0]), range(g.shape[2])):
            r, c = divmod(p, ow)
            img[i, :, r * stride : r * stride + fh, c * stride : c * stride + fw] += g[i, :, p].reshape(-1, fh, fw)
        return img[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]]

    def scatter(dout, arg_max, x):
        """Each window's dout added to x's pixel at its argmax (row by row within the window)."""
        img = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * pad, x.shape[3] + 2 * pad))
        for i, k, r, c in itertools.product(*map(range, dout.shape)):
            row, col = divmod(arg_max[i, k, r, c], fw)
            img[i, k, r * stride + row, c * stride + col] += dout[i, k, r, c]
        return img[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]]

    def share(dout, x):
        """Each window's dout / size² added to each of its pixels."""
        img = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * pad, x.shape[3] + 2 * pad))
        for i, k, r, c in itertools.product(*map(range, dout.shape)):
            img[i, k, r * stride : r * stride + fh, c * stride : c * stride + fw] += dout[i, k, r, c] / (fh * fw)
        return img[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]]

    return {
        "col2im": col2im,
        "scatter": scatter,
        "share": share,
        "pixels": lambda a: a.reshape(a.shape[0], a.shape[1], -1),
        "window_rows": lambda a: a.transpose(0, 2, 1),
    }


def printed_rule_value(op: Op, attrs, values, out, saved, dout, i: int) -> np.ndarray:
    """The rule a plan prints for operand i, evaluated with its words meaning what they say."""
    types = op.types_of(attrs, *values)
    names = {n: n for n in (*op.operands, *op.own, "out", "dout")}
    text = op.rule(i, names, attrs, types)
    scope: dict[str, Any] = dict(zip(op.operands, values))
    scope.update(out=out, dout=dout, sum=np.sum, outer=np.outer, softmax=reference_softmax)
    scope.update(flat=lambda v: v.reshape(len(v), -1), broadcast_to=np.broadcast_to, expand_dims=np.expand_dims)
    # BatchNormalization's dx in closed form, not as the book's (and graphc's) chain of steps.
    scope.update(
        batchnorm_dx=lambda g, gamma, xc, std: gamma / std * (g - g.mean(0) - xc / std * (g * xc / std).mean(0))
    )
    scope.update(zip(op.saves, saved))  # the op's own tensors (relu's mask) as forward kept them
    if op.name in ("conv2d", "max_pool", "avg_pool"):
        scope.update(_window_words(op, attrs, values))
    for position, scored in op.label_positions().items():
        scores = values[scored]
        scope[op.operands[position]] = (
            np.eye(scores.shape[-1])[values[position]] if values[position].shape != scores.shape else values[position]
        )
        scope["N"] = len(scores) if scores.ndim == 2 else 1
    return np.asarray(eval(text, {"__builtins__": {}}, scope), dtype=np.float64)


@pytest.mark.parametrize("op, shapes, attrs", list(cases()))
def test_printed_rules_are_the_derivative(op: Op, shapes, attrs):
    rng = np.random.default_rng(sum(map(ord, repr((op.name, shapes, attrs, "text")))))
    values = operand_values(op, shapes, rng)
    out, saved = op.compile(attrs, op.types_of(attrs, *values)).forward(*values, *extras(op, attrs, values))
    dout = rng.standard_normal(np.shape(out))
    for i in range(len(op.operands)):
        if not op.differentiable(i):
            continue
        printed = printed_rule_value(op, attrs, values, out, saved, dout, i)
        expected = reference_gradient(op, attrs, values, i, dout)
        assert_close(printed.reshape(np.shape(values[i])), expected, 1e-12, f"{op.name} rule for {op.operands[i]}")


# --- softmax_loss where mistakes hide -------------------------------------------------------

softmax_loss = REGISTRY["softmax_loss"]
MEAN, SUM = {"reduction": "mean"}, {"reduction": "sum"}

# Rows hundreds apart: a shift by the batch's max instead of each row's own
# underflows the smaller rows to 0/0.
FAR_APART = [[1000.0, 1001.5, 999.0], [-5.0, 0.0, 3.0], [-800.0, -801.0, -799.5], [1e4, -1e4, 0.0]]


@pytest.mark.parametrize("attrs", [MEAN, SUM], ids=["mean", "sum"])
@pytest.mark.parametrize("labels", ["one-hot", "indices"])
@pytest.mark.parametrize(
    "scores",
    [FAR_APART, FAR_APART[0], FAR_APART[2], FAR_APART[1], [[1.0, 2.0] * 20, [1000.0, -700.0] * 20]],
    ids=["rows-apart", "one-row-high", "one-row-low", "one-row", "many-classes"],
)
def test_softmax_loss_on_scores_of_every_scale(scores, labels, attrs):
    y = np.array(scores)
    index = np.arange(int(np.prod(y.shape[:-1], dtype=int))).reshape(y.shape[:-1]) % y.shape[-1]
    t = np.eye(y.shape[-1])[index] if labels == "one-hot" else index
    dout = np.array(0.75)
    loss, (dy, dt) = run(softmax_loss, attrs, [y, t], dout)
    assert dt is None
    assert_close(loss, float(ref_softmax_loss(attrs, dec(y), t)), 1e-15, "loss")
    assert_close(dy, reference_gradient(softmax_loss, attrs, [y, t], 0, dout), 1e-13, "d_y")


def test_softmax_loss_by_hand():
    """softmax([0, ln 2, ln 3]) = [1, 2, 3] / 6: the loss of class 2 is -ln(1/2), its gradient p - t."""
    for shift in (0.0, 1000.0, -1000.0):  # softmax does not see a shift of the whole row
        y = np.array([0.0, math.log(2), math.log(3)]) + shift
        loss, (dy, _) = run(softmax_loss, MEAN, [y, np.array(2)], np.array(1.0))
        assert loss == pytest.approx(math.log(2), rel=1e-12)
        np.testing.assert_allclose(dy, [1 / 6, 2 / 6, 3 / 6 - 1], rtol=1e-9)
    # Two rows, averaged: each counts a half, in the loss and in its gradient.
    y = np.array([[0.0, math.log(2), math.log(3)], [math.log(3), 0.0, math.log(2)]])
    loss, (dy, _) = run(softmax_loss, MEAN, [y, np.array([2, 0])], np.array(1.0))
    assert loss == pytest.approx(math.log(2), rel=1e-12)
    np.testing.assert_allclose(dy, [[1 / 12, 2 / 12, -3 / 12], [-3 / 12, 1 / 12, 2 / 12]], rtol=1e-9)
    loss, (dy, _) = run(softmax_loss, SUM, [y, np.array([2, 0])], np.array(1.0))
    assert loss == pytest.approx(2 * math.log(2), rel=1e-12)


def test_one_sample_is_a_batch_of_one():
    """[classes] scores: the loss and its gradient are those of the one row, not divided by anything."""
    y = np.array([0.5, -1.0, 2.0, 0.0])
    row = np.array([y])
    for attrs in (MEAN, SUM):
        loss, (dy, _) = run(softmax_loss, attrs, [y, np.array(1)], np.array(1.0))
        batch_loss, (batch_dy, _) = run(softmax_loss, attrs, [row, np.array([1])], np.array(1.0))
        assert loss == batch_loss
        np.testing.assert_array_equal(dy, batch_dy[0])
        expected = math.log(sum(math.exp(v) for v in y)) - y[1]
        assert loss == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("labels", ["one-hot", "indices"])
def test_softmax_loss_in_float32_against_the_reference(labels):
    y = np.array(FAR_APART, dtype=np.float32)
    t = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]] if labels == "one-hot" else np.array([0, 1, 2, 0])
    loss, (dy, _) = run(softmax_loss, MEAN, [y, t], np.array(1.0, np.float32))
    assert loss.dtype == np.float32 and dy.dtype == np.float32
    t64 = t.astype(np.float64) if labels == "one-hot" else t
    assert_close(loss, float(ref_softmax_loss(MEAN, dec(y), t64)), 1e-6, "f32 loss")
    expected = reference_gradient(softmax_loss, MEAN, [y.astype(np.float64), t64], 0, np.array(1.0))
    assert_close(dy, expected, 1e-6, "f32 d_y")


# --- ops that reduce, on one sample ------------------------------------------------------------


def test_affine_of_one_sample_against_the_reference():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal(4), rng.standard_normal((4, 3)), rng.standard_normal(3)
    dout = rng.standard_normal(3)
    affine = REGISTRY["affine"]
    out, (dx, dw, db) = run(affine, {}, [x, w, b], dout)
    assert_close(out, to_float(ref_affine({}, dec(x), dec(w), dec(b))), 1e-15, "out")
    np.testing.assert_array_equal(dw, np.outer(x, dout))  # each weight's gradient is one product
    np.testing.assert_array_equal(db, dout)  # nothing to sum over
    assert_close(dx, reference_gradient(affine, {}, [x, w, b], 0, dout), 1e-14, "dx")


def test_types_of_weak_scalars():
    assert REGISTRY["mul"].types_of({}, 2.0, np.float32([1, 2]))["out"] == TensorType("f32", (2,))


# --- when backward is wrong, gradcheck says so ---------------------------------------------


def test_gradcheck_reports_a_gradient_of_the_wrong_shape(tmp_path, monkeypatch, capsys):
    """A rule that forgets to sum back what broadcasting stretched: a failed check (exit 1)
    naming the tensor and both shapes, not an internal error."""
    from graphc.cli import main

    graph = tmp_path / "g.graph"
    graph.write_text(
        "graph g {\n    input x: [3, 4] = uniform(-1, 1)\n    param w: [4] = normal(1)\n"
        "    y = mul(x, w)\n    output y\n}\n"
    )
    mul = REGISTRY["mul"]
    monkeypatch.setattr(type(mul), "rules", {"a": "sum_to(dout * b, a)", "b": "dout * a"})
    assert main(["gradcheck", str(graph)]) == 1
    out = capsys.readouterr().out
    assert "FAIL: backprop gave a gradient of shape [3, 4] for `w` of shape [4]\n" in out
    assert "\nw         [4]      -                -                FAIL\n" in out
    assert main(["gradcheck", str(graph), "--json"]) == 1
    out = capsys.readouterr().out
    assert '"problem": "backprop gave a gradient of shape [3, 4] for `w` of shape [4]"' in out
    assert out.count('"problem"') == 1  # x's gradient is right

"""Every op in the registry, checked on its own: gradients against central
differences, shape rules against forward, dtypes, and the promise that backward
never writes into what it is given. Parametrized over graphc.ops.REGISTRY, so a
new op is tested the day it is added."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from graphc.ir import TensorType
from graphc.ops import REGISTRY, Op, Operand, ShapeError, StepCode

EPS = 1e-6


def _attr_choices(op: Op) -> list[dict[str, Any]]:
    """Every combination of the op's attribute choices (defaults where there are none)."""
    keys = list(op.attributes)
    options = [op.attributes[k].choices or (op.attributes[k].default,) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*options)]


def _cases() -> list:
    cases = []
    for op in REGISTRY.values():
        for shapes in op.examples:
            for attrs in _attr_choices(op):
                label = ",".join(f"{k}={v}" for k, v in attrs.items())
                ident = f"{op.name}-{'-'.join(str(list(s)) for s in shapes)}" + (f"-{label}" if label else "")
                cases.append(pytest.param(op, shapes, attrs, id=ident.replace(" ", "")))
    return cases


CASES = _cases()


def labels(op: Op, shapes, i: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Values for a non-differentiable operand: labels for the scores in operand 0.

    Same shape as the scores: one-hot rows. The scores' shape without its last
    dim: integer class indices.
    """
    scores, shape = tuple(shapes[0]), tuple(shapes[i])
    if not scores:
        pytest.fail(f"no rule for the values of operand `{op.operands[i]}` of `{op.name}`")
    classes = scores[-1]
    if shape == scores:
        return np.eye(classes, dtype=dtype)[rng.integers(0, classes, size=shape[:-1])]
    if shape == scores[:-1]:
        return rng.integers(0, classes, size=shape)
    pytest.fail(f"no rule for the values of operand `{op.operands[i]}` {list(shape)} of `{op.name}`")


def operand_values(op: Op, shapes, rng: np.random.Generator, dtype=np.float64) -> list[np.ndarray]:
    values = []
    for i, shape in enumerate(shapes):
        if op.differentiable(i):
            value = rng.standard_normal(shape)
            if op.operands[i] in op.positive:
                value = np.abs(value) + 0.5  # away from 0: log(x) and 1/b are defined and tame there
            values.append(np.asarray(value, dtype=dtype))
        else:
            values.append(labels(op, shapes, i, rng, dtype))
    return values


def step(op: Op, attrs, values, needs=None, taped=True) -> StepCode:
    """The op's functions for these values, as the interpreter gets them."""
    return op.compile(attrs, op.types_of(attrs, *values), taped=taped, needs=needs)


def forward(op: Op, attrs, *values):
    return step(op, attrs, values).forward(*values, *extras(op, attrs, values))


def extras(op: Op, attrs, values) -> tuple:
    """What forward takes after the operands: zero state, and a generator seeded
    alike every time, so that central differences hold dropout's mask fixed."""
    types = op.types_of(attrs, *values)
    state = tuple(np.zeros(types[like].shape) for like in op.state.values())
    return state + ((np.random.default_rng(0),) if op.random else ())


def backward(op: Op, attrs, values, saved, dout, needs=None):
    if needs is None:
        needs = needs_all(op)
    return step(op, attrs, values, needs).backward(saved, dout)


def numerical_gradient(op: Op, attrs, values: list[np.ndarray], i: int, dout: np.ndarray) -> np.ndarray:
    """d sum(forward * dout) / d values[i], by central differences in float64."""
    x = values[i].copy()
    args = list(values)
    args[i] = x
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + EPS
        plus = np.sum(forward(op, attrs, *args)[0] * dout)
        x[index] = original - EPS
        minus = np.sum(forward(op, attrs, *args)[0] * dout)
        x[index] = original
        grad[index] = (plus - minus) / (2 * EPS)
    return grad


def needs_all(op: Op) -> tuple[bool, ...]:
    return tuple(op.differentiable(i) for i in range(len(op.operands)))


def readonly(value):
    """value with every array in it made read-only, so a write raises."""
    if isinstance(value, np.ndarray):
        value = value.view()
        value.setflags(write=False)
        return value
    if isinstance(value, tuple):
        return tuple(readonly(v) for v in value)
    return value


def copies(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple):
        return tuple(copies(v) for v in value)
    return value


def assert_same(before, after) -> None:
    if isinstance(before, np.ndarray):
        np.testing.assert_array_equal(np.asarray(after), before, strict=True)
    elif isinstance(before, tuple):
        assert len(before) == len(after)
        for b, a in zip(before, after):
            assert_same(b, a)
    else:
        assert before == after


def _seed(*parts) -> int:
    return sum(ord(c) for c in repr(parts))


# --- the registry itself -----------------------------------------------------


def test_registry_holds_the_documented_ops():
    assert {"mul", "add", "relu", "sigmoid", "affine", "softmax_loss"} <= set(REGISTRY)


@pytest.mark.parametrize("op", REGISTRY.values(), ids=list(REGISTRY))
def test_op_is_complete(op: Op):
    """What every stage reads from an op is there and consistent."""
    assert REGISTRY[op.name] is op
    assert op.examples, f"{op.name} has no example shapes to test with"
    assert op.computes and all(f.startswith("out") for f in op.computes)
    for shapes in op.examples:
        assert len(shapes) == len(op.operands)
    assert set(op.rules) <= set(op.operands)
    assert set(op.passes_gradient_through) <= set(op.rules)
    assert set(op.labels) <= set(op.operands) - set(op.rules)  # labels get no gradient
    for attrs in _attr_choices(op):
        reads = set()
        for i, operand in enumerate(op.operands):
            if op.differentiable(i):
                assert "dout" in op.rule_formula(operand, attrs)
                reads.update(op.reads(i, attrs))
        assert reads <= set(op.saves)  # every choice of attributes reads only what forward saves
    assert set(op.saves) == {
        item for i in range(len(op.operands)) if op.differentiable(i) for item in op.reads(i, _attr_choices(op)[0])
    }


# --- gradients ---------------------------------------------------------------


@pytest.mark.parametrize("op, shapes, attrs", CASES)
def test_backward_matches_central_differences(op: Op, shapes, attrs):
    rng = np.random.default_rng(_seed(op.name, shapes, attrs))
    values = operand_values(op, shapes, rng)
    out, saved = forward(op, attrs, *values)
    dout = rng.standard_normal(np.shape(out))
    grads = backward(op, attrs, values, saved, dout)
    assert len(grads) == len(op.operands)
    for i, grad in enumerate(grads):
        if not op.differentiable(i):
            assert grad is None, f"{op.name} returned a gradient for `{op.operands[i]}`"
            continue
        assert np.shape(grad) == np.shape(values[i]), op.operands[i]
        expected = numerical_gradient(op, attrs, values, i, dout)
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8, err_msg=f"d{op.operands[i]}")


@pytest.mark.parametrize("op, shapes, attrs", CASES)
def test_backward_computes_only_what_is_needed(op: Op, shapes, attrs):
    rng = np.random.default_rng(_seed(op.name, shapes))
    values = operand_values(op, shapes, rng)
    out, saved = forward(op, attrs, *values)
    dout = rng.standard_normal(np.shape(out))
    full = backward(op, attrs, values, saved, dout)
    for i in range(len(op.operands)):
        if not op.differentiable(i):
            continue
        needs = tuple(j == i for j in range(len(op.operands)))
        grads = backward(op, attrs, values, saved, dout, needs)
        np.testing.assert_array_equal(grads[i], full[i])
        if len(op.operands) > 1:
            assert all(g is None for j, g in enumerate(grads) if j != i), f"{op.name} needs={needs}"


@pytest.mark.parametrize("op, shapes, attrs", CASES)
def test_never_writes_into_its_inputs_dout_or_saved(op: Op, shapes, attrs):
    """A gradient shared by two consumers must come through backward untouched."""
    rng = np.random.default_rng(_seed(op.name, shapes, "ro"))
    values = operand_values(op, shapes, rng)
    inputs_before = copies(tuple(values))
    out, saved = forward(op, attrs, *readonly(tuple(values)))
    assert_same(inputs_before, tuple(values))
    dout = rng.standard_normal(np.shape(out))
    dout_before, saved_before = dout.copy(), copies(saved)
    # Read-only arrays make an in-place write raise; the copies catch anything else.
    backward(op, attrs, values, readonly(saved), readonly(dout))
    backward(op, attrs, values, saved, dout)
    np.testing.assert_array_equal(dout, dout_before)
    assert_same(saved_before, saved)


# --- shape rules and dtypes ----------------------------------------------------


def _operands(op: Op, shapes, dtype: str) -> list[Operand]:
    result = []
    for i, (name, shape) in enumerate(zip(op.operands, shapes)):
        labelled = not op.differentiable(i) and tuple(shape) != tuple(shapes[0])
        result.append(Operand(name, TensorType("i64" if labelled else dtype, tuple(shape))))
    return result


@pytest.mark.parametrize("op, shapes, attrs", CASES)
@pytest.mark.parametrize("dtype", ["f64", "f32"])
def test_shape_rule_agrees_with_forward(op: Op, shapes, attrs, dtype):
    numpy_dtype = {"f64": np.float64, "f32": np.float32}[dtype]
    rng = np.random.default_rng(_seed(op.name, shapes))
    values = operand_values(op, shapes, rng, numpy_dtype)
    inferred = op.infer(_operands(op, shapes, dtype), attrs)
    out, saved = forward(op, attrs, *values)
    assert inferred == TensorType(dtype, np.shape(out))
    assert np.asarray(out).dtype == numpy_dtype
    dout = np.ones(np.shape(out), numpy_dtype)
    for i, grad in enumerate(backward(op, attrs, values, saved, dout)):
        if grad is not None:
            assert np.asarray(grad).dtype == numpy_dtype, f"{op.name}: d{op.operands[i]} is {np.asarray(grad).dtype}"


@pytest.mark.parametrize("op", [op for op in REGISTRY.values() if op.broadcasts], ids=lambda op: op.name)
def test_broadcasting_ops_name_both_operands_when_shapes_clash(op: Op):
    a = Operand("x", TensorType("f64", ("N", 4)))
    b = Operand("y", TensorType("f64", (5,)))
    with pytest.raises(ShapeError) as info:
        op.infer([a, b], {})
    assert str(info.value) == (f"shape mismatch in `{op.name}`: cannot broadcast `x` [N, 4] with `y` [5] (dim 4 vs 5)")
    assert info.value.operand == 1


@pytest.mark.parametrize("op", [op for op in REGISTRY.values() if op.broadcasts], ids=lambda op: op.name)
def test_broadcasting_keeps_symbolic_dims(op: Op):
    a = Operand("x", TensorType("f32", ("N", 1, 3)))
    b = Operand("y", TensorType("f32", (4, 1)))
    assert op.infer([a, b], {}) == TensorType("f32", ("N", 4, 3))


@pytest.mark.parametrize(
    "op", [op for op in REGISTRY.values() if len(op.operands) > 1 and op.name != "softmax_loss"], ids=lambda op: op.name
)
def test_mixed_float_dtypes_are_an_error(op: Op):
    shapes = op.examples[0]
    operands = _operands(op, shapes, "f64")
    operands[1] = Operand(operands[1].name, TensorType("f32", operands[1].type.shape))
    with pytest.raises(ShapeError) as info:
        op.infer(operands, {})
    assert str(info.value) == f"dtype mismatch in `{op.name}`: `{operands[0].name}` is f64, `{operands[1].name}` is f32"
    assert info.value.operand == 1


# --- broadcasting, by property -------------------------------------------------

_BROADCASTING = [op for op in REGISTRY.values() if op.broadcasts]


@st.composite
def broadcast_operands(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
    elements = st.floats(-10, 10, allow_nan=False, allow_subnormal=False)
    a = draw(hnp.arrays(np.float64, shapes[0], elements=elements))
    b = draw(hnp.arrays(np.float64, shapes[1], elements=elements))
    return a, b


@pytest.mark.parametrize("op", _BROADCASTING, ids=lambda op: op.name)
@settings(max_examples=60, deadline=None)
@given(operands=broadcast_operands(), data=st.data())
def test_broadcasting_gradients(op: Op, operands, data):
    a, b = operands
    if "b" in op.positive:
        b = np.asarray(np.abs(b) + 0.5)  # div's b away from 0
    out, saved = forward(op, {}, a, b)
    assert np.shape(out) == np.broadcast_shapes(a.shape, b.shape)
    inferred = op.infer([Operand("a", TensorType("f64", a.shape)), Operand("b", TensorType("f64", b.shape))], {})
    assert inferred.shape == np.shape(out)
    dout = data.draw(hnp.arrays(np.float64, np.shape(out), elements=st.floats(-3, 3, allow_subnormal=False)))
    da, db = backward(op, {}, [a, b], saved, dout)
    for i, (value, grad) in enumerate([(a, da), (b, db)]):
        assert np.shape(grad) == value.shape
        np.testing.assert_allclose(grad, numerical_gradient(op, {}, [a, b], i, dout), rtol=1e-6, atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=1, max_dims=4, max_side=4))
def test_add_sums_its_gradient_back_to_each_operands_shape(shapes):
    """add's rule sum_to(dout, a): whatever broadcasting stretched or added is summed."""
    (shape,), target = shapes.input_shapes, shapes.result_shape
    add = REGISTRY["add"]
    a, b = np.zeros(shape), np.zeros(target)
    out, saved = forward(add, {}, a, b)
    da, db = backward(add, {}, [a, b], saved, np.ones(target))
    assert da.shape == shape and db.shape == target
    np.testing.assert_array_equal(da, np.full(shape, np.prod(target) / max(np.prod(shape), 1)))
    np.testing.assert_array_equal(db, np.ones(target))


# --- numerics at the edges -------------------------------------------------------

sigmoid = REGISTRY["sigmoid"]
softmax_loss = REGISTRY["softmax_loss"]
relu = REGISTRY["relu"]
MEAN, SUM = {"reduction": "mean"}, {"reduction": "sum"}


def strict():
    """Overflow, division by zero and invalid values raise; underflow to 0 is exact here."""
    return np.errstate(over="raise", divide="raise", invalid="raise", under="ignore")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_is_stable_and_exact_at_the_limits(dtype):
    x = np.array([-1e4, -1000, -50, 0, 50, 1000, 1e4], dtype=dtype)
    with warnings.catch_warnings(), strict():
        warnings.simplefilter("error")
        out, saved = forward(sigmoid, {}, x)
        (dx,) = backward(sigmoid, {}, [x], saved, np.ones_like(x))
    assert out.dtype == dtype
    assert out[0] == 0.0 and out[-1] == 1.0
    assert out[3] == 0.5
    assert np.all(np.isfinite(dx))
    assert dx[0] == 0.0 and dx[-1] == 0.0 and dx[3] == 0.25


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-1e4, 1e4))
def test_sigmoid_is_symmetric_and_bounded(x):
    with warnings.catch_warnings(), strict():
        warnings.simplefilter("error")
        pos = forward(sigmoid, {}, np.array(x))[0]
        neg = forward(sigmoid, {}, np.array(-x))[0]
    assert 0.0 <= pos <= 1.0
    assert pos + neg == pytest.approx(1.0, abs=1e-15)


def test_softmax_loss_with_huge_logits_is_finite():
    y = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]])
    t = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # both rows bet everything on a wrong class
    with warnings.catch_warnings(), strict():
        warnings.simplefilter("error")
        loss, saved = forward(softmax_loss, MEAN, y, t)
        dy, dt = backward(softmax_loss, MEAN, [y, t], saved, np.array(1.0))
    assert loss == pytest.approx(2e4, rel=1e-12)
    assert dt is None
    np.testing.assert_allclose(dy, [[0.5, -0.5, 0.0], [-0.5, 0.5, 0.0]], rtol=0, atol=1e-15)


def test_softmax_loss_of_a_sure_right_answer_is_zero():
    y = np.array([[1e4, -1e4]])
    with strict():
        loss, _ = forward(softmax_loss, MEAN, y, np.array([0]))
    assert loss == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(5, 4), (4,)], ids=["batch", "one-sample"])
def test_one_hot_and_class_index_labels_agree(reduction, shape):
    rng = np.random.default_rng(7)
    y = rng.standard_normal(shape) * 3
    index = rng.integers(0, shape[-1], size=shape[:-1])
    onehot = np.eye(shape[-1])[index]
    attrs = {"reduction": reduction}
    loss_a, saved_a = forward(softmax_loss, attrs, y, onehot)
    loss_b, saved_b = forward(softmax_loss, attrs, y, index)
    assert loss_a == pytest.approx(float(loss_b), rel=1e-12)
    dy_a, _ = backward(softmax_loss, attrs, [y, onehot], saved_a, np.array(1.0))
    dy_b, _ = backward(softmax_loss, attrs, [y, index], saved_b, np.array(1.0))
    np.testing.assert_allclose(dy_a, dy_b, rtol=1e-12, atol=1e-15)


def test_softmax_loss_sum_is_batch_size_times_mean():
    rng = np.random.default_rng(3)
    y = rng.standard_normal((6, 5))
    t = np.eye(5)[rng.integers(0, 5, size=6)]
    mean, saved_mean = forward(softmax_loss, MEAN, y, t)
    total, saved_sum = forward(softmax_loss, SUM, y, t)
    assert total == pytest.approx(6 * mean, rel=1e-12)
    probs = np.exp(y) / np.exp(y).sum(axis=1, keepdims=True)
    assert total == pytest.approx(-np.sum(t * np.log(probs)), rel=1e-12)
    dy_mean, _ = backward(softmax_loss, MEAN, [y, t], saved_mean, np.array(1.0))
    dy_sum, _ = backward(softmax_loss, SUM, [y, t], saved_sum, np.array(1.0))
    np.testing.assert_allclose(dy_sum, probs - t, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dy_mean, (probs - t) / 6, rtol=1e-12, atol=1e-15)


def test_softmax_loss_rule_text_drops_the_batch_division_for_sum():
    names = {"y": "y", "t": "t", "dout": "d_loss", "out": "loss"}
    types = {"y": TensorType("f64", ("N", 3)), "t": TensorType("f64", ("N", 3)), "out": TensorType("f64", ())}
    assert softmax_loss.rule(0, names, MEAN, types) == "d_loss * (softmax(y) - t) / N"
    assert softmax_loss.rule(0, names, SUM, types) == "d_loss * (softmax(y) - t)"


def test_relu_passes_gradient_only_where_the_input_was_positive():
    x = np.array([-2.0, -0.0, 0.0, 1e-300, 3.0])
    out, saved = forward(relu, {}, x)
    np.testing.assert_array_equal(out, [0, 0, 0, 1e-300, 3.0])
    (dx,) = backward(relu, {}, [x], saved, np.full(5, 7.0))
    np.testing.assert_array_equal(dx, [0, 0, 0, 7.0, 7.0])


@pytest.mark.parametrize("label_dtype", [np.int64, np.float32])
def test_float32_scores_get_a_float32_gradient_whatever_the_label_dtype(label_dtype):
    y = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], dtype=np.float32)
    t = np.array([[0, 0, 1], [1, 0, 0]], dtype=label_dtype)
    t_type = TensorType("i64" if label_dtype == np.int64 else "f32", (2, 3))
    inferred = softmax_loss.infer(
        [Operand("y", TensorType("f32", (2, 3))), Operand("t", t_type)], {"reduction": "mean"}
    )
    assert inferred == TensorType("f32", ())
    loss, saved = forward(softmax_loss, MEAN, y, t)
    dy, _ = backward(softmax_loss, MEAN, [y, t], saved, np.array(1.0, np.float32))
    assert loss.dtype == np.float32
    assert dy.dtype == np.float32


def test_relu_of_negative_infinity_and_negative_zero_is_zero():
    x = np.array([-np.inf, -0.0, -3.0, np.inf])
    out, saved = forward(relu, {}, x)
    np.testing.assert_array_equal(out, [0, 0, 0, np.inf])
    assert not np.signbit(out).any()  # no -0.0
    (dx,) = backward(relu, {}, [x], saved, np.ones(4))
    np.testing.assert_array_equal(dx, [0, 0, 0, 1])


def test_relu_source_is_the_interpreters_arithmetic():
    v = {"x": "h", "out": "r", "mask": "r_mask"}
    types = {"x": TensorType("f64", (3,)), "out": TensorType("f64", (3,))}
    assert relu.forward_source(v, {}, types, taped=False) == ["r = np.maximum(h, 0)"]
    assert relu.forward_source(v, {}, types, taped=True) == ["r_mask = h > 0", "r = np.maximum(h, 0)"]


def test_relus_rule_names_the_mask_it_reads():
    types = {"x": TensorType("f64", (3,)), "out": TensorType("f64", (3,))}
    assert relu.reads(0, {}) == ("mask",)
    assert relu.rule(0, {"x": "h", "mask": "r.mask", "dout": "d_r", "out": "r"}, {}, types) == "d_r * r.mask"


@pytest.mark.parametrize("op", [op for op in REGISTRY.values()], ids=list(REGISTRY))
def test_every_operand_but_labels_must_be_a_float(op: Op):
    shapes = op.examples[0]
    for i in range(len(op.operands)):
        if op.name == "softmax_loss" and i == 1:
            continue  # class indices
        operands = _operands(op, shapes, "f64")
        operands[i] = Operand(operands[i].name, TensorType("i64", operands[i].type.shape))
        with pytest.raises(ShapeError) as info:
            op.infer(operands, {k: a.default for k, a in op.attributes.items()})
        assert info.value.operand == i and str(info.value).endswith(f"`{op.operands[i]}` is i64")


def test_weak_scalars_adapt_and_alone_make_a_weak_result():
    mul = REGISTRY["mul"]
    weak = Operand("0.5", TensorType(None, ()))
    assert mul.infer([Operand("x", TensorType("f32", (3,))), weak], {}) == TensorType("f32", (3,))
    assert mul.infer([weak, weak], {}) == TensorType(None, ())  # shape inference gives it its readers' dtype


def test_value_types_as_graphc_writes_them():
    from graphc.ops import value_type

    assert value_type(0.5) == TensorType(None, ())  # a Python float is weak
    assert value_type(np.zeros((2, 3))) == TensorType("f64", (2, 3))
    assert value_type(np.float32([1, 2])) == TensorType("f32", (2,))
    assert value_type(np.array([1, 2])) == TensorType("i64", (2,))
    assert value_type(np.array(True)) == TensorType("bool", ())
    assert value_type(np.float64(2.0)) == TensorType("f64", ())  # a numpy scalar is not weak


def test_types_of_runs_the_shape_rule():
    mul = REGISTRY["mul"]
    assert mul.types_of({}, np.zeros((2, 3)), 0.5) == {
        "a": TensorType("f64", (2, 3)),
        "b": TensorType(None, ()),
        "out": TensorType("f64", (2, 3)),
    }
    with pytest.raises(ShapeError) as info:
        mul.types_of({}, np.zeros(3), np.zeros(4))
    assert str(info.value) == "shape mismatch in `mul`: cannot broadcast `a` [3] with `b` [4] (dim 3 vs 4)"
    loss = REGISTRY["softmax_loss"].types_of({"reduction": "sum"}, np.zeros((2, 3)), np.array([0, 1]))
    assert loss["out"] == TensorType("f64", ())


# --- shape rules: every refusal, with its message and the operand it points at --------------


def _refusal(op_name: str, *types: TensorType, attrs=None) -> tuple[str, int | None]:
    op = REGISTRY[op_name]
    names = iter(["x1", "x2", "x3"])
    with pytest.raises(ShapeError) as info:
        op.infer([Operand(next(names), t) for t in types], attrs or {k: a.default for k, a in op.attributes.items()})
    return str(info.value), info.value.operand


F64 = "f64"


@pytest.mark.parametrize(
    "op_name, types, message, operand",
    [
        ("relu", [TensorType("i64", (3,))], "`relu` needs a float operand, `x1` is i64", 0),
        ("sigmoid", [TensorType("i64", ())], "`sigmoid` needs a float operand, `x1` is i64", 0),
        (
            "affine",
            [TensorType(F64, (2, 3)), TensorType(F64, (3,)), TensorType(F64, (3,))],
            "affine: `x2` must be a matrix, got shape [3]",
            1,
        ),
        (
            "affine",
            [TensorType(F64, ()), TensorType(F64, (3, 2)), TensorType(F64, (2,))],
            "affine: `x1` must have at least one dim, got a scalar",
            0,
        ),
        (
            "affine",
            [TensorType(F64, ("N", "M", 2)), TensorType(F64, (6, 3)), TensorType(F64, (3,))],
            "shape mismatch in `affine`: `x1` has M*2 features, `x2` expects 6 (`x1` is [N, M, 2], `x2` is [6, 3])",
            1,
        ),
        (
            "affine",
            [TensorType(F64, ("N", 4)), TensorType(F64, (4, 3)), TensorType(F64, (2,))],
            "shape mismatch in `affine`: bias `x3` [2] does not fit x·W [N, 3]",
            2,
        ),
        (
            "affine",
            [TensorType(F64, ("N", 4)), TensorType(F64, (4, 3)), TensorType(F64, (5, 3))],
            "shape mismatch in `affine`: bias `x3` [5, 3] does not fit x·W [N, 3]",
            2,
        ),
        (
            "affine",
            [TensorType(F64, (4,)), TensorType(F64, (4, 3)), TensorType(F64, (2, 3))],
            "shape mismatch in `affine`: bias `x3` [2, 3] does not fit x·W [3]",  # it would stretch x·W
            2,
        ),
        (
            "softmax_loss",
            [TensorType("i64", (2, 3)), TensorType(F64, (2, 3))],
            "`softmax_loss` needs float scores, `x1` is i64",
            0,
        ),
        (
            "softmax_loss",
            [TensorType(F64, (2, 3, 4)), TensorType(F64, (2, 3, 4))],
            "softmax_loss: scores `x1` must be [N, classes] or [classes], got [2, 3, 4]",
            0,
        ),
        (
            "softmax_loss",
            [TensorType(F64, ()), TensorType(F64, ())],
            "softmax_loss: scores `x1` must be [N, classes] or [classes], got []",
            0,
        ),
        (
            "softmax_loss",
            [TensorType("f32", ("N", 3)), TensorType(F64, ("N", 3))],
            "dtype mismatch in `softmax_loss`: `x1` is f32, `x2` is f64",
            1,
        ),
        (
            "softmax_loss",
            [TensorType(F64, ("N", 3)), TensorType("i64", ("N", 2))],
            "shape mismatch in `softmax_loss`: labels `x2` [N, 2] fit neither one-hot [N, 3] "
            "nor class indices [N] for scores `x1`",
            1,
        ),
        (
            "softmax_loss",
            [TensorType(F64, (3,)), TensorType("i64", (1,))],
            "shape mismatch in `softmax_loss`: labels `x2` [1] fit neither one-hot [3] "
            "nor class indices [] for scores `x1`",
            1,
        ),
    ],
)
def test_shape_rules_refuse_with_a_message_at_the_operand(op_name, types, message, operand):
    assert _refusal(op_name, *types) == (message, operand)


def test_shape_rules_accept():
    affine, loss = REGISTRY["affine"], REGISTRY["softmax_loss"]
    operands = [Operand("x", TensorType(F64, ("N", 2, 3))), Operand("W", TensorType(F64, (6, 4)))]
    assert affine.infer(operands + [Operand("b", TensorType(F64, (1, 4)))], {}) == TensorType(F64, ("N", 4))
    assert affine.infer(operands + [Operand("b", TensorType(None, ()))], {}) == TensorType(F64, ("N", 4))
    mean = {"reduction": "mean"}
    labels = Operand("t", TensorType("i64", ("N", 3)))  # one-hot rows of integers: welcome
    assert loss.infer([Operand("y", TensorType("f32", ("N", 3))), labels], mean) == TensorType("f32", ())
    assert loss.infer([Operand("y", TensorType(None, (3,))), Operand("t", TensorType(None, (3,)))], mean) == (
        TensorType(None, ())  # scores of consts without a dtype: weak, as they are
    )


def test_a_compiled_step_is_the_generated_modules_source_with_the_ops_own_names():
    mul = REGISTRY["mul"]
    types = {"a": TensorType("f64", ("N", 3)), "b": TensorType("f64", (3,)), "out": TensorType("f64", ("N", 3))}
    code = mul.compile({}, types, needs=(False, True))
    assert code.source == (
        "def forward(a, b):\n"
        "    out = a * b\n"
        "    return out, (a, b,)\n"
        "\n"
        "\n"
        "def backward(saved, dout):\n"
        "    a, b, = saved\n"
        "    return (None, (dout * a).sum(axis=0),)\n"
    )
    assert mul.compile({}, types, taped=False).source.startswith(
        "def forward(a, b):\n    out = a * b\n    return out, None\n"
    )

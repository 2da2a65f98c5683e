"""The op registry: each op defined once, in one class.

An op class holds everything every stage needs to know about it: its operands
and attributes (for the checker), its shape rule (for shape inference), its
forward and backward (for the interpreter and code generator), what backward
reads from the forward pass (for the plan and memory accounting), and its
local gradient rule written out (for plans and diagrams).

forward(attrs, *inputs) returns (output, saved); backward(attrs, saved, dout,
needs) returns one gradient per operand, None where `needs` says it is not
wanted. Backward never writes into `dout` or into anything in `saved`: a
gradient can be shared by several consumers in a DAG.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from graphc.ir import Dim, TensorType, shape_text


class ShapeError(Exception):
    """An operand does not fit the op; shape inference adds the source position."""

    def __init__(self, message: str, operand: int | None = None):
        super().__init__(message)
        self.operand = operand


@dataclass(frozen=True)
class Attribute:
    default: Any
    choices: tuple[str, ...] | None = None
    doc: str = ""


@dataclass(frozen=True)
class Rule:
    text: str
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operand:
    """An operand as shape inference sees it: its value's name and type."""

    name: str
    type: TensorType


class Op:
    name: ClassVar[str]
    operands: ClassVar[tuple[str, ...]]
    attributes: ClassVar[dict[str, Attribute]] = {}
    math: ClassVar[str]  # the forward, in one line
    # The local gradient of each differentiable operand: how it reads, in
    # terms of `dout`, the operands and `out`, and what it reads from the
    # forward pass: operand names, "out", or a tensor of the op's own
    # (relu's "mask", softmax_loss's "probs").
    rules: ClassVar[dict[str, Rule]]
    # Elementwise ops broadcast their operands; backward sums the gradient
    # back to each operand's shape.
    broadcasts: ClassVar[bool] = False
    # Operands whose gradient may be `dout` itself (add's are, when nothing
    # was broadcast): such a gradient must never be added into in place.
    passes_gradient_through: ClassVar[tuple[str, ...]] = ()
    # Operand shapes for the registry-wide gradient test, broadcasting included.
    examples: ClassVar[tuple[tuple[tuple[int, ...], ...], ...]]

    def infer(self, args: Sequence[Operand], attrs: dict[str, Any]) -> TensorType:
        raise NotImplementedError

    def forward(self, attrs: dict[str, Any], *xs: np.ndarray) -> tuple[np.ndarray, tuple]:
        raise NotImplementedError

    def backward(
        self, attrs: dict[str, Any], saved: tuple, dout: np.ndarray, needs: tuple[bool, ...]
    ) -> tuple[np.ndarray | None, ...]:
        raise NotImplementedError

    @functools.cached_property
    def saves(self) -> tuple[str, ...]:
        """Everything backward reads from the forward pass, operands first."""
        items = dict.fromkeys(item for rule in self.rules.values() for item in rule.reads)
        return tuple(
            sorted(items, key=lambda item: self.operands.index(item) if item in self.operands else len(self.operands))
        )

    def differentiable(self, operand: int) -> bool:
        return self.operands[operand] in self.rules

    def rule(self, operand: int, names: dict[str, str], attrs: dict[str, Any]) -> str:
        """The local rule for operand's gradient, names substituted."""
        return self.rules[self.operands[operand]].text.format(**names)

    def own_tensor_type(self, item: str, types: dict[str, TensorType]) -> TensorType:
        """The type of a tensor of the op's own that backward reads ("mask"),
        from `types` of the operands and "out"; for memory planning."""
        raise KeyError(f"{self.name} saves no tensor `{item}`")

    # --- code generation (graphc.codegen) ---------------------------------
    # The op as numpy source. `v` maps the operand names, "out", "dout" and
    # the op's own tensors ("mask") to Python expressions; `types` maps the
    # operand names and "out" to their types. `helpers` are the functions of
    # this module the source calls; codegen copies their source text into the
    # generated module, so it runs the interpreter's very arithmetic.
    helpers: ClassVar[tuple[Callable, ...]] = ()

    def forward_source(
        self, v: dict[str, str], attrs: dict[str, Any], types: dict[str, TensorType], taped: bool
    ) -> list[str]:
        """Lines that set `v["out"]` (and, when taped, the own tensors backward reads)."""
        raise NotImplementedError(f"op `{self.name}` cannot be written as Python source")

    def grad_source(self, operand: int, v: dict[str, str], attrs: dict[str, Any], types: dict[str, TensorType]) -> str:
        """An expression for the operand's gradient, already summed to its shape."""
        raise NotImplementedError(f"op `{self.name}` cannot be written as Python source")

    def __repr__(self) -> str:
        return f"<op {self.name}>"


REGISTRY: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    REGISTRY[cls.name] = cls()
    return cls


# --- shape helpers -----------------------------------------------------------


def _describe(arg: Operand) -> str:
    return f"`{arg.name}` {arg.type.shape_text()}"


def _floats(op: str, args: Sequence[Operand], what: str = "float operands") -> None:
    """Ops compute in floats: only softmax_loss's labels may be i64 (class indices)."""
    for i, a in enumerate(args):
        if a.type.dtype == "i64":
            raise ShapeError(f"`{op}` needs {what}, `{a.name}` is i64", i)


def _result_dtype(op: str, args: Sequence[Operand], what: str = "float operands") -> str:
    """The operands' common float dtype. A weak scalar (dtype None) adapts to
    the others, as numpy's Python floats do; with nothing else, f64."""
    _floats(op, args, what)
    strong = [a for a in args if a.type.dtype is not None]
    for a in strong[1:]:
        if a.type.dtype != strong[0].type.dtype:
            raise ShapeError(
                f"dtype mismatch in `{op}`: `{strong[0].name}` is {strong[0].type.dtype}, `{a.name}` is {a.type.dtype}",
                args.index(a),
            )
    return strong[0].type.dtype if strong else "f64"


def broadcast(op: str, a: Operand, b: Operand) -> tuple[Dim, ...]:
    """numpy's broadcasting rule over symbolic dims: equal, or one of them 1."""
    sa, sb = a.type.shape, b.type.shape
    out: list[Dim] = []
    for i in range(1, max(len(sa), len(sb)) + 1):
        da = sa[-i] if i <= len(sa) else 1
        db = sb[-i] if i <= len(sb) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(
                f"shape mismatch in `{op}`: cannot broadcast {_describe(a)} with {_describe(b)} (dim {da} vs {db})",
                1,
            )
    return tuple(reversed(out))


def sum_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo broadcasting: sum grad over the axes that broadcasting added or stretched."""
    if np.shape(grad) == shape:
        return grad
    lead = np.ndim(grad) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    return np.sum(grad, axis=axes, keepdims=True).reshape(shape)


def sum_to_source(expr: str, shape: Sequence[Dim], target: Sequence[Dim]) -> str:
    """`sum_to` as source, its axes found from the types: `d_h.sum(axis=0)`.

    A dim 1 in `target` against any other dim (a symbol included) was
    stretched; numpy gives the same sums if a symbol turns out to be 1.
    """
    lead = len(shape) - len(target)
    added = tuple(range(lead))
    stretched = tuple(i for i, d in enumerate(target) if d == 1 and shape[lead + i] != 1)
    if not added and not stretched:
        return expr
    base = expr if expr.isidentifier() else f"({expr})"
    if added:
        base += ".sum()" if lead == len(shape) else f".sum(axis={_axes_text(added)})"
    if stretched:
        base += f".sum(axis={_axes_text(stretched)}, keepdims=True)"
    return base


def _axes_text(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else str(axes)


# --- numpy kernels ----------------------------------------------------------
# Shared by the ops below and by generated modules, which get a copy of their
# source: each is plain numpy and reads nothing else from this module.


def sigmoid(x):
    """1 / (1 + exp(-x)), computed stably."""
    # exp of -|x| never overflows; both branches of the logistic follow from it.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(e.dtype, copy=False)


def softmax_cross_entropy(y, t, mean=True):
    """Cross-entropy of softmax(y) against labels t, and softmax(y).

    t is one-hot rows shaped like y, or class indices. The loss is averaged
    over the batch when `mean`, else summed.
    """
    # log-softmax by log-sum-exp: shifting by the max keeps exp finite.
    # numpy reduces short rows one at a time; across a transposed copy it
    # reduces them all at once (4x faster for 10 classes).
    if y.ndim == 2 and y.shape[1] < 32:
        z = y - y.T.copy().max(axis=0)[:, None]
    else:
        z = y - y.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    # Row sums as one product with ones: a BLAS call, not a reduction per row.
    total = probs @ np.ones((probs.shape[-1], 1), probs.dtype)
    probs /= total
    log_total = np.log(total)
    n = y.shape[0] if y.ndim == 2 else 1
    if t.shape == y.shape:
        loss = -np.sum(t.astype(z.dtype, copy=False) * (z - log_total))  # i64 one-hot labels too
    elif y.ndim == 2:  # class indices: -log p of each row's class is log_total - z there
        loss = log_total.sum() - z[np.arange(n), t].sum()
    else:
        loss = log_total[0] - z[t]
    if mean:
        loss = loss / n
    return np.asarray(loss, dtype=y.dtype), probs


def softmax_cross_entropy_backward(probs, t, dout, mean=True):
    """d loss / d y from the saved softmax(y): dout * (softmax(y) - t) / N."""
    if t.shape == probs.shape:
        grad = probs - t.astype(probs.dtype, copy=False)  # i64 one-hot labels must not make f32 into f64
    else:
        grad = probs.copy()
        if probs.ndim == 2:
            grad[np.arange(len(t)), t] -= 1
        else:
            grad[t] -= 1
    n = probs.shape[0] if probs.ndim == 2 else 1
    # d(mean loss)/dy = (softmax(y) - t) / N: each row's loss counts 1/N.
    grad *= dout / n if mean else dout
    return grad


# --- the ops -----------------------------------------------------------------


class _Elementwise2(Op):
    operands = ("a", "b")
    broadcasts = True
    examples = (((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)), ((), (2, 3)))

    def infer(self, args, attrs):
        a, b = args
        dtype = _result_dtype(self.name, args)
        return TensorType(dtype, broadcast(self.name, a, b))


@register
class Mul(_Elementwise2):
    name = "mul"
    math = "out = a * b"
    rules = {"a": Rule("{dout} * {b}", ("b",)), "b": Rule("{dout} * {a}", ("a",))}

    def forward(self, attrs, a, b):
        return a * b, (a, b)

    def backward(self, attrs, saved, dout, needs):
        a, b = saved
        da = sum_to(dout * b, np.shape(a)) if needs[0] else None
        db = sum_to(dout * a, np.shape(b)) if needs[1] else None
        return da, db

    def forward_source(self, v, attrs, types, taped):
        return [f"{v['out']} = {v['a']} * {v['b']}"]

    def grad_source(self, operand, v, attrs, types):
        mine, other = ("a", "b") if operand == 0 else ("b", "a")
        return sum_to_source(f"{v['dout']} * {v[other]}", types["out"].shape, types[mine].shape)


@register
class Add(_Elementwise2):
    name = "add"
    math = "out = a + b"
    passes_gradient_through = ("a", "b")
    # Backward keeps only the operands' shapes, to undo broadcasting.
    rules = {"a": Rule("{dout}"), "b": Rule("{dout}")}

    def forward(self, attrs, a, b):
        return a + b, (np.shape(a), np.shape(b))

    def backward(self, attrs, saved, dout, needs):
        shape_a, shape_b = saved
        # The gradient passes through unchanged; where it is not reduced it is
        # `dout` itself, which the interpreter knows not to write into.
        da = sum_to(dout, shape_a) if needs[0] else None
        db = sum_to(dout, shape_b) if needs[1] else None
        return da, db

    def forward_source(self, v, attrs, types, taped):
        return [f"{v['out']} = {v['a']} + {v['b']}"]

    def grad_source(self, operand, v, attrs, types):
        return sum_to_source(v["dout"], types["out"].shape, types[self.operands[operand]].shape)


class _Elementwise1(Op):
    operands = ("x",)
    examples = (((3, 4),), ((5,),), ((),), ((2, 3, 2),))

    def infer(self, args, attrs):
        (x,) = args
        return TensorType(_result_dtype(self.name, args, "a float operand"), x.type.shape)


@register
class Relu(_Elementwise1):
    name = "relu"
    math = "out = max(x, 0)"
    # mask is `x > 0`, kept from forward: a bool a value instead of x itself.
    rules = {"x": Rule("{dout} * {mask}", ("mask",))}

    def forward(self, attrs, x):
        # np.maximum, not x * mask: -inf gives 0 rather than NaN, and -0.0 gives 0.
        return np.maximum(x, 0), (x > 0,)

    def backward(self, attrs, saved, dout, needs):
        (mask,) = saved
        return (dout * mask,)

    def own_tensor_type(self, item, types):
        if item != "mask":
            return super().own_tensor_type(item, types)
        return TensorType("bool", types["out"].shape)  # one byte a value

    def forward_source(self, v, attrs, types, taped):
        lines = [f"{v['mask']} = {v['x']} > 0"] if taped else []
        return lines + [f"{v['out']} = np.maximum({v['x']}, 0)"]

    def grad_source(self, operand, v, attrs, types):
        return f"{v['dout']} * {v['mask']}"


@register
class Sigmoid(_Elementwise1):
    name = "sigmoid"
    math = "out = 1 / (1 + exp(-x))"
    rules = {"x": Rule("{dout} * {out} * (1 - {out})", ("out",))}

    helpers = (sigmoid,)

    def forward(self, attrs, x):
        out = sigmoid(x)
        return out, (out,)

    def backward(self, attrs, saved, dout, needs):
        (out,) = saved
        return (dout * out * (1 - out),)

    def forward_source(self, v, attrs, types, taped):
        return [f"{v['out']} = sigmoid({v['x']})"]

    def grad_source(self, operand, v, attrs, types):
        return f"{v['dout']} * {v['out']} * (1 - {v['out']})"


@register
class Affine(Op):
    name = "affine"
    operands = ("x", "W", "b")
    passes_gradient_through = ("b",)  # a bias as large as the output
    math = "out = x · W + b"
    rules = {
        "x": Rule("{dout} @ {W}.T", ("W",)),
        "W": Rule("{x}.T @ {dout}", ("x",)),
        "b": Rule("sum({dout}, axis=0)"),
    }
    examples = (((4, 3), (3, 5), (5,)), ((2, 3, 2), (6, 4), (4,)), ((3,), (3, 2), (2,)), ((4, 3), (3, 2), (4, 2)))

    def infer(self, args, attrs):
        x, w, b = args
        dtype = _result_dtype(self.name, args)
        if w.type.ndim != 2:
            raise ShapeError(f"affine: `{w.name}` must be a matrix, got shape {w.type.shape_text()}", 1)
        if x.type.ndim == 0:
            raise ShapeError(f"affine: `{x.name}` must have at least one dim, got a scalar", 0)
        fan_in, fan_out = w.type.shape
        # Like the book's Affine, inputs of more than 2 dims flatten their trailing dims.
        if x.type.ndim == 1:
            batch: tuple[Dim, ...] = ()
            features: Dim = x.type.shape[0]
        else:
            batch = x.type.shape[:1]
            trailing = x.type.shape[1:]
            features = _product(trailing)
        if features != fan_in:
            raise ShapeError(
                f"shape mismatch in `affine`: `{x.name}` has {features} features, "
                f"`{w.name}` expects {fan_in} "
                f"(`{x.name}` is {x.type.shape_text()}, `{w.name}` is {w.type.shape_text()})",
                1,
            )
        out = batch + (fan_out,)
        try:
            fits = broadcast(self.name, Operand("x·W", TensorType(dtype, out)), b) == out
        except ShapeError:
            fits = False
        if not fits:
            raise ShapeError(
                f"shape mismatch in `affine`: bias `{b.name}` {b.type.shape_text()} does not fit x·W {shape_text(out)}",
                2,
            )
        return TensorType(dtype, out)

    def forward(self, attrs, x, w, b):
        x2 = x.reshape(x.shape[0], -1) if x.ndim > 2 else x
        out = x2 @ w
        out += b  # `out` is fresh from the matmul; adding in place saves an array
        return out, (x2, w, x.shape, np.shape(b))

    def backward(self, attrs, saved, dout, needs):
        x2, w, x_shape, b_shape = saved
        dx = (dout @ w.T).reshape(x_shape) if needs[0] else None
        if needs[1]:
            dw = np.outer(x2, dout) if x2.ndim == 1 else x2.T @ dout
        else:
            dw = None
        db = None
        if needs[2]:
            db = dout.sum(axis=0) if dout.ndim == 2 and b_shape == dout.shape[1:] else sum_to(dout, b_shape)
        return dx, dw, db

    def forward_source(self, v, attrs, types, taped):
        # As forward: the bias is added into the fresh product, not into a third array.
        return [f"{v['out']} = {_flat_source(v['x'], types['x'])} @ {v['W']}", f"{v['out']} += {v['b']}"]

    def grad_source(self, operand, v, attrs, types):
        x, dout = types["x"], v["dout"]
        if operand == 0:
            dx = f"{dout} @ {v['W']}.T"
            if x.ndim <= 2:
                return dx
            # Only the batch dim may be symbolic: the rest multiply to W's rows.
            dims = ", ".join("-1" if isinstance(d, str) else str(d) for d in x.shape)
            return f"({dx}).reshape({dims})"
        if operand == 1:
            return f"np.outer({v['x']}, {dout})" if x.ndim == 1 else f"{_flat_source(v['x'], x)}.T @ {dout}"
        return sum_to_source(dout, types["out"].shape, types["b"].shape)


@register
class SoftmaxLoss(Op):
    name = "softmax_loss"
    operands = ("y", "t")
    attributes = {"reduction": Attribute("mean", ("mean", "sum"), "average over the batch, or sum")}
    math = "out = -sum(t * log(softmax(y))) / N"
    rules = {"y": Rule("{dout} * (softmax({y}) - {t}) / N", ("probs", "t"))}
    examples = (((4, 3), (4, 3)), ((5,), (5,)), ((4, 3), (4,)))

    def infer(self, args, attrs):
        y, t = args
        _floats(self.name, [y], "float scores")
        if y.type.ndim not in (1, 2):
            raise ShapeError(
                f"softmax_loss: scores `{y.name}` must be [N, classes] or [classes], got {y.type.shape_text()}", 0
            )
        if t.type.shape == y.type.shape:
            if y.type.dtype and t.type.dtype and t.type.dtype != "i64" and t.type.dtype != y.type.dtype:
                raise ShapeError(
                    f"dtype mismatch in `softmax_loss`: `{y.name}` is {y.type.dtype}, `{t.name}` is {t.type.dtype}", 1
                )
        elif t.type.shape == y.type.shape[:-1]:
            pass  # integer class indices
        else:
            raise ShapeError(
                f"shape mismatch in `softmax_loss`: labels `{t.name}` {t.type.shape_text()} fit neither "
                f"one-hot {y.type.shape_text()} nor class indices {shape_text(y.type.shape[:-1])} "
                f"for scores `{y.name}`",
                1,
            )
        return TensorType(y.type.dtype or "f64", ())

    def rule(self, operand, names, attrs):
        rule = super().rule(operand, names, attrs)
        return rule.removesuffix(" / N") if attrs.get("reduction") == "sum" else rule

    helpers = (softmax_cross_entropy, softmax_cross_entropy_backward)

    def forward(self, attrs, y, t):
        loss, probs = softmax_cross_entropy(y, t, attrs["reduction"] == "mean")
        return loss, (probs, t)

    def backward(self, attrs, saved, dout, needs):
        probs, t = saved
        return softmax_cross_entropy_backward(probs, t, dout, attrs["reduction"] == "mean"), None

    def own_tensor_type(self, item, types):
        if item != "probs":
            return super().own_tensor_type(item, types)
        return types["y"]

    def forward_source(self, v, attrs, types, taped):
        mean = "" if attrs["reduction"] == "mean" else ", mean=False"
        if not taped:
            return [f"{v['out']} = softmax_cross_entropy({v['y']}, {v['t']}{mean})[0]"]
        return [f"{v['out']}, {v['probs']} = softmax_cross_entropy({v['y']}, {v['t']}{mean})"]

    def grad_source(self, operand, v, attrs, types):
        mean = "" if attrs["reduction"] == "mean" else ", mean=False"
        return f"softmax_cross_entropy_backward({v['probs']}, {v['t']}, {v['dout']}{mean})"


def _flat_source(x: str, t: TensorType) -> str:
    """affine's x as a matrix: trailing dims flattened, as the book's Affine does."""
    return f"{x}.reshape(len({x}), -1)" if t.ndim > 2 else x


def _product(dims: Sequence[Dim]) -> Dim:
    total = 1
    for d in dims:
        if isinstance(d, str):
            return "*".join(str(x) for x in dims)  # symbolic: compare as text
        total *= d
    return total

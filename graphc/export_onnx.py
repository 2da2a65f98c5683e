"""ONNX export: a program's inference pass as an ONNX model.

`graphc compile FILE --emit onnx -o model.onnx` writes the forward pass in
eval mode (dropout scales by the fraction it keeps, batchnorm normalizes by
its running statistics), so that the model predicts as `graphc eval` does:

- the graph's inputs are the model's inputs, symbolic dims (the batch `N`)
  kept as symbolic ONNX dims; labels read as class indices are int64;
- params, consts and op state (batchnorm's running mean and variance) are
  initializers, with the values the program holds (its seed's, or a
  checkpoint's);
- the graph's outputs are the model's; when the first is a loss
  (softmax_loss), the scores it reads are an output too, after them: the
  model computes the loss from the labels as the graph does, and serving
  takes the scores (onnx.utils.extract_model cuts the model down to them,
  with no labels to feed; docs/interop.md);
- each ONNX node is named by the graphc node it computes (the helper nodes of
  a mapping by that name and `/what`) and its doc_string is the `.graph`
  source line it comes from, as Netron shows it.

`--train-step` writes one training step instead (onnx_train_step): the loss
and every param's gradient, from graphc's backward plan; each op's local
gradients are one function in GRADIENTS.

Each op's mapping is one function in MAPPINGS, over ordinary ONNX ops at
opset OPSET. Numbers follow graphc's own semantics: a weak scalar (a literal
with no dtype) is computed in float64 and cast to the dtype of what it meets,
as numpy treats a Python float.

onnx is imported lazily, only here, so that graphc runs without it; without
it, exporting is an error naming the extra to install.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc import __version__
from graphc.errors import GraphcError
from graphc.ir import OpNode, ParamDecl, TensorType
from graphc.plan import Plan, grad_name, make_inference_plan, make_plan

if TYPE_CHECKING:
    import onnx

    from graphc.program import Program

# Opset 21 (onnx 1.16, onnxruntime 1.18, 2024): every op used here at its
# current definition (the Reduce ops take their axes as an input since 18),
# and supported by every onnxruntime of the last two years.
OPSET = 21
INSTALL = 'pip install "graphc[onnx]"'

# graphc dtype -> ONNX element type (TensorProto's numbering); a weak value computes in float64.
_ELEMENT = {"f32": 1, "f64": 11, "i64": 7, "bool": 9, None: 11}
_NUMPY = {"f32": np.float32, "f64": np.float64, "i64": np.int64, None: np.float64}


def import_onnx(what: str = "--emit onnx") -> Any:
    """The onnx package, or a GraphcError saying `what` needs it and how to install it."""
    try:
        import onnx
        import onnx.helper  # noqa: F401 (the submodules this module uses)
        import onnx.numpy_helper  # noqa: F401
    except ImportError:
        raise GraphcError(
            f"{what} needs the onnx package, which is not installed",
            hint=f"install graphc's ONNX extra: {INSTALL}",
            code="E509",
        ) from None
    return onnx


# --- building the graph -----------------------------------------------------


@dataclass
class _Builder:
    """The model's nodes and initializers as they are made."""

    onnx: Any
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    casts: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def initializer(self, name: str, values: np.ndarray, doc: str = "") -> str:
        # np.array, not ascontiguousarray, which makes a scalar 1-D.
        tensor = self.onnx.numpy_helper.from_array(np.array(values, order="C"), name)
        tensor.doc_string = doc
        self.initializers.append(tensor)
        return name

    def constant(self, values: Any, dtype: Any, hint: str) -> str:
        return self.initializer(self.unique(hint), np.asarray(values, dtype=dtype))

    def node(self, op_type: str, inputs: Sequence[str], output: str, name: str, doc: str, **attrs: Any) -> str:
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), [output], name=name, doc_string=doc, **attrs)
        )
        return output


@dataclass
class _Emit:
    """One graphc node's mapping at work: its operands, dtype and where its ONNX nodes go."""

    builder: _Builder
    node: OpNode
    types: dict[str, TensorType]
    doc: str
    mode: str = "eval"  # a train step's forward runs in the program's mode
    made: dict[str, str] = field(default_factory=dict)

    @property
    def dtype(self) -> str | None:
        """The dtype the node computes in (None: weak, float64)."""
        return self.types[self.node.name].dtype

    def type(self, i: int) -> TensorType:
        return self.types[self.node.args[i]]

    def arg(self, i: int) -> str:
        """Operand i in the node's dtype: a weak one cast to it, as numpy casts a Python float
        (and int64 one-hot labels, as graphc's loss casts them)."""
        return self.arg_as(i, self.dtype)

    def arg_as(self, i: int, dtype: str | None) -> str:
        name = self.node.args[i]
        return name if self.types[name].dtype == dtype else self.cast(name, dtype)

    def cast(self, name: str, dtype: str | None) -> str:
        key = (name, dtype)
        if key not in self.builder.casts:
            out = self.builder.unique(f"{name}/as_{dtype or 'f64'}")
            self.builder.node("Cast", [name], out, out, self.doc, to=_ELEMENT[dtype])
            self.builder.casts[key] = out
        return self.builder.casts[key]

    def const(self, values: Any, dtype: Any, what: str) -> str:
        return self.builder.constant(values, dtype, f"{self.node.name}/{what}")

    def float_const(self, value: float, what: str) -> str:
        """A number in the node's dtype, as a Python float in a formula meets it."""
        return self.const(value, _NUMPY[self.dtype], what)

    def axes(self, *axes: int) -> str:
        return self.const(list(axes), np.int64, "axes")

    def aux(self, op_type: str, inputs: Sequence[str], what: str, **attrs: Any) -> str:
        """A helper node of this mapping; its output named `node/what` (what backward reads by `made[what]`)."""
        out = self.builder.unique(f"{self.node.name}/{what}")
        self.made[what] = out
        return self.builder.node(op_type, inputs, out, out, self.doc, **attrs)

    def final(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        """The node that computes the graphc value: named and output as it."""
        self.builder.names.add(self.node.name)
        return self.builder.node(op_type, inputs, self.node.name, self.node.name, self.doc, **attrs)


# --- the mappings: one function per op ----------------------------------------------


def _binary(op_type: str) -> Callable[[_Emit], None]:
    def emit(e: _Emit) -> None:  # ONNX broadcasts as numpy does
        e.final(op_type, [e.arg(0), e.arg(1)])

    return emit


def _unary(op_type: str) -> Callable[[_Emit], None]:
    def emit(e: _Emit) -> None:
        e.final(op_type, [e.arg(0)])

    return emit


def _sigmoid(e: _Emit) -> None:
    """graphc's stable logistic, from exp(-|x|): onnxruntime's float64 Sigmoid is off by 1e-8 in its tails."""
    x, one = e.arg(0), e.float_const(1.0, "one")
    exp = e.aux("Exp", [e.aux("Neg", [e.aux("Abs", [x], "abs")], "minus_abs")], "exp")
    denominator = e.aux("Add", [one, exp], "denominator")
    positive = e.aux("Div", [one, denominator], "positive")
    negative = e.aux("Div", [exp, denominator], "negative")
    at_least_0 = e.aux("GreaterOrEqual", [x, e.float_const(0.0, "zero")], "at_least_0")
    e.final("Where", [at_least_0, positive, negative])


def _square(e: _Emit) -> None:
    x = e.arg(0)
    e.final("Mul", [x, x])  # x * x, as graphc computes it


def _reduction(op_type: str) -> Callable[[_Emit], None]:
    def emit(e: _Emit) -> None:
        axis, keep = e.node.attrs["axis"], int(e.node.attrs["keepdims"] == "true")
        axes = [] if axis is None else [e.axes(axis)]  # no axes: all of them
        e.final(op_type, [e.arg(0), *axes], keepdims=keep)

    return emit


def _affine(e: _Emit) -> None:
    x = e.arg(0)
    if e.type(0).ndim > 2:  # the book's Affine flattens all but the batch axis
        x = e.aux("Flatten", [x], "flat", axis=1)
    product = e.aux("MatMul", [x, e.arg(1)], "matmul")
    e.final("Add", [product, e.arg(2)])


def _softmax_loss(e: _Emit) -> None:
    """Cross-entropy from LogSoftmax (log-sum-exp, stable), labels one-hot or class indices."""
    y, t = e.type(0), e.type(1)
    log_p = e.aux("LogSoftmax", [e.arg(0)], "log_softmax", axis=-1)
    if t.shape == y.shape:  # one-hot rows: -sum(t * log p)
        picked = e.aux("Mul", [e.arg(1), log_p], "picked")
    else:  # class indices: -sum of each row's log p at its class (a mask, as GatherElements' is not portable)
        indices = e.aux("Unsqueeze", [e.arg_as(1, "i64"), e.axes(-1)], "indices")
        classes = e.const(np.arange(y.shape[-1]), np.int64, "classes")
        mask = e.aux("Equal", [indices, classes], "mask")
        picked = e.aux("Where", [mask, log_p, e.float_const(0.0, "zero")], "picked")
    total = e.aux("ReduceSum", [picked], "sum", keepdims=0)
    if e.node.attrs["reduction"] == "sum" or y.ndim == 1:  # one sample is a batch of one
        e.final("Neg", [total])
        return
    negative = e.aux("Neg", [total], "negative")
    shape = e.aux("Shape", [e.arg(0)], "shape", start=0, end=1)
    rows = e.aux("Squeeze", [shape, e.axes(0)], "rows")
    batch = e.aux("Cast", [rows], "batch", to=_ELEMENT[e.dtype])
    e.final("Div", [negative, batch])


def _dropout(e: _Emit) -> None:
    if e.mode == "train":  # the mask is the train step's input (numpy's generator draws graphc's)
        e.final("Mul", [e.arg(0), e.cast(f"{e.node.name}.mask", e.dtype)])
        return
    # The book's dropout predicts with every element, scaled by the fraction training keeps.
    e.final("Mul", [e.arg(0), e.float_const(1.0 - e.node.attrs["ratio"], "keep")])


def _batchnorm(e: _Emit) -> None:
    """Normalized by the running statistics (initializers), or while training by the batch's
    (and the running ones updated), step by step as graphc computes it."""
    name, eps = e.node.name, e.float_const(e.node.attrs["eps"], "eps")
    if e.mode == "train":
        mu = e.aux("ReduceMean", [e.arg(0), e.axes(0)], "mu", keepdims=0)
        xc = e.aux("Sub", [e.arg(0), mu], "xc")
        variance = e.aux("ReduceMean", [e.aux("Mul", [xc, xc], "xc2"), e.axes(0)], "var", keepdims=0)
        momentum = e.node.attrs["momentum"]
        for item, batch in (("running_mean", mu), ("running_var", variance)):
            kept = e.aux("Mul", [e.float_const(momentum, "momentum"), f"{name}.{item}"], f"{item}_kept")
            new = e.aux("Mul", [e.float_const(1 - momentum, "rest"), batch], f"{item}_new")
            e.builder.node("Add", [kept, new], f"{name}.{item}/next", f"{name}.{item}/next", e.doc)
        var = e.aux("Add", [variance, eps], "var_eps")
    else:
        xc = e.aux("Sub", [e.arg(0), f"{name}.running_mean"], "xc")
        var = e.aux("Add", [f"{name}.running_var", eps], "var_eps")
    std = e.aux("Sqrt", [var], "std")
    xn = e.aux("Div", [xc, std], "xn")
    scaled = e.aux("Mul", [e.arg(1), xn], "scaled")
    e.final("Add", [scaled, e.arg(2)])


def _pad(e: _Emit, x: str, pad: int, aux: Aux | None = None) -> str:
    """x [N, C, H, W] with `pad` zeros around each image, as np.pad makes it."""
    if not pad:
        return x
    pads = e.const([0, 0, pad, pad, 0, 0, pad, pad], np.int64, "pads")
    return (aux or e.aux)("Pad", [x, pads], "padded", mode="constant")


Aux = Callable[..., str]  # a mapping's helper-node maker: aux(op_type, inputs, what, **attrs)


def _im2col(e: _Emit, aux: Aux, x: str, window: tuple[int, int], stride: int, pad: int) -> str:
    """The book's im2col as ordinary ops: every window of x [N, C, H, W] as one row,
    [N, OH, OW, C·FH·FW], channel-major within a row as W flattens (graphc.ops.im2col)."""
    fh, fw = window
    _, c, oh, ow = _window_dims(e, window, stride, pad)
    image = _pad(e, x, pad, aux)
    windows = []
    for i in range(fh):
        for j in range(fw):
            starts = e.const([i, j], np.int64, "starts")
            ends = e.const([i + stride * (oh - 1) + 1, j + stride * (ow - 1) + 1], np.int64, "ends")
            steps = e.const([stride, stride], np.int64, "steps")
            window_ij = aux("Slice", [image, starts, ends, e.axes(2, 3), steps], f"window{i}_{j}")
            windows.append(aux("Unsqueeze", [window_ij, e.axes(2)], f"window{i}_{j}"))
    stacked = aux("Concat", windows, "windows", axis=2)  # [N, C, FH·FW, OH, OW]
    moved = aux("Transpose", [stacked], "windows_last", perm=[0, 3, 4, 1, 2])
    return aux("Reshape", [moved, e.const([0, 0, 0, c * fh * fw], np.int64, "row_shape")], "col")


def _window_dims(e: _Emit, window: tuple[int, int], stride: int, pad: int) -> tuple[int, int, int, int]:
    """x's height and channels, and the output's height and width: (H, C, OH, OW)."""
    _, c, h, _ = e.type(0).shape
    _, _, oh, ow = e.types[e.node.name].shape
    assert isinstance(c, int) and isinstance(h, int) and isinstance(oh, int) and isinstance(ow, int)
    return h, c, oh, ow


def _col2im(e: _Emit, aux: Aux, col: str, window: tuple[int, int], stride: int, pad: int) -> str:
    """im2col undone for gradients (graphc.ops.col2im): each row's numbers added back to
    the pixels of x they came from, each window offset's spread out by `stride`, padding dropped."""
    fh, fw = window
    _, c, h, w = e.type(0).shape
    _, _, oh, ow = e.types[e.node.name].shape
    assert isinstance(c, int) and isinstance(h, int) and isinstance(w, int) and isinstance(oh, int)
    assert isinstance(ow, int)
    pieces = aux("Reshape", [col, e.const([0, 0, 0, c, fh, fw], np.int64, "piece_shape")], "pieces")
    pieces = aux("Transpose", [pieces], "pieces_first", perm=[0, 3, 4, 5, 1, 2])  # [N, C, FH, FW, OH, OW]
    spread_h, spread_w = stride * (oh - 1) + 1, stride * (ow - 1) + 1
    placed = []
    for i in range(fh):
        for j in range(fw):
            ends = e.const([i + 1, j + 1], np.int64, "ends")
            piece = aux("Slice", [pieces, e.const([i, j], np.int64, "starts"), ends, e.axes(2, 3)], f"piece{i}_{j}")
            piece = aux("Squeeze", [piece, e.axes(2, 3)], f"piece{i}_{j}")  # [N, C, OH, OW]
            if stride > 1:  # stride - 1 zeros after each number, across and down
                gaps = e.const([0, 0, 0, 0, 0, 0, 0, 0, 0, stride - 1, 0, stride - 1], np.int64, "gaps")
                piece = aux("Pad", [aux("Unsqueeze", [piece, e.axes(3, 5)], "cells"), gaps], "spaced")
                spaced = e.const([0, 0, oh * stride, ow * stride], np.int64, "spaced_shape")
                piece = aux("Reshape", [piece, spaced], "spaced")
                ends = e.const([spread_h, spread_w], np.int64, "ends")
                piece = aux("Slice", [piece, e.const([0, 0], np.int64, "starts"), ends, e.axes(2, 3)], "spaced")
            around = [0, 0, i, j, 0, 0, h + 2 * pad - i - spread_h, w + 2 * pad - j - spread_w]
            placed.append(aux("Pad", [piece, e.const(around, np.int64, "around")], f"placed{i}_{j}"))
    image = aux("Sum", placed, "image")
    if not pad:
        return image
    ends = e.const([pad + h, pad + w], np.int64, "ends")
    return aux("Slice", [image, e.const([pad, pad], np.int64, "starts"), ends, e.axes(2, 3)], "unpadded")


def _conv2d(e: _Emit) -> None:
    stride, pad = e.node.attrs["stride"], e.node.attrs["pad"]
    if e.dtype == "f32":
        e.final("Conv", [e.arg(0), e.arg(1), e.arg(2)], strides=[stride, stride], pads=[pad] * 4)
        return
    # onnxruntime has no float64 Conv: the book's im2col, as ordinary ops.
    fn, _, fh, fw = e.type(1).shape
    assert isinstance(fh, int) and isinstance(fw, int)
    col = _im2col(e, e.aux, e.arg(0), (fh, fw), stride, pad)
    filters = e.aux("Reshape", [e.arg(1), e.const([fn, -1], np.int64, "filter_shape")], "filter_rows")
    product = e.aux("MatMul", [col, e.aux("Transpose", [filters], "filter_columns", perm=[1, 0])], "matmul")
    biased = e.aux("Add", [product, e.arg(2)], "biased")
    e.final("Transpose", [biased], perm=[0, 3, 1, 2])


def _max_pool(e: _Emit) -> None:
    size, stride, pad = e.node.attrs["size"], e.node.attrs["stride"], e.node.attrs["pad"]
    # graphc pads with zeros, which a window's max may pick (ONNX's pads never are).
    image = _pad(e, e.arg(0), pad)
    e.final("MaxPool", [image], kernel_shape=[size, size], strides=[stride, stride])


def _avg_pool(e: _Emit) -> None:
    size, stride, pad = e.node.attrs["size"], e.node.attrs["stride"], e.node.attrs["pad"]
    if e.dtype == "f32":
        # Padded first, so every window averages size² numbers, zeros included, as graphc's.
        image = _pad(e, e.arg(0), pad)
        e.final("AveragePool", [image], kernel_shape=[size, size], strides=[stride, stride])
        return
    # onnxruntime has no float64 AveragePool: each window's sum over its im2col row, / size².
    c = e.type(0).shape[1]
    col = _im2col(e, e.aux, e.arg(0), (size, size), stride, pad)
    windows = e.aux("Reshape", [col, e.const([0, 0, 0, c, size * size], np.int64, "window_shape")], "windows")
    total = e.aux("ReduceSum", [windows, e.axes(-1)], "window_sums", keepdims=0)  # [N, OH, OW, C]
    mean = e.aux("Div", [total, e.float_const(float(size * size), "window_size")], "window_means")
    e.final("Transpose", [mean], perm=[0, 3, 1, 2])


def _flatten(e: _Emit) -> None:
    e.final("Flatten" if e.type(0).ndim > 2 else "Identity", [e.arg(0)], **({"axis": 1} if e.type(0).ndim > 2 else {}))


MAPPINGS: dict[str, Callable[[_Emit], None]] = {
    "mul": _binary("Mul"),
    "add": _binary("Add"),
    "sub": _binary("Sub"),
    "div": _binary("Div"),
    "relu": _unary("Relu"),
    "sigmoid": _sigmoid,
    "tanh": _unary("Tanh"),
    "exp": _unary("Exp"),
    "log": _unary("Log"),
    "square": _square,
    "sum": _reduction("ReduceSum"),
    "mean": _reduction("ReduceMean"),
    "affine": _affine,
    "softmax_loss": _softmax_loss,
    "dropout": _dropout,
    "batchnorm": _batchnorm,
    "conv2d": _conv2d,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "flatten": _flatten,
}
# Registered ops ONNX export does not cover yet: a graph using one is refused, at the op.
NOT_MAPPED: tuple[str, ...] = ()


# --- the gradients: one function per op -----------------------------------------------
#
# Each gives the local gradient of one operand, summed back to its shape, from the
# forward node's mapping (its operands and what it made) and `dout`, as graphc's rule
# computes it (the same operations in the same order, so float64 agrees to rounding).


@dataclass
class _Grad:
    e: _Emit  # the forward node's mapping
    dout: str
    target: str  # the gradient this write is part of (d_x), to name its nodes

    def aux(self, op_type: str, inputs: Sequence[str], what: str, **attrs: Any) -> str:
        out = self.e.builder.unique(f"{self.target}/{self.e.node.name}/{what}")
        return self.e.builder.node(op_type, inputs, out, out, self.e.doc, **attrs)

    def shape_of(self, name: str) -> str:
        return self.aux("Shape", [name], "shape")

    def sum_to(self, g: str, operand: int) -> str:
        """g, shaped like out, summed back to the operand's shape (undoes broadcasting)."""
        from graphc.ops import _sum_axes  # the axes graphc's own sum_to sums

        added, stretched, _ = _sum_axes(self.e.types[self.e.node.name].shape, self.e.type(operand).shape)
        if added:
            g = self.aux("ReduceSum", [g, self.e.axes(*added)], "sum_added", keepdims=0)
        if stretched:
            g = self.aux("ReduceSum", [g, self.e.axes(*stretched)], "sum_stretched", keepdims=1)
        return g

    def mul(self, a: str, b: str, what: str = "mul") -> str:
        return self.aux("Mul", [a, b], what)

    def div(self, a: str, b: str, what: str = "div") -> str:
        return self.aux("Div", [a, b], what)

    def number(self, value: float) -> str:
        return self.e.float_const(value, "number")

    def count(self, operand: int, axis: int | None) -> str:
        """How many numbers a mean averaged, in the node's dtype; N read at run time."""
        x = self.e.type(operand)
        dims = x.shape if axis is None else (x.shape[axis],)
        if all(isinstance(d, int) for d in dims):
            return self.number(float(math.prod(d for d in dims if isinstance(d, int))))
        name = self.e.node.args[operand]
        if axis is None:
            size = self.aux("Size", [name], "size")
        else:
            size = self.aux("Gather", [self.shape_of(name), self.e.const(axis % x.ndim, np.int64, "axis")], "size")
        return self.aux("Cast", [size], "count", to=_ELEMENT[self.e.dtype])


def _grad_mul(g: _Grad, i: int) -> str:
    return g.sum_to(g.mul(g.dout, g.e.arg(1 - i)), i)


def _grad_add(g: _Grad, i: int) -> str:
    return g.sum_to(g.dout, i)


def _grad_sub(g: _Grad, i: int) -> str:
    return g.sum_to(g.dout if i == 0 else g.aux("Neg", [g.dout], "neg"), i)


def _grad_div(g: _Grad, i: int) -> str:
    if i == 0:  # dout / b
        return g.sum_to(g.div(g.dout, g.e.arg(1)), 0)
    minus = g.mul(g.aux("Neg", [g.dout], "neg"), g.e.node.name)  # -dout * out / b
    return g.sum_to(g.div(minus, g.e.arg(1)), 1)


def _grad_relu(g: _Grad, i: int) -> str:
    mask = g.aux("Greater", [g.e.arg(0), g.e.const(0, _NUMPY[g.e.dtype], "zero")], "mask")
    return g.mul(g.dout, g.aux("Cast", [mask], "mask_float", to=_ELEMENT[g.e.dtype]))


def _grad_sigmoid(g: _Grad, i: int) -> str:
    out = g.e.node.name  # dout * out * (1 - out)
    return g.mul(g.mul(g.dout, out), g.aux("Sub", [g.number(1.0), out], "one_minus"))


def _grad_tanh(g: _Grad, i: int) -> str:
    out = g.e.node.name  # dout * (1 - out * out)
    return g.mul(g.dout, g.aux("Sub", [g.number(1.0), g.mul(out, out, "square")], "one_minus"))


def _grad_exp(g: _Grad, i: int) -> str:
    return g.mul(g.dout, g.e.node.name)


def _grad_log(g: _Grad, i: int) -> str:
    return g.div(g.dout, g.e.arg(0))


def _grad_square(g: _Grad, i: int) -> str:
    return g.mul(g.mul(g.dout, g.number(2.0), "twice"), g.e.arg(0))


def _spread(g: _Grad, dout: str) -> str:
    """A reduction's gradient copied to every element it reduced, shaped like x."""
    axis, keep = g.e.node.attrs["axis"], g.e.node.attrs["keepdims"] == "true"
    x = g.e.node.args[0]
    if axis is not None and not keep and g.e.type(0).ndim > 1:
        dout = g.aux("Unsqueeze", [dout, g.e.axes(axis % g.e.type(0).ndim)], "unsqueeze")
    return g.aux("Expand", [dout, g.shape_of(x)], "spread")


def _grad_sum(g: _Grad, i: int) -> str:
    return _spread(g, g.dout)


def _grad_mean(g: _Grad, i: int) -> str:
    axis = g.e.node.attrs["axis"]
    return _spread(g, g.div(g.dout, g.count(0, None if axis is None else axis)))


def _grad_affine(g: _Grad, i: int) -> str:
    x, w = g.e.type(0), g.e.arg(1)
    if i == 0:  # unflat(dout @ W.T, x)
        product = g.aux("MatMul", [g.dout, g.aux("Transpose", [w], "w_t", perm=[1, 0])], "matmul")
        return g.aux("Reshape", [product, g.shape_of(g.e.arg(0))], "unflat") if x.ndim > 2 else product
    if i == 1:
        if x.ndim == 1:  # outer(x, dout)
            column = g.aux("Unsqueeze", [g.e.arg(0), g.e.axes(1)], "column")
            row = g.aux("Unsqueeze", [g.dout, g.e.axes(0)], "row")
            return g.aux("MatMul", [column, row], "outer")
        flat = g.e.made.get("flat", g.e.arg(0))
        return g.aux("MatMul", [g.aux("Transpose", [flat], "x_t", perm=[1, 0]), g.dout], "matmul")
    return g.sum_to(g.dout, 2)


def _grad_softmax_loss(g: _Grad, i: int) -> str:
    """dout * (softmax(y) - t) / N (mean), or without / N (sum)."""
    y, t = g.e.type(0), g.e.type(1)
    probs = g.aux("Softmax", [g.e.arg(0)], "probs", axis=-1)
    if t.shape == y.shape:
        labels = g.e.arg(1)
    else:
        labels = g.aux("Cast", [g.e.made["mask"]], "one_hot", to=_ELEMENT[g.e.dtype])
    grad = g.mul(g.dout, g.aux("Sub", [probs, labels], "minus_labels"))
    if g.e.node.attrs["reduction"] == "sum":
        return grad
    if y.ndim == 1:
        return g.div(grad, g.number(1.0))
    rows = g.aux("Gather", [g.shape_of(g.e.arg(0)), g.e.const(0, np.int64, "first")], "rows")
    return g.div(grad, g.aux("Cast", [rows], "batch", to=_ELEMENT[g.e.dtype]))


def _grad_dropout(g: _Grad, i: int) -> str:
    if g.e.mode == "train":
        return g.mul(g.dout, g.e.cast(f"{g.e.node.name}.mask", g.e.dtype))
    return g.mul(g.dout, g.number(1.0 - g.e.node.attrs["ratio"]))


def _grad_batchnorm(g: _Grad, i: int) -> str:
    made = g.e.made
    if i == 1:  # sum_to(xn * dout, gamma)
        return g.sum_to(g.mul(made["xn"], g.dout), 1)
    if i == 2:
        return g.sum_to(g.dout, 2)
    gamma, xc, std = g.e.arg(1), made["xc"], made["std"]
    if g.e.mode == "eval":  # dout * gamma / std
        return g.div(g.mul(g.dout, gamma), std)
    # The book's BatchNormalization.backward (graphc.ops.batchnorm_dx), step by step.
    n = g.count(0, 0)
    dxn = g.mul(gamma, g.dout, "dxn")
    dxc = g.div(dxn, std, "dxc")
    ratio = g.div(g.mul(dxn, xc), g.mul(std, std), "ratio")
    dstd = g.aux("Neg", [g.aux("ReduceSum", [ratio, g.e.axes(0)], "sum", keepdims=0)], "dstd")
    dvar = g.div(g.mul(g.number(0.5), dstd), std, "dvar")
    two_over_n = g.div(g.number(2.0), n, "two_over_n")
    dxc = g.aux("Add", [dxc, g.mul(g.mul(two_over_n, xc), dvar)], "dxc_var")
    dmu = g.aux("ReduceSum", [dxc, g.e.axes(0)], "dmu", keepdims=0)
    return g.aux("Sub", [dxc, g.div(dmu, n)], "dx")


def _grad_conv2d(g: _Grad, i: int) -> str:
    stride, pad = g.e.node.attrs["stride"], g.e.node.attrs["pad"]
    fn, c, fh, fw = g.e.type(1).shape
    assert isinstance(fh, int) and isinstance(fw, int)
    if i == 2:  # per_channel(dout)
        return g.aux("ReduceSum", [g.dout, g.e.axes(0, 2, 3)], "per_channel", keepdims=0)
    dout_rows = g.aux("Transpose", [g.dout], "channels_last", perm=[0, 2, 3, 1])  # [N, OH, OW, FN]
    if i == 0:  # col2im(channels_last(dout) @ filter_rows(W), x, ...)
        filters = g.aux("Reshape", [g.e.arg(1), g.e.const([fn, -1], np.int64, "filter_shape")], "filter_rows")
        col = g.aux("MatMul", [dout_rows, filters], "col")
        return _col2im(g.e, g.aux, col, (fh, fw), stride, pad)
    # unflat(rows(channels_last(dout)).T @ rows(col), W)
    col = g.e.made.get("col") or _im2col(g.e, g.aux, g.e.arg(0), (fh, fw), stride, pad)
    rows = g.aux("Reshape", [dout_rows, g.e.const([-1, fn], np.int64, "rows")], "dout_rows")
    col_rows = g.aux("Reshape", [col, g.e.const([-1, c * fh * fw], np.int64, "rows")], "col_rows")
    product = g.aux("MatMul", [g.aux("Transpose", [rows], "dout_columns", perm=[1, 0]), col_rows], "matmul")
    return g.aux("Reshape", [product, g.shape_of(g.e.arg(1))], "unflat")


def _grad_max_pool(g: _Grad, i: int) -> str:
    """Each window's dout to where its max was (the first, as graphc's), from the windows recomputed."""
    size, stride, pad = g.e.node.attrs["size"], g.e.node.attrs["stride"], g.e.node.attrs["pad"]
    c = g.e.type(0).shape[1]
    col = _im2col(g.e, g.aux, g.e.arg(0), (size, size), stride, pad)
    windows = g.aux("Reshape", [col, g.e.const([0, 0, 0, c, size * size], np.int64, "window_shape")], "windows")
    arg_max = g.aux("ArgMax", [windows], "arg_max", axis=-1, keepdims=1)
    at_max = g.aux("Equal", [arg_max, g.e.const(np.arange(size * size), np.int64, "offsets")], "at_max")
    dout = g.aux("Transpose", [g.dout], "channels_last", perm=[0, 2, 3, 1])
    dout = g.aux("Unsqueeze", [dout, g.e.axes(-1)], "per_window")
    scattered = g.aux("Where", [at_max, dout, g.number(0.0)], "scattered")
    rows = g.e.const([0, 0, 0, c * size * size], np.int64, "row_shape")
    return _col2im(g.e, g.aux, g.aux("Reshape", [scattered, rows], "col"), (size, size), stride, pad)


def _grad_avg_pool(g: _Grad, i: int) -> str:
    """Each window's dout / size² to each of its pixels (graphc.ops.window_share), through col2im."""
    size, stride, pad = g.e.node.attrs["size"], g.e.node.attrs["stride"], g.e.node.attrs["pad"]
    c = g.e.type(0).shape[1]
    share = g.div(g.dout, g.number(float(size * size)), "share")
    share = g.aux("Transpose", [share], "channels_last", perm=[0, 2, 3, 1])
    share = g.aux("Unsqueeze", [share, g.e.axes(-1)], "per_window")
    every_pixel = g.e.const(np.ones(size * size), _NUMPY[g.e.dtype], "every_pixel")
    windows = g.mul(share, every_pixel, "windows")  # [N, OH, OW, C, size²]
    rows = g.e.const([0, 0, 0, c * size * size], np.int64, "row_shape")
    return _col2im(g.e, g.aux, g.aux("Reshape", [windows, rows], "col"), (size, size), stride, pad)


def _grad_flatten(g: _Grad, i: int) -> str:
    return g.aux("Reshape", [g.dout, g.shape_of(g.e.arg(0))], "unflat")


GRADIENTS: dict[str, Callable[[_Grad, int], str]] = {
    "mul": _grad_mul,
    "add": _grad_add,
    "sub": _grad_sub,
    "div": _grad_div,
    "relu": _grad_relu,
    "sigmoid": _grad_sigmoid,
    "tanh": _grad_tanh,
    "exp": _grad_exp,
    "log": _grad_log,
    "square": _grad_square,
    "sum": _grad_sum,
    "mean": _grad_mean,
    "affine": _grad_affine,
    "softmax_loss": _grad_softmax_loss,
    "dropout": _grad_dropout,
    "batchnorm": _grad_batchnorm,
    "conv2d": _grad_conv2d,
    "max_pool": _grad_max_pool,
    "avg_pool": _grad_avg_pool,
    "flatten": _grad_flatten,
}
# Ops whose gradients --train-step does not write yet.
NO_GRADIENT: tuple[str, ...] = ()


# --- the model ------------------------------------------------------------------


def _where(span: Any) -> str:
    """`file:line:col: the source line`, what a node's doc_string says."""
    return f"{span}: {span.source.line(span.line).strip()}"


def export_outputs(program: Program) -> tuple[str, ...]:
    """The graph's outputs, and after them the scores the first one reads if it is a loss."""
    scores = program.checked.scores(program.checked.output)
    return program.outputs + ((scores,) if scores is not None and scores not in program.outputs else ())


def onnx_types(plan: Plan) -> dict[str, TensorType]:
    """The type of every value the model holds: graphc's, but labels read as class indices are int64."""
    types = dict(plan.types)
    for step in plan.forward:
        for position, scored in step.op.label_positions().items():
            labels, scores = step.args[position], step.args[scored]
            if types[labels].shape != types[scores].shape and step.args[position] in plan.inputs:
                types[labels] = TensorType("i64", types[labels].shape)
    return types


def _value_info(onnx: Any, name: str, t: TensorType, doc: str = "") -> Any:
    shape = [d if isinstance(d, (int, str)) else None for d in t.shape]
    return onnx.helper.make_tensor_value_info(name, _ELEMENT[t.dtype], shape, doc_string=doc)


def refuse_unmapped(plan: Plan, program: Program, mappings: Mapping[str, Any], exporter: str, what: str = "") -> None:
    """A located error at the first step whose op `exporter` has no mapping for (`what`: ""
    for the forward steps, "gradient " for the backward ones). PyTorch code generation uses it too."""
    steps = [(s.out, s.op.name) for s in plan.forward] if not what else [(s.node, s.op.name) for s in plan.backward]
    for out, op in steps:
        if op not in mappings:
            node = program.ir.decls[out]
            assert isinstance(node, OpNode)
            covered = ", ".join(sorted(mappings))
            raise GraphcError(
                f"{exporter} has no {what}mapping for op `{op}`",
                node.call_span,
                f"ops {exporter} {'differentiates' if what else 'covers'}: {covered}",
                code="E906",
            )


def onnx_model(program: Program) -> onnx.ModelProto:
    """The program's inference pass as an ONNX model (see the module's docstring)."""
    outputs = export_outputs(program)
    plan = make_inference_plan(program.checked, program.types, outputs, mode="eval")
    refuse_unmapped(plan, program, MAPPINGS, "ONNX export")
    types = onnx_types(plan)
    builder = _start(program, plan, types)
    _forward(builder, program, plan, types)
    return _model(builder, program, plan, types, [(n, types[n]) for n in outputs])


def _start(program: Program, plan: Plan, types: dict[str, TensorType]) -> _Builder:
    """A builder holding the plan's params, consts and op state as initializers."""
    builder = _Builder(import_onnx())
    decls = program.ir.decls
    builder.names.update(plan.inputs)
    for name in (*plan.params, *plan.consts):
        decl = decls[name]
        value = program.params[name] if isinstance(decl, ParamDecl) else program.consts[name]
        t = types[name]
        values = np.broadcast_to(np.asarray(value, _NUMPY[t.dtype]), _concrete(t, value))
        builder.initializer(name, values, _where(decl.span))
        builder.names.add(name)
    for step in plan.forward:
        for item in step.state:
            builder.initializer(item, program.state[item], _where(decls[step.out].span))
            builder.names.add(item)
    return builder


def _forward(builder: _Builder, program: Program, plan: Plan, types: dict[str, TensorType]) -> dict[str, _Emit]:
    """Every forward step's ONNX nodes; the mapping of each, by node, for the backward pass to read."""
    emits = {}
    for step in plan.forward:
        node = program.ir.decls[step.out]
        assert isinstance(node, OpNode)
        emits[step.out] = _Emit(builder, node, types, _where(node.call_span), plan.mode)
        MAPPINGS[step.op.name](emits[step.out])
    return emits


def _model(
    builder: _Builder,
    program: Program,
    plan: Plan,
    types: dict[str, TensorType],
    outputs: list[tuple[str, TensorType]],
    extra_inputs: Sequence[tuple[str, TensorType]] = (),
) -> onnx.ModelProto:
    onnx = builder.onnx
    decls = program.ir.decls
    inputs = [_value_info(onnx, n, types[n], _where(decls[n].span)) for n in plan.inputs]
    inputs += [_value_info(onnx, n, t) for n, t in extra_inputs]
    graph_outputs = [_value_info(onnx, n, t, _where(decls[n].span) if n in decls else "") for n, t in outputs]
    named = {n for n, _ in outputs}
    shapes = [_value_info(onnx, s.out, types[s.out]) for s in plan.forward if s.out not in named]
    graph = onnx.helper.make_graph(
        builder.nodes, program.name, inputs, graph_outputs, builder.initializers, value_info=shapes
    )
    graph.doc_string = f"graph {program.name} of {program.ir.source.path}, exported by graphc {__version__}"
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="graphc", producer_version=__version__
    )
    # Which initializers are params (the others are consts): ONNX does not say; graphc import reads it.
    onnx.helper.set_model_props(model, {"graphc.params": ",".join(plan.params)})
    # The lowest IR version the opset needs, so that older onnxruntimes load it too.
    model.ir_version = 10
    return model


def onnx_train_step(program: Program) -> onnx.ModelProto:
    """One training step as an ONNX model: the loss and every param's gradient
    (d_W1, ...), from graphc's backward plan, in the program's mode. In mode
    train, each dropout's mask is an input (`dropout1.mask`, bool) and each
    batchnorm's updated running statistics are outputs (`bn1.running_mean/next`)."""
    plan = make_plan(program.checked, program.types, wrt=program.param_names, mode=program.mode)
    refuse_unmapped(plan, program, MAPPINGS, "ONNX export")
    refuse_unmapped(plan, program, GRADIENTS, "ONNX export", "gradient ")
    types = onnx_types(plan)
    builder = _start(program, plan, types)
    emits = _forward(builder, program, plan, types)
    assert plan.seed is not None  # make_plan seeds backward at the first output
    onnx, seed, dtype = builder.onnx, plan.seed, types[plan.seed].dtype
    one = onnx.numpy_helper.from_array(np.ones(1, _NUMPY[dtype]))
    seed_shape = builder.unique("seed/shape")
    builder.node("Shape", [seed], seed_shape, seed_shape, "")
    seed_ones = builder.unique("seed")
    grads = {grad_name(seed): builder.node("ConstantOfShape", [seed_shape], seed_ones, seed_ones, "", value=one)}
    for step in plan.backward:
        for write in step.writes:
            g = _Grad(emits[step.node], grads[step.dout], write.target)
            local = GRADIENTS[step.op.name](g, write.operand)
            if write.accumulate:  # fan-out: the readers' contributions add up
                local = g.aux("Add", [grads[write.target], local], "accumulate")
            grads[write.target] = local
    outputs = [(seed, types[seed])]
    for name in program.param_names:
        target = builder.unique(grad_name(name))  # d_W1, unless the graph has a value of that name
        if grad_name(name) in plan.gradients:
            builder.node("Identity", [grads[grad_name(name)]], target, target, _where(program.ir.decls[name].span))
        else:  # no path to the loss: zeros, as graphc's backward gives
            zero = onnx.numpy_helper.from_array(np.zeros(1, _NUMPY[types[name].dtype]))
            shape = builder.unique(f"{target}/shape")
            builder.node("Shape", [name], shape, shape, "")
            builder.node("ConstantOfShape", [shape], target, target, "", value=zero)
        outputs.append((target, types[name]))
    masks: list[tuple[str, TensorType]] = []
    if plan.mode == "train":
        for forward in plan.forward:
            if forward.op.random:
                masks.append((f"{forward.out}.mask", TensorType("bool", types[forward.args[0]].shape)))
            outputs += [(f"{item}/next", types[forward.args[1]]) for item in forward.state]
    return _model(builder, program, plan, types, outputs, masks)


def _concrete(t: TensorType, value: Any) -> tuple[int, ...]:
    """A param's or const's shape: its value's (a const of one number keeps its declared shape)."""
    shape = np.shape(value)
    return shape if len(shape) == t.ndim else tuple(d for d in t.shape if isinstance(d, int))


__all__ = [
    "GRADIENTS",
    "INSTALL",
    "MAPPINGS",
    "NOT_MAPPED",
    "NO_GRADIENT",
    "OPSET",
    "onnx_model",
    "onnx_train_step",
    "refuse_unmapped",
]

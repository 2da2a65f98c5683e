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
  (softmax_loss), the scores it reads are an output too, after them, so that
  a server can ask for the scores alone and feed no labels;
- each ONNX node is named by the graphc node it computes (the helper nodes of
  a mapping by that name and `/what`) and its doc_string is the `.graph`
  source line it comes from, as Netron shows it.

Each op's mapping is one function in MAPPINGS, over ordinary ONNX ops at
opset OPSET. Numbers follow graphc's own semantics: a weak scalar (a literal
with no dtype) is computed in float64 and cast to the dtype of what it meets,
as numpy treats a Python float.

onnx is imported lazily, only here, so that graphc runs without it; without
it, exporting is an error naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc import __version__
from graphc.errors import GraphcError
from graphc.ir import OpNode, ParamDecl, TensorType
from graphc.plan import Plan, make_inference_plan

if TYPE_CHECKING:
    import onnx

    from graphc.program import Program

# Opset 21 (onnx 1.16, onnxruntime 1.18, 2024): every op used here at its
# current definition (the Reduce ops take their axes as an input since 18),
# and supported by every onnxruntime of the last two years.
OPSET = 21
INSTALL = 'pip install "graphc[onnx]"'

# graphc dtype -> ONNX element type (TensorProto's numbering); a weak value computes in float64.
_ELEMENT = {"f32": 1, "f64": 11, "i64": 7, None: 11}
_NUMPY = {"f32": np.float32, "f64": np.float64, "i64": np.int64, None: np.float64}


def import_onnx() -> Any:
    """The onnx package, or a GraphcError saying how to install it."""
    try:
        import onnx
        import onnx.helper  # noqa: F401 (the submodules this module uses)
        import onnx.numpy_helper  # noqa: F401
    except ImportError:
        raise GraphcError(
            "--emit onnx needs the onnx package, which is not installed",
            hint=f"install graphc's ONNX extra: {INSTALL}",
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
    steps: int = 0

    @property
    def dtype(self) -> str | None:
        """The dtype the node computes in (None: weak, float64)."""
        return self.types[self.node.name].dtype

    def type(self, i: int) -> TensorType:
        return self.types[self.node.args[i]]

    def arg(self, i: int, dtype: str | None | bool = True) -> str:
        """Operand i, a weak one cast to the node's dtype (or to `dtype`), as numpy casts a Python float."""
        name = self.node.args[i]
        want = self.dtype if dtype is True else dtype
        have = self.types[name].dtype
        if have == want or want is False or (have is None and want is None):
            return name
        return self.cast(name, want)

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
        """A helper node of this mapping; its output named `node/what`."""
        out = self.builder.unique(f"{self.node.name}/{what}")
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
        indices = e.aux("Unsqueeze", [e.arg(1, "i64"), e.axes(-1)], "indices")
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
    # The book's dropout predicts with every element, scaled by the fraction training keeps.
    e.final("Mul", [e.arg(0), e.float_const(1.0 - e.node.attrs["ratio"], "keep")])


def _batchnorm(e: _Emit) -> None:
    """Normalized by the running statistics (initializers), step by step as graphc computes it."""
    xc = e.aux("Sub", [e.arg(0), f"{e.node.name}.running_mean"], "xc")
    var = e.aux("Add", [f"{e.node.name}.running_var", e.float_const(e.node.attrs["eps"], "eps")], "var_eps")
    std = e.aux("Sqrt", [var], "std")
    xn = e.aux("Div", [xc, std], "xn")
    scaled = e.aux("Mul", [e.arg(1), xn], "scaled")
    e.final("Add", [scaled, e.arg(2)])


def _pad(e: _Emit, x: str, pad: int) -> str:
    """x [N, C, H, W] with `pad` zeros around each image, as np.pad makes it."""
    if not pad:
        return x
    pads = e.const([0, 0, pad, pad, 0, 0, pad, pad], np.int64, "pads")
    return e.aux("Pad", [x, pads], "padded", mode="constant")


def _conv2d(e: _Emit) -> None:
    stride, pad = e.node.attrs["stride"], e.node.attrs["pad"]
    if e.dtype == "f32":
        e.final("Conv", [e.arg(0), e.arg(1), e.arg(2)], strides=[stride, stride], pads=[pad] * 4)
        return
    # onnxruntime has no float64 Conv: the book's im2col, as ordinary ops.
    fn, c, fh, fw = e.type(1).shape
    n, _, oh, ow = e.types[e.node.name].shape
    assert isinstance(oh, int) and isinstance(ow, int) and isinstance(c, int)
    image = _pad(e, e.arg(0), pad)
    windows = []
    for i in range(fh):  # type: ignore[arg-type]
        for j in range(fw):  # type: ignore[arg-type]
            starts = e.const([i, j], np.int64, "starts")
            ends = e.const([i + stride * (oh - 1) + 1, j + stride * (ow - 1) + 1], np.int64, "ends")
            steps = e.const([stride, stride], np.int64, "steps")
            window = e.aux("Slice", [image, starts, ends, e.axes(2, 3), steps], f"window{i}_{j}")
            windows.append(e.aux("Unsqueeze", [window, e.axes(2)], f"window{i}_{j}"))
    stacked = e.aux("Concat", windows, "windows", axis=2)  # [N, C, FH·FW, OH, OW]
    moved = e.aux("Transpose", [stacked], "windows_last", perm=[0, 3, 4, 1, 2])
    rows = e.const([0, 0, 0, c * fh * fw], np.int64, "row_shape")  # type: ignore[operator]
    col = e.aux("Reshape", [moved, rows], "col")  # [N, OH, OW, C·FH·FW], channel-major as W flattens
    filters = e.aux("Reshape", [e.arg(1), e.const([fn, -1], np.int64, "filter_shape")], "filter_rows")
    product = e.aux("MatMul", [col, e.aux("Transpose", [filters], "filter_columns", perm=[1, 0])], "matmul")
    biased = e.aux("Add", [product, e.arg(2)], "biased")
    e.final("Transpose", [biased], perm=[0, 3, 1, 2])


def _max_pool(e: _Emit) -> None:
    size, stride, pad = e.node.attrs["size"], e.node.attrs["stride"], e.node.attrs["pad"]
    # graphc pads with zeros, which a window's max may pick (ONNX's pads never are).
    image = _pad(e, e.arg(0), pad)
    e.final("MaxPool", [image], kernel_shape=[size, size], strides=[stride, stride])


def _flatten(e: _Emit) -> None:
    e.final("Flatten" if e.type(0).ndim > 2 else "Identity", [e.arg(0)], **({"axis": 1} if e.type(0).ndim > 2 else {}))


MAPPINGS: dict[str, Callable[[_Emit], None]] = {
    "mul": _binary("Mul"),
    "add": _binary("Add"),
    "sub": _binary("Sub"),
    "div": _binary("Div"),
    "relu": _unary("Relu"),
    "sigmoid": _unary("Sigmoid"),
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
    "flatten": _flatten,
}
# Registered ops ONNX export does not cover yet: a graph using one is refused, at the op.
NOT_MAPPED: tuple[str, ...] = ()


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


def _unmapped(plan: Plan, program: Program) -> None:
    for step in plan.forward:
        if step.op.name not in MAPPINGS:
            node = program.ir.decls[step.out]
            assert isinstance(node, OpNode)
            covered = ", ".join(sorted(MAPPINGS))
            raise GraphcError(
                f"ONNX export has no mapping for op `{step.op.name}`",
                node.call_span,
                f"ops ONNX export covers: {covered}",
            )


def onnx_model(program: Program) -> onnx.ModelProto:
    """The program's inference pass as an ONNX model (see the module's docstring)."""
    onnx = import_onnx()
    outputs = export_outputs(program)
    plan = make_inference_plan(program.checked, program.types, outputs, mode="eval")
    _unmapped(plan, program)
    types = onnx_types(plan)
    builder = _Builder(onnx)
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
    for step in plan.forward:
        node = decls[step.out]
        assert isinstance(node, OpNode)
        MAPPINGS[step.op.name](_Emit(builder, node, types, _where(node.call_span)))
    inputs = [_value_info(onnx, n, types[n], _where(decls[n].span)) for n in plan.inputs]
    graph_outputs = [_value_info(onnx, n, types[n], _where(decls[n].span)) for n in outputs]
    shapes = [_value_info(onnx, s.out, types[s.out]) for s in plan.forward if s.out not in outputs]
    graph = onnx.helper.make_graph(
        builder.nodes, program.name, inputs, graph_outputs, builder.initializers, value_info=shapes
    )
    graph.doc_string = f"graph {program.name} of {program.ir.source.path}, exported by graphc {__version__}"
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="graphc", producer_version=__version__
    )
    # The lowest IR version the opset needs, so that older onnxruntimes load it too.
    model.ir_version = 10
    return model


def _concrete(t: TensorType, value: Any) -> tuple[int, ...]:
    """A param's or const's shape: its value's (a const of one number keeps its declared shape)."""
    shape = np.shape(value)
    return shape if len(shape) == t.ndim else tuple(d for d in t.shape if isinstance(d, int))


def onnx_bytes(program: Program) -> bytes:
    return onnx_model(program).SerializeToString()


__all__ = ["INSTALL", "MAPPINGS", "NOT_MAPPED", "OPSET", "onnx_bytes", "onnx_model"]

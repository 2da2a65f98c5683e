"""ONNX import: an ONNX model back into a `.graph` file and a checkpoint of its weights.

`graphc import model.onnx -o model.graph` reads the model's graph and, for
each value it computes, finds the graphc op that computes it: a recognizer
per op matches the ONNX nodes that graphc's own export writes for that op
(graphc.export_onnx.MAPPINGS: Add(MatMul(x, W), b) is an affine; the stable
logistic's eight nodes are one sigmoid) and the plain forms other exporters
write (Gemm, Sigmoid, Conv). The nodes a recognizer matched become one
statement; the values they read become operands.

- Graph inputs become inputs, typed, with symbolic dims (the batch `N`)
  kept; the labels a softmax_loss reads are `from labels`, and then the
  other input of the scores `from images`, so the file trains as it is.
- Initializers that a statement reads become params (their values go to
  the checkpoint written beside the file; small ones are written inline
  too), but for those graphc's export did not list as params (metadata
  `graphc.params`): consts; batchnorm's running statistics become its state. The
  helper constants of a pattern (axes, window offsets) are absorbed in it.
- The model's outputs are the graph's outputs.

What does not come back is what ONNX does not keep: an input's default
value or initializer, a dropout (an inference model scales by the fraction
it keeps: a `mul`), batchnorm's momentum, a `square` (it is x * x: a
`mul(x, x)`, with the same numbers). An ONNX node no recognizer covers is
an error naming the node and its op type.
"""

from __future__ import annotations

import ast
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc import limits
from graphc.errors import GraphcError
from graphc.export_onnx import import_onnx

if TYPE_CHECKING:
    from graphc.program import Program

# ONNX element type -> graphc dtype (TensorProto's numbering).
_DTYPE = {1: "f32", 11: "f64", 7: "i64"}
_PARAMS_KEY = "graphc.params"  # export_onnx's metadata: the initializers that are params
_INLINE = 4  # a param of at most this many numbers is written in the file too
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\Z")
# The words that start a statement, which the statement `NAME = op(...)` cannot start with
# (ONNX names a value `output` as often as not); elsewhere the language's words are names too.
_KEYWORDS = {"dim", "input", "param", "const", "output", "expect"}


@dataclass(frozen=True)
class Statement:
    """One recognised graphc node: `out = op(args, attrs)`, args as ONNX value names."""

    out: str
    op: str
    args: tuple[str, ...]
    attrs: tuple[tuple[str, str], ...] = ()
    state: tuple[str, ...] = ()  # initializers that are the op's state (batchnorm's statistics)


@dataclass(frozen=True)
class Imported:
    """The `.graph` text, and the params' and state's values by graphc name."""

    text: str
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    renamed: dict[str, str]  # ONNX names that are not graphc names, and what the graph calls them


class _NoMatch(Exception):
    """A recognizer's pattern does not fit here: the next one is tried."""


@dataclass
class _Model:
    """The ONNX graph, as recognizers look at it: who makes each value, and the constants."""

    graph: Any
    producers: dict[str, Any] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # nodes already part of a statement

    def node(self, value: str, *op_types: str) -> Any:
        """The node that makes `value`, if it is one of op_types; else no match."""
        node = self.producers.get(value)
        if node is None or node.op_type not in op_types:
            raise _NoMatch
        return node

    def through_casts(self, value: str) -> str:
        """The value under any Casts: graphc casts operands to the dtype a node computes in."""
        node = self.producers.get(value)
        while node is not None and node.op_type == "Cast":
            value = node.input[0]
            node = self.producers.get(value)
        return value

    def constant(self, value: str) -> np.ndarray:
        value = self.through_casts(value)
        if value not in self.constants:
            raise _NoMatch
        return self.constants[value]

    def number(self, value: str) -> float:
        array = self.constant(value)
        if array.size != 1:
            raise _NoMatch
        return float(array.reshape(()))

    def ints(self, value: str) -> list[int]:
        return [int(v) for v in self.constant(value).reshape(-1)]


def _attr(node: Any, name: str, default: Any = None) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            import onnx.helper

            return onnx.helper.get_attribute_value(attribute)
    return default


def _square_window(node: Any, name: str, default: int) -> int:
    """A pooling attribute graphc keeps as one number (size, stride): both ONNX axes agree."""
    values = list(_attr(node, name, [default, default]))
    if len(values) != 2 or values[0] != values[1]:
        raise _NoMatch
    return int(values[0])


def _pads(m: _Model, value: str) -> tuple[str, int]:
    """x and the zeros padded around each image, when value is Pad(x, [0,0,p,p,0,0,p,p])."""
    node = m.producers.get(value)
    if node is None or node.op_type != "Pad":
        return value, 0
    pads = m.ints(node.input[1])
    if len(pads) != 8 or pads[:2] != [0, 0] or pads[4:6] != [0, 0] or len(set(pads[2:4] + pads[6:])) != 1:
        raise _NoMatch
    if _attr(node, "mode", b"constant") not in (b"constant", "constant") or (len(node.input) > 2 and node.input[2]):
        raise _NoMatch
    return node.input[0], pads[2]


# --- recognizers: one per op, each from the node that computes the value --------------


def _binary(op: str) -> Callable[[_Model, Any], Statement]:
    def recognize(m: _Model, node: Any) -> Statement:
        return Statement(node.output[0], op, (node.input[0], node.input[1]))

    return recognize


def _unary(op: str) -> Callable[[_Model, Any], Statement]:
    def recognize(m: _Model, node: Any) -> Statement:
        return Statement(node.output[0], op, (node.input[0],))

    return recognize


def _affine(m: _Model, node: Any) -> Statement:
    """Add(MatMul(x, W), b), x flattened past the batch axis or not."""
    product, bias = node.input
    matmul = m.node(product, "MatMul")
    m.used.add(matmul.name)
    x = matmul.input[0]
    flat = m.producers.get(x)
    if flat is not None and flat.op_type == "Flatten" and _attr(flat, "axis", 1) == 1 and flat.output[0] == x:
        if x.endswith("/flat"):  # graphc's own: the book's affine flattens; a user's flatten stays one
            m.used.add(flat.name)
            x = flat.input[0]
    return Statement(node.output[0], "affine", (x, matmul.input[1], bias))


def _gemm(m: _Model, node: Any) -> Statement:
    """Gemm(x, W, b) as other exporters write a linear layer: W transposed when transB."""
    if _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0 or _attr(node, "transA", 0):
        raise _NoMatch
    if len(node.input) < 3 or not node.input[2]:
        raise _NoMatch
    weights = node.input[1]
    if _attr(node, "transB", 0):
        if weights not in m.constants:
            raise _NoMatch
        m.constants[weights] = np.ascontiguousarray(m.constants[weights].T)
    return Statement(node.output[0], "affine", (node.input[0], weights, node.input[2]))


def _sigmoid_stable(m: _Model, node: Any) -> Statement:
    """graphc's stable logistic: Where(x >= 0, 1 / (1 + exp(-|x|)), exp(-|x|) / (1 + exp(-|x|)))."""
    condition, positive, negative = node.input
    at_least_0 = m.node(condition, "GreaterOrEqual")
    x = at_least_0.input[0]
    if m.number(at_least_0.input[1]) != 0.0:
        raise _NoMatch
    top = m.node(positive, "Div")
    bottom = m.node(negative, "Div")
    denominator = m.node(top.input[1], "Add")
    exp = m.node(bottom.input[0], "Exp")
    neg = m.node(exp.input[0], "Neg")
    absolute = m.node(neg.input[0], "Abs")
    if absolute.input[0] != x or bottom.input[1] != top.input[1] or m.number(top.input[0]) != 1.0:
        raise _NoMatch
    m.used.update(n.name for n in (at_least_0, top, bottom, denominator, exp, neg, absolute))
    return Statement(node.output[0], "sigmoid", (x,))


def _reduction(op: str) -> Callable[[_Model, Any], Statement]:
    def recognize(m: _Model, node: Any) -> Statement:
        keep = "true" if _attr(node, "keepdims", 1) else "false"
        axes = m.ints(node.input[1]) if len(node.input) > 1 and node.input[1] else []
        if len(axes) > 1:
            raise _NoMatch
        attrs = (("axis", str(axes[0])),) if axes else ()
        return Statement(node.output[0], op, (node.input[0],), (*attrs, ("keepdims", keep)))

    return recognize


def _log_softmax_sum(m: _Model, value: str) -> tuple[str, str, list[Any]]:
    """(scores, labels, nodes) of ReduceSum(picked), picked from LogSoftmax(scores) by the labels."""
    total = m.node(value, "ReduceSum")
    if _attr(total, "keepdims", 1) or (len(total.input) > 1 and total.input[1]):
        raise _NoMatch
    picked = m.node(total.input[0], "Mul", "Where")
    if picked.op_type == "Mul":  # one-hot rows
        labels, log_p = picked.input
        nodes = [total, picked]
    else:  # class indices, by a mask
        mask_value, log_p, zero = picked.input
        if m.number(zero) != 0.0:
            raise _NoMatch
        mask = m.node(mask_value, "Equal")
        indices = m.node(mask.input[0], "Unsqueeze")
        labels = m.through_casts(indices.input[0])
        nodes = [total, picked, mask, indices]
    log_softmax = m.node(log_p, "LogSoftmax")
    if _attr(log_softmax, "axis", -1) not in (-1, len(_shape(m, log_softmax.input[0])) - 1):
        raise _NoMatch
    return log_softmax.input[0], m.through_casts(labels), [*nodes, log_softmax]


def _shape(m: _Model, value: str) -> list[Any]:
    if value in m.constants:
        return list(m.constants[value].shape)
    for info in (*m.graph.input, *m.graph.value_info, *m.graph.output):
        if info.name == value:
            return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]
    raise _NoMatch


def _softmax_loss_sum(m: _Model, node: Any) -> Statement:
    scores, labels, nodes = _log_softmax_sum(m, node.input[0])
    m.used.update(n.name for n in nodes)
    one_sample = len(_shape(m, scores)) == 1  # the mean over a batch of one is the sum
    return Statement(node.output[0], "softmax_loss", (scores, labels), () if one_sample else (("reduction", "sum"),))


def _softmax_loss_mean(m: _Model, node: Any) -> Statement:
    """Div(Neg(sum), rows of the scores as a float): the mean over the batch."""
    negative = m.node(node.input[0], "Neg")
    scores, labels, nodes = _log_softmax_sum(m, negative.input[0])
    batch = m.node(node.input[1], "Cast")
    rows = m.node(batch.input[0], "Squeeze")
    shape = m.node(rows.input[0], "Shape")
    if shape.input[0] != scores or _attr(shape, "start", 0) != 0 or _attr(shape, "end", None) != 1:
        raise _NoMatch
    m.used.update(n.name for n in (*nodes, negative, batch, rows, shape))
    return Statement(node.output[0], "softmax_loss", (scores, labels))


def _batchnorm(m: _Model, node: Any) -> Statement:
    """gamma * (x - running_mean) / sqrt(running_var + eps) + beta, as graphc's eval mode computes it."""
    scaled, beta = node.input
    mul = m.node(scaled, "Mul")
    gamma = mul.input[0]
    div = m.node(mul.input[1], "Div")
    sub = m.node(div.input[0], "Sub")
    sqrt = m.node(div.input[1], "Sqrt")
    var_eps = m.node(sqrt.input[0], "Add")
    x, mean = sub.input
    var = var_eps.input[0]
    eps = _shortest(m.constant(var_eps.input[1]))
    if mean not in m.constants or var not in m.constants:
        raise _NoMatch
    m.used.update(n.name for n in (mul, div, sub, sqrt, var_eps))
    return Statement(node.output[0], "batchnorm", (x, gamma, beta), (("eps", repr(eps)),), state=(mean, var))


def _shortest(array: np.ndarray) -> float:
    """The number in an array of one, as the fewest digits that give it back in the array's dtype
    (a float32 eps of 1e-7 is 1.0000000116860974e-07 as a Python float)."""
    if array.size != 1:
        raise _NoMatch
    return float(str(array.reshape(-1)[0]))


def _conv(m: _Model, node: Any) -> Statement:
    if _attr(node, "group", 1) != 1 or any(d != 1 for d in _attr(node, "dilations", [1, 1])):
        raise _NoMatch
    if len(node.input) < 3 or not node.input[2]:
        raise _NoMatch
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))
    if len(set(pads)) != 1 or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _NoMatch
    stride = _square_window(node, "strides", 1)
    return Statement(node.output[0], "conv2d", tuple(node.input[:3]), (("stride", str(stride)), ("pad", str(pads[0]))))


def _im2col(m: _Model, value: str) -> tuple[str, int, int, int, list[Any]]:
    """(x, pixels in a window, stride, pad, nodes) of graphc's im2col of x (export_onnx._im2col).
    A pool's window is square; a convolution's is its filters' height by width."""
    reshape = m.node(value, "Reshape")
    moved = m.node(reshape.input[0], "Transpose")
    stacked = m.node(moved.input[0], "Concat")
    nodes = [reshape, moved, stacked]
    sources, strides = set(), set()
    for window_value in stacked.input:
        unsqueeze = m.node(window_value, "Unsqueeze")
        window = m.node(unsqueeze.input[0], "Slice")
        sources.add(window.input[0])
        strides.update(m.ints(window.input[4]))
        nodes += [unsqueeze, window]
    if len(sources) != 1 or len(strides) != 1:
        raise _NoMatch
    image = sources.pop()
    x, pad = _pads(m, image)
    if pad:
        nodes.append(m.producers[image])
    return x, len(stacked.input), strides.pop(), pad, nodes


def _conv_im2col(m: _Model, node: Any) -> Statement:
    """graphc's float64 convolution: Transpose(Add(MatMul(im2col(x), rows of W transposed), b))."""
    if list(_attr(node, "perm", [])) != [0, 3, 1, 2]:
        raise _NoMatch
    biased = m.node(node.input[0], "Add", "Div")
    if biased.op_type == "Div":
        return _avg_pool_im2col(m, node, biased)
    matmul = m.node(biased.input[0], "MatMul")
    columns = m.node(matmul.input[1], "Transpose")
    rows = m.node(columns.input[0], "Reshape")
    x, _, stride, pad, nodes = _im2col(m, matmul.input[0])
    m.used.update(n.name for n in (*nodes, biased, matmul, columns, rows))
    attrs = (("stride", str(stride)), ("pad", str(pad)))
    return Statement(node.output[0], "conv2d", (x, rows.input[0], biased.input[1]), attrs)


def _avg_pool_im2col(m: _Model, node: Any, mean: Any) -> Statement:
    """graphc's float64 average pool: each window's sum over its im2col row, / size²."""
    total = m.node(mean.input[0], "ReduceSum")
    windows = m.node(total.input[0], "Reshape")
    x, pixels, stride, pad, nodes = _im2col(m, windows.input[0])
    size = math.isqrt(pixels)
    if size * size != pixels or m.number(mean.input[1]) != pixels:
        raise _NoMatch
    m.used.update(n.name for n in (*nodes, mean, total, windows))
    return Statement(node.output[0], "avg_pool", (x,), _pool_attrs(size, stride, pad))


def _pool_attrs(size: int, stride: int, pad: int) -> tuple[tuple[str, str], ...]:
    return (("size", str(size)), ("stride", str(stride)), ("pad", str(pad)))


def _pool(op: str) -> Callable[[_Model, Any], Statement]:
    """MaxPool or AveragePool, over x padded with zeros first (graphc pads with zeros)."""

    def recognize(m: _Model, node: Any) -> Statement:
        if any(_attr(node, "pads", [0, 0, 0, 0])) or _attr(node, "ceil_mode", 0):
            raise _NoMatch
        size = _square_window(node, "kernel_shape", 1)
        stride = _square_window(node, "strides", 1)
        x, pad = _pads(m, node.input[0])
        if pad:
            m.used.add(m.producers[node.input[0]].name)
        return Statement(node.output[0], op, (x,), _pool_attrs(size, stride, pad))

    return recognize


def _flatten(m: _Model, node: Any) -> Statement:
    if node.op_type == "Flatten" and _attr(node, "axis", 1) != 1:
        raise _NoMatch
    return Statement(node.output[0], "flatten", (node.input[0],))


def _square_mul(m: _Model, node: Any) -> Statement:
    return Statement(node.output[0], "mul", (node.input[0], node.input[1]))


# Recognizers by the op type of the node that computes the value, most specific first.
RECOGNIZERS: dict[str, tuple[Callable[[_Model, Any], Statement], ...]] = {
    "Add": (_affine, _batchnorm, _binary("add")),
    "Sub": (_binary("sub"),),
    "Mul": (_square_mul,),
    "Div": (_softmax_loss_mean, _binary("div")),
    "Neg": (_softmax_loss_sum,),
    "Relu": (_unary("relu"),),
    "Sigmoid": (_unary("sigmoid"),),
    "Where": (_sigmoid_stable,),
    "Tanh": (_unary("tanh"),),
    "Exp": (_unary("exp"),),
    "Log": (_unary("log"),),
    "ReduceSum": (_reduction("sum"),),
    "ReduceMean": (_reduction("mean"),),
    "Gemm": (_gemm,),
    "Conv": (_conv,),
    "Transpose": (_conv_im2col,),
    "MaxPool": (_pool("max_pool"),),
    "AveragePool": (_pool("avg_pool"),),
    "Flatten": (_flatten,),
    "Identity": (_flatten,),
}


# --- the model, recognised --------------------------------------------------------------


def read_model(path: str | Path) -> Any:
    """The ONNX model at `path`, checked, or a GraphcError saying what is wrong with the file."""
    onnx = import_onnx("graphc import")
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size  # a file too large is refused unread
            data = b"" if size > limits.MAX_MODEL_BYTES else file.read(limits.MAX_MODEL_BYTES + 1)
    except FileNotFoundError:
        raise GraphcError("no such ONNX model", where=str(path), code="E601") from None
    except IsADirectoryError:
        raise GraphcError("is a directory, not an ONNX model", where=str(path), code="E602") from None
    except OSError as err:
        raise GraphcError(f"cannot read ONNX model: {err.strerror or err}", where=str(path), code="E603") from None
    if max(size, len(data)) > limits.MAX_MODEL_BYTES:  # /dev/zero and pipes have no size: read, bounded
        raise GraphcError(
            f"larger than {limits.MAX_MODEL_BYTES:,} bytes: more than graphc imports",
            where=str(path),
            hint="graphc holds tensors of at most 2**28 numbers; a model this large is not one it can run",
            code="E613",
        )
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as err:  # protobuf's DecodeError, onnx's ValidationError: the file is not a valid model
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GraphcError(
            f"not a valid ONNX model: {first}", where=str(path), hint="graphc imports .onnx files", code="E613"
        ) from None
    return model


def recognise(model: Any, where: str) -> tuple[list[Statement], _Model]:
    """Every value the model computes as graphc statements, in the model's (topological) order,
    and the model as the recognizers left it (a Gemm's weights transposed)."""
    from onnx import numpy_helper

    m = _Model(model.graph)
    for init in model.graph.initializer:
        m.constants[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        if len(node.output) != 1:
            raise _unsupported(node, where, "graphc's ops compute one value each")
        m.producers[node.output[0]] = node
        if node.op_type == "Constant":
            m.constants[node.output[0]] = numpy_helper.to_array(_attr(node, "value"))
    statements: list[Statement] = []
    for node in reversed(model.graph.node):  # from the outputs: a pattern's root before its parts
        if node.name in m.used or node.op_type in ("Constant", "Cast") or not _needed(m, node, statements):
            continue
        statements.append(_recognise_node(m, node, where))
    return _ordered(model, statements), m


def _needed(m: _Model, node: Any, statements: list[Statement]) -> bool:
    """Whether a graph output or a recognised statement reads node's value."""
    value = node.output[0]
    outputs = {o.name for o in m.graph.output}
    return value in outputs or any(value in (m.through_casts(a) for a in s.args) for s in statements)


def _recognise_node(m: _Model, node: Any, where: str) -> Statement:
    for recognize in RECOGNIZERS.get(node.op_type, ()):
        used = set(m.used)
        try:
            return recognize(m, node)
        except _NoMatch:
            m.used = used  # a failed pattern claims nothing
    raise _unsupported(node, where)


def _unsupported(node: Any, where: str, why: str = "") -> GraphcError:
    covered = ", ".join(sorted(RECOGNIZERS))
    because = f" ({why})" if why else ""
    return GraphcError(
        f"graphc import has no op for ONNX node `{node.name or node.output[0]}` ({node.op_type}){because}",
        where=where,
        hint=f"ONNX ops graphc imports, in the forms graphc's export writes: {covered}",
        code="E908",
    )


def _ordered(model: Any, statements: list[Statement]) -> list[Statement]:
    position = {node.output[0]: i for i, node in enumerate(model.graph.node)}
    return sorted(statements, key=lambda s: position[s.out])


# --- the .graph text ---------------------------------------------------------------------


class _Names:
    """graphc names for ONNX values: kept where they are graphc names already, else made so, uniquely."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.taken: set[str] = set()

    def __call__(self, value: str) -> str:
        if value not in self.names:
            name = value if _NAME.match(value) else re.sub(r"\W", "_", value).strip("_") or "value"
            if not re.match(r"[A-Za-z_]", name):
                name = f"v_{name}"
            if name in _KEYWORDS:
                name = f"{name}_"
            base, k = name, 1
            while name in self.taken:
                k += 1
                name = f"{base}_{k}"
            self.taken.add(name)
            self.names[value] = name
        return self.names[value]


def _type_text(dtype: str | None, dims: list[Any]) -> str:
    return f"{dtype or ''}[{', '.join(str(d) for d in dims)}]"


def _value_text(array: np.ndarray) -> str:
    """A value as the language writes it, each number in the fewest digits that give it back in its dtype."""
    if array.ndim == 0:
        number = array[()]
        if float(number).is_integer() and abs(float(number)) < 1e15:
            return str(int(number))
        return str(number)
    return "[" + ", ".join(_value_text(row) for row in array) + "]"


def _model_dtype(model: Any, info: Any, where: str) -> str:
    element = info.type.tensor_type.elem_type
    if element not in _DTYPE:
        raise GraphcError(
            f"input `{info.name}` has an ONNX element type graphc has no dtype for ({element})",
            where=where,
            hint="graphc's dtypes are f32, f64 and i64",
            code="E908",
        )
    return _DTYPE[element]


def import_model(path: str | Path, weights_name: str = "the weights file") -> Imported:
    """The model at `path` as graphc text, params and state; the text says
    the params' values are in `weights_name`."""
    where = str(path)
    model = read_model(path)
    statements, m = recognise(model, where)
    return _write(model, statements, m, where, weights_name)


def _write(model: Any, statements: list[Statement], m: _Model, where: str, weights_name: str) -> Imported:
    graph, constants = model.graph, m.constants
    listed = _metadata_params(model)
    names = _Names()
    reads = _constant_reads(m, statements, constants)
    for declared in (*(i.name for i in graph.input), *reads):
        names(declared)  # declared names first keep theirs
    labels, images = _roles(m, statements)
    lines = [f"# Imported from {Path(where).name} by graphc import ({_producer(model)})."]
    lines.append(f"graph {_graph_name(graph.name)} {{")
    state_of: dict[str, str] = {}
    for s in statements:
        for item, value in zip(("running_mean", "running_var"), s.state):
            state_of[value] = f"{names(s.out)}.{item}"
    for info in graph.input:
        if info.name in constants:
            continue  # an initializer listed as an input too (IR < 4): a param below
        dims = [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]
        role = " from labels" if info.name in labels else " from images" if info.name in images else ""
        lines.append(f"    input {names(info.name)}: {_type_text(_model_dtype(model, info, where), dims)}{role}")
    params: dict[str, np.ndarray] = {}
    state: dict[str, np.ndarray] = {}
    literals: dict[str, str] = {}
    for value, weak in reads.items():
        array, name = constants[value], names(value)
        if value in state_of:
            state[state_of[value]] = array
            continue
        if (value not in listed) if listed is not None else weak:
            if _literal(value, array):
                literals[value] = value  # written in the call, as graphc's export names it
                continue
            dtype = "" if weak else _DTYPE.get(_element(array), "")
            typed = f": {dtype}[{', '.join(map(str, array.shape))}]" if dtype and array.ndim else ""
            lines.append(f"    const {name}{typed} = {_value_text(array)}")
            continue
        params[name] = array
        declared = _type_text(_DTYPE.get(_element(array)), list(array.shape))
        lines.append(f"    param {name}: {declared} = {_init_text(array, weights_name)}")
    lines.append("")
    for s in statements:
        under = [m.through_casts(a) for a in s.args]  # graphc casts operands itself
        args = [literals.get(a) or names(a) for a in under]
        attrs = [f"{k}={v}" for k, v in s.attrs if not _is_default(s.op, k, v)]
        lines.append(f"    {names(s.out)} = {s.op}({', '.join(args + attrs)})")
    lines.append("")
    lines.append(f"    output {', '.join(names(o) for o in _outputs(graph, statements))}")
    lines.append("}")
    renamed = {value: name for value, name in names.names.items() if value != name and value not in literals}
    if renamed:
        shown = ", ".join(f"`{value}` is `{name}`" for value, name in renamed.items())
        lines.insert(1, f"# Renamed, as the ONNX names are not graphc names: {shown}.")
    if params:
        lines.insert(1, f"# Its params' values are in {weights_name}: graphc run THIS_FILE --weights {weights_name}")
    return Imported("\n".join(lines) + "\n", params, state, renamed)


def _literal(name: str, array: np.ndarray) -> bool:
    """Whether a const is a number or list written in a call: graphc's export names it by its text."""
    try:
        written = ast.literal_eval(name)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False
    try:
        return bool(np.array_equal(np.asarray(written, dtype=np.float64), array))
    except (ValueError, TypeError):
        return False


def _is_default(op: str, attribute: str, text: str) -> bool:
    """Whether an attribute's value is the op's default, which the statement leaves out."""
    from graphc.ops import REGISTRY

    default = REGISTRY[op].attributes[attribute].default
    return text == str(default) or (isinstance(default, float) and float(text) == default)


def _init_text(array: np.ndarray, weights_name: str) -> str:
    """A param's initializer: its value where it is small, else `zeros` (the values are in the weights)."""
    if array.size and not array.any():
        return "zeros"
    if array.size <= _INLINE:
        return _value_text(array)
    return f"zeros    # its values: {weights_name}"


def _outputs(graph: Any, statements: list[Statement]) -> list[str]:
    """The model's outputs, but for the scores of a first output's loss that graphc's export adds
    last (for serving): graphc computes them on the way to the loss, and predicts from them."""
    outputs = [o.name for o in graph.output]
    loss = next((s for s in statements if s.out == outputs[0] and s.op == "softmax_loss"), None)
    if loss is not None and len(outputs) > 1 and outputs[-1] == loss.args[0]:
        outputs.pop()
    return outputs


def _constant_reads(m: _Model, statements: list[Statement], constants: dict[str, np.ndarray]) -> dict[str, bool]:
    """The constants the statements read, in first-read order, each with whether it is weak: read
    through a Cast, as graphc's export casts a number written with no dtype to the dtype it meets."""
    reads: dict[str, bool] = {}
    for s in statements:
        for a in s.args:
            under = m.through_casts(a)
            if under in constants:
                reads[under] = reads.get(under, False) or under != a
        for item in s.state:
            reads[item] = False
    for output in m.graph.output:  # a param the graph outputs as it is
        if output.name in constants:
            reads.setdefault(output.name, False)
    return reads


def _roles(m: _Model, statements: list[Statement]) -> tuple[set[str], set[str]]:
    """The inputs a loss reads as labels, and the other inputs of the graph then: its images."""
    inputs = {i.name for i in m.graph.input}
    labels = {s.args[1] for s in statements if s.op == "softmax_loss" and s.args[1] in inputs}
    images = inputs - labels - {i.name for i in m.graph.initializer} if labels else set()
    return labels, images if len(images) == 1 else set()


def _metadata_params(model: Any) -> set[str] | None:
    """The params graphc's export listed; None for a model from elsewhere (every number it reads
    is then a param, but for those cast to the dtype they meet: numbers written with no dtype)."""
    for prop in model.metadata_props:
        if prop.key == _PARAMS_KEY:
            return {name for name in prop.value.split(",") if name}
    return None


def _element(array: np.ndarray) -> int:
    return {np.dtype(np.float32): 1, np.dtype(np.float64): 11, np.dtype(np.int64): 7}.get(array.dtype, 0)


def _producer(model: Any) -> str:
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return f"written by {producer}" if producer else "producer unknown"


def _graph_name(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name).strip("_")
    return cleaned if cleaned and re.match(r"[A-Za-z_]", cleaned) else f"imported_{cleaned}" if cleaned else "imported"


def import_file(path: str | Path, output: str | Path, weights: str | Path | None = None) -> Program:
    """Import the model at `path` into the .graph file `output`, and its params and state
    into a checkpoint at `weights` (by default `output` with .npz), atomically: the
    imported graph is compiled and its checkpoint made before either file is written."""
    from graphc.checkpoint import save_checkpoint
    from graphc.fileio import write_text
    from graphc.program import compile_source

    weights = Path(weights) if weights is not None else Path(output).with_suffix(".npz")
    imported = import_model(path, weights.name)
    text = imported.text.replace("THIS_FILE", Path(output).name)
    program = compile_source(text, str(output))
    for name, value in imported.params.items():
        program.params[name] = value.astype(program.params[name].dtype, copy=False)
    for name, value in imported.state.items():
        program.state[name][...] = value
    if program.param_names or program.state:
        save_checkpoint(weights, program)
    write_text(output, text)
    return program

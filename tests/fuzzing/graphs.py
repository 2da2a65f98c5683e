"""Hypothesis strategies for `.graph` text: valid graphs, and graphs with a person's mistakes.

`valid_graphs()` draws a random DAG of every op of the registry (OPS) whose shapes and dtypes
agree (broadcasting included; images [N, C, H, W] with windows, strides and padding that fit;
batches of rows for batchnorm), uses of blocks (the standard library's, imported, and the file's
own: shape-keeping, affine, sized by attributes, nested, convolutional, of two operands; named,
unnamed and `repeat`ed), and writes it every way the language allows: functional calls and `->`
chains with `as`, literal operands, consts, params with every initializer, inputs with literal
defaults, made-up data or none (then the graph comes with values to feed), several outputs,
outputs that are inputs, params or consts, values read several times, graphs with no params,
`dim` declarations, expectations, comments, tabs, CRLF line ends, a byte-order mark, a second
graph. Each is a `GeneratedGraph`: the text, and what running it needs and what it is made of.

`near_valid_graphs()` takes a valid graph and makes one to three mistakes in it: wrong
arities, unknown ops and attributes, attribute values out of range (ratio, momentum, eps,
stride, pad, size), duplicate and undefined names, cycles, conflicting dims, absurd sizes,
huge and odd numbers, odd unicode and control characters, very long names, deep list nesting,
broken statements (windows that do not fit, odd `repeat`s); and in its imports and blocks:
missing, odd and circular imports, blocks that use themselves, clash or lack `out`, and uses
of them with odd arguments.

The grammar is grammars/graphc.lark; what elaboration accepts is graphc/elaborate.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from graphc.ops import REGISTRY, BroadcastClash, broadcast_shapes

Dim = int | str  # a size, or the symbolic dim "N"
Shape = tuple[Dim, ...]

# Every op of graphc.ops.REGISTRY (tests/test_fuzz.py checks that none is left out).
OPS = (
    "mul", "add", "relu", "sigmoid", "affine", "softmax_loss", "sub", "div", "tanh", "exp", "log", "square", "sum",
    "mean", "dropout", "batchnorm", "conv2d", "max_pool", "flatten", "avg_pool",
)  # fmt: skip
# The blocks of graphc's standard library (std/layers.graph), by what they take besides x.
STD_BLOCKS = {
    "linear": ("n_out",), "dense": ("n_out",), "sigmoid_dense": ("n_out",), "dense_dropout": ("n_out", "ratio"),
    "bn_relu": ("n_out",), "bn_relu_dropout": ("n_out", "ratio"),
}  # fmt: skip
BLOCK_KINDS = ("std", "keep", "dense", "ratio", "nested", "conv", "two")  # see _Builder._use_block
SHAPE_KEEPING = ("relu", "sigmoid", "tanh", "square", "dropout")  # unary ops a block may stack
INITIALIZERS = ("zeros", "ones", "normal(0.1)", "uniform(-1, 1)", "he", "xavier")

# Names a person may well choose that Python, numpy or the generated module use themselves.
TRICKY_NAMES = (
    "class", "lambda", "def", "None", "True", "import", "sum", "len", "print", "np", "numpy",
    "params", "saved", "dout", "seed", "d_x", "sigmoid", "softmax_cross_entropy", "as_labels",
    "forward", "backward", "init_params", "example_inputs", "loss_and_grads", "scores", "predict",
    "DTYPE", "f32", "f64", "i64", "_", "__name__", "self", "x_", "relu", "mul", "zeros", "onehot",
    "N", "relu1", "mul1", "affine1", "out", "rng", "float64",
)  # fmt: skip


@dataclass
class Value:
    name: str
    shape: Shape
    dtype: str  # f64, f32, i64
    kind: str  # input, param, const, node
    labels: bool = False  # one-hot rows or class indices: read as softmax_loss's labels only
    classes: int = 0  # for labels: how many classes they are labels of
    # Computed from consts with no dtype written (and literals) alone: its dtype is its readers'.
    weak: bool = False


@dataclass
class Node:
    name: str
    op: str
    args: list[tuple[str, str | None]]  # (text, the value's name, or None for a literal)
    attrs: list[str] = field(default_factory=list)
    repeat: int = 0  # a block used `repeat K` times over in a chain (then never in functional form)


@dataclass
class GeneratedGraph:
    """A generated .graph file and what it takes to run it."""

    text: str
    name: str  # the first graph's
    values: dict[str, Value]  # every value a person can name, by name
    outputs: tuple[str, ...]
    feeds: dict[str, np.ndarray]  # inputs with no value in the file: what to feed them
    has_expects: bool
    dtype: str
    second_graph: str | None = None  # the name of a second graph in the file, if any
    lines: list[str] = field(default_factory=list)  # the first graph's statements, before formatting
    prelude: list[str] = field(default_factory=list)  # the imports and block definitions before the graph
    ops: frozenset[str] = frozenset()  # the ops its graph applies (not counting those inside blocks)
    blocks: frozenset[str] = frozenset()  # the blocks it uses: std's by name, the file's own as blk_KIND

    @property
    def params(self) -> list[str]:
        return [v.name for v in self.values.values() if v.kind == "param"]


# --- numbers and literals ------------------------------------------------------------


def number_text(value: float, draw) -> str:
    """A number as a person may write it: 2, 2.0, +2, 2e0, .5."""
    if float(value).is_integer() and abs(value) < 1e6:
        whole = int(value)
        return draw(st.sampled_from([str(whole), f"{whole}.0", f"{whole}e0" if whole else "0"]))
    return repr(float(value))


def small_numbers(dtype: str = "f64") -> st.SearchStrategy[float]:
    if dtype == "i64":
        return st.integers(-3, 3).map(float)
    halves = st.integers(-8, 8).map(lambda k: k / 2)
    floats = st.floats(-3, 3, allow_nan=False, width=32 if dtype == "f32" else 64).map(lambda v: round(v, 4))
    return st.one_of(halves, floats)


def literal_text(array: np.ndarray, draw) -> str:
    """An array as a nested list literal (a scalar as a number), maybe with trailing commas."""
    if array.ndim == 0:
        return number_text(float(array), draw)
    trailing = draw(st.booleans()) and draw(st.booleans())
    items = [literal_text(row, draw) for row in array]
    # A list may go on over several lines, as a matrix is written.
    separator = ",\n        " if array.ndim > 1 and draw(st.integers(0, 5)) == 0 else ", "
    return "[" + separator.join(items) + ("," if trailing else "") + "]"


def concrete(shape: Shape, n: int) -> tuple[int, ...]:
    return tuple(n if isinstance(d, str) else d for d in shape)


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """The shape graphc broadcasts a and b to (equal dims, or one of them 1; a symbol only
    equals itself), or None where it refuses them."""
    try:
        return broadcast_shapes(a, b)
    except BroadcastClash:
        return None


def shape_text(shape: Shape, draw) -> str:
    trailing = "," if shape and draw(st.integers(0, 5)) == 0 else ""
    return "[" + ", ".join(str(d) for d in shape) + trailing + "]"


# --- building a valid graph -------------------------------------------------------------


class _Builder:
    """Draws the values and nodes of one valid graph."""

    def __init__(self, draw, dtype: str, n: int, symbolic: str):
        self.draw = draw
        self.dtype = dtype
        self.n = n  # the size of the symbolic dim N
        # How N gets its size: "dim" (declared), "literal" (only by literal defaults and feeds).
        self.symbolic = symbolic
        self.values: dict[str, Value] = {}
        self.decls: list[str] = []  # declaration statements
        self.nodes: list[Node] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.taken: set[str] = set(STD_BLOCKS)  # a value named like a block would read as a use of it
        self.roles: set[str] = set()
        self.blocks: dict[str, list[str]] = {}  # the file's own blocks: name -> definition lines
        self.std = False  # whether the file imports std/layers.graph

    # names

    def fresh(self, stem: str) -> str:
        draw = self.draw
        kind = draw(st.integers(0, 9))
        if kind == 0:
            candidate = draw(st.sampled_from(TRICKY_NAMES))
        elif kind == 1:
            candidate = draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,40}", fullmatch=True))
        else:
            candidate = f"{stem}{len(self.taken)}"
        if candidate in self.taken or candidate in ("graph", "input", "param", "const", "output", "expect", "dim"):
            candidate = f"{stem}{len(self.taken)}"
        while candidate in self.taken:
            candidate += "_"
        self.taken.add(candidate)
        return candidate

    def typed(self, shape: Shape, dtype: str | None = None, *, literal: bool, write_type: bool | None = None) -> str:
        """`: f32[2, 3]`, `: [2, 3]`, or for a literal value (which says its own shape) `: f32` or nothing."""
        dtype = dtype or self.dtype
        if write_type is None:
            write_type = dtype != "f64" or not literal or "N" in shape or self.draw(st.integers(0, 3)) > 0
        if not write_type:
            return ""
        written_dtype = dtype != "f64" or self.draw(st.booleans())
        # The literal gives the shape, but not which of its dims is N.
        if literal and "N" not in shape and written_dtype and self.draw(st.integers(0, 3)) == 0:
            return f": {dtype}"
        return f": {dtype + ' ' * self.draw(st.integers(0, 1)) if written_dtype else ''}{shape_text(shape, self.draw)}"

    def random_array(self, shape: Shape, dtype: str | None = None) -> np.ndarray:
        """Small numbers: quarters (exact in any dtype), or a few decimals."""
        dims = concrete(shape, self.n)
        rng = np.random.default_rng(self.draw(st.integers(0, 2**16)))
        if (dtype or self.dtype) == "i64":
            return rng.integers(-3, 4, size=dims)
        if self.draw(st.booleans()):
            return rng.integers(-12, 13, size=dims) / 4
        return np.round(rng.normal(size=dims) * 2, 3)

    # leaves

    def shape(self, symbolic_ok: bool, min_rank: int = 0) -> Shape:
        rank = self.draw(st.integers(min_rank, 3))
        dims: list[Dim] = [self.draw(st.integers(1, 4)) for _ in range(rank)]
        if symbolic_ok and dims and self.draw(st.integers(0, 2)) == 0:
            dims[0] = "N"
        return tuple(dims)

    def input(self, shape: Shape | None = None, *, labels: str | None = None, classes: int = 0) -> Value:
        """An input: a literal default, made-up data (an initializer), or nothing (then fed)."""
        draw = self.draw
        if shape is None:
            shape = self.shape(symbolic_ok=True)
        dtype = "i64" if labels == "indices" else self.dtype
        name = self.fresh("t" if labels else "x")
        symbolic = "N" in shape
        ways = ["literal", "feed"]
        if self.symbolic == "dim" or not symbolic:
            ways.append("init")
        if not symbolic and not labels:
            ways.append("untyped")
        way = draw(st.sampled_from(ways))
        array = self.label_array(shape, labels, classes) if labels else self.random_array(shape, dtype)
        role = ""
        if labels and "labels" not in self.roles and draw(st.integers(0, 3)) == 0:
            self.roles.add("labels")
            role = " from labels"
        elif not labels and "images" not in self.roles and draw(st.integers(0, 5)) == 0:
            self.roles.add("images")
            role = " from images"
        if way == "untyped" and dtype == "f64":
            text = f"input {name} = {literal_text(array, draw)}{role}"
        elif way in ("literal", "untyped") or (way == "init" and labels == "indices"):
            # (no initializer makes class indices: those are written out)
            typed = self.typed(shape, dtype, literal=True, write_type=True)
            text = f"input {name}{typed} = {literal_text(array, draw)}{role}"
        elif way == "init":
            init = "onehot" if labels == "onehot" else draw(st.sampled_from(INITIALIZERS))
            text = f"input {name}{self.typed(shape, dtype, literal=False)} = {init}{role}"
        else:
            text = f"input {name}{self.typed(shape, dtype, literal=False)}{role}"
            self.feeds[name] = array
        self.decls.append(text)
        value = Value(name, shape, dtype, "input", labels=bool(labels), classes=classes)
        self.values[name] = value
        return value

    def label_array(self, shape: Shape, labels: str, classes: int) -> np.ndarray:
        dims = concrete(shape, self.n)
        seed = self.draw(st.integers(0, 2**16))
        rng = np.random.default_rng(seed)
        if labels == "indices":
            return rng.integers(0, classes, size=dims).astype(np.int64)
        rows = rng.integers(0, dims[-1], size=dims[:-1])
        return np.eye(dims[-1])[rows]

    def param(self, shape: Shape | None = None) -> Value:
        draw = self.draw
        if shape is None:
            shape = self.shape(symbolic_ok=False)
        name = self.fresh("w")
        way = draw(st.sampled_from(["init", "init", "literal", "scalar"]))
        if way == "init":
            text = f"param {name}{self.typed(shape, literal=False)} = {draw(st.sampled_from(INITIALIZERS))}"
        elif way == "scalar":  # one number fills the declared shape
            text = f"param {name}{self.typed(shape, literal=False)} = {number_text(draw(small_numbers()), draw)}"
        else:
            text = f"param {name}{self.typed(shape, literal=True)} = {literal_text(self.random_array(shape), draw)}"
        self.decls.append(text)
        value = Value(name, shape, self.dtype, "param")
        self.values[name] = value
        return value

    def const(self, shape: Shape | None = None) -> Value:
        draw = self.draw
        if shape is None:
            shape = self.shape(symbolic_ok=False)
        name = self.fresh("c")
        if shape and draw(st.booleans()):  # one number fills the declared shape
            text = f"const {name}{self.typed(shape, literal=False)} = {number_text(draw(small_numbers()), draw)}"
        else:
            # With no dtype written, a const takes its readers' dtype.
            typed = self.typed(shape, literal=True)
            if self.dtype != "f64" and draw(st.booleans()):
                typed = ""
            text = f"const {name}{typed} = {literal_text(self.random_array(shape), draw)}"
        self.decls.append(text)
        value = Value(name, shape, self.dtype, "const", weak=not re.search(r": ?(f32|f64)", text))
        self.values[name] = value
        return value

    def leaf(self) -> Value:
        kind = self.draw(st.sampled_from(["input", "input", "param", "const"]))
        return getattr(self, kind)()

    # operands

    def floats(self) -> list[Value]:
        return [v for v in self.values.values() if not v.labels and v.dtype != "i64"]

    def operand(self, min_rank: int = 0) -> Value:
        """An existing float value (recent ones likelier, so graphs grow deep), or a new leaf."""
        candidates = [v for v in self.floats() if len(v.shape) >= min_rank]
        nodes = [v for v in candidates if v.kind == "node"]
        if nodes and self.draw(st.booleans()):  # the newest node: a chain of ops, `x -> f -> g as h -> ...`
            return nodes[-1]
        if candidates and self.draw(st.integers(0, 4)) > 0:
            return candidates[self.draw(st.integers(0, len(candidates) - 1))]
        shape = self.shape(symbolic_ok=True, min_rank=min_rank)
        return self.input(shape) if self.draw(st.booleans()) else self.param(tuple(d if d != "N" else 2 for d in shape))

    def literal_operand(self, shape: Shape) -> tuple[str, str | None]:
        """A literal argument of a concrete shape: `2`, `[1, 2]`."""
        assert all(isinstance(d, int) for d in shape)
        return literal_text(self.random_array(shape), self.draw), None

    def fitting_shape(self, shape: Shape) -> Shape:
        """A concrete shape that broadcasts with `shape`: a suffix of it, with some dims 1."""
        draw = self.draw
        keep = draw(st.integers(0, len(shape)))
        suffix = shape[len(shape) - keep :]
        return tuple(1 if isinstance(d, str) or draw(st.integers(0, 3)) == 0 else d for d in suffix)

    # nodes

    def node(self) -> None:
        if self.draw(st.integers(0, 4)) == 0:
            self._use_block()
            return
        op = self.draw(st.sampled_from(OPS))
        getattr(self, "_" + op)()

    def add_node(
        self, op: str, args: list[tuple[str, str | None]], shape: Shape, attrs: list[str] | None = None
    ) -> None:
        name = self.fresh(op[0])
        self.nodes.append(Node(name, op, args, attrs or []))
        weak = all(self.values[arg].weak for _, arg in args if arg is not None)
        self.values[name] = Value(name, shape, self.dtype, "node", weak=weak)

    def strong(self, value: Value) -> Value:
        """`value`, or in a graph of f32 where it is weak, an input of its shape in its place: a
        block's params take the dtype of its first operand as the block is expanded, before a weak
        value's readers decide its dtype (graphc says so, E214)."""
        return self.input(value.shape) if value.weak and self.dtype != "f64" else value

    def _elementwise2(self, op: str) -> None:
        draw = self.draw
        a = self.operand()
        choice = draw(st.integers(0, 5))
        args: list[tuple[str, str | None]]
        shape: Shape | None
        if choice == 0:  # read twice
            args, shape = [(a.name, a.name), (a.name, a.name)], a.shape
        elif choice <= 2:
            others = [v for v in self.floats() if broadcast(a.shape, v.shape) is not None]
            b = draw(st.sampled_from(others)) if others and draw(st.booleans()) else None
            if b is None:
                fitting = self.fitting_shape(a.shape)
                b = self.param(fitting) if draw(st.booleans()) else self.const(fitting)
            shape = broadcast(a.shape, b.shape)
            assert shape is not None
            args = [(a.name, a.name), (b.name, b.name)]
        elif choice <= 4:  # a literal operand
            fitting = self.fitting_shape(a.shape)
            args = [(a.name, a.name), self.literal_operand(fitting)]
            shape = broadcast(a.shape, fitting)
            assert shape is not None
        else:  # both literals: a scalar node
            args = [self.literal_operand(()), self.literal_operand(())]
            shape = ()
        if draw(st.integers(0, 3)) == 0:
            args.reverse()
        assert shape is not None
        self.add_node(op, args, shape)

    def _mul(self) -> None:
        self._elementwise2("mul")

    def _add(self) -> None:
        self._elementwise2("add")

    def _unary(self, op: str) -> None:
        if self.draw(st.integers(0, 7)) == 0:
            self.add_node(op, [self.literal_operand(())], ())
            return
        x = self.operand()
        self.add_node(op, [(x.name, x.name)], x.shape)

    def _relu(self) -> None:
        self._unary("relu")

    def _sigmoid(self) -> None:
        self._unary("sigmoid")

    def _sub(self) -> None:
        self._elementwise2("sub")

    def _div(self) -> None:
        self._elementwise2("div")  # a zero divisor gives inf or NaN, as in numpy: a result, not a crash

    def _tanh(self) -> None:
        self._unary("tanh")

    def _exp(self) -> None:
        self._unary("exp")

    def _square(self) -> None:
        self._unary("square")

    def _sum(self) -> None:
        self._reduction("sum")

    def _mean(self) -> None:
        self._reduction("mean")

    def _reduction(self, op: str) -> None:
        """Over every axis, or over one (negative from the end too), its dim kept or dropped."""
        draw = self.draw
        x = self.operand()
        if not x.shape or draw(st.integers(0, 2)) == 0:
            keep = bool(x.shape) and draw(st.booleans())
            shape = tuple(1 for _ in x.shape) if keep else ()
            self.add_node(op, [(x.name, x.name)], shape, ["keepdims=true"] if keep else [])
            return
        axis = draw(st.integers(-len(x.shape), len(x.shape) - 1))
        keep = draw(st.booleans())
        at = axis % len(x.shape)
        shape = tuple(1 if i == at else d for i, d in enumerate(x.shape)) if keep else x.shape[:at] + x.shape[at + 1 :]
        self.add_node(op, [(x.name, x.name)], shape, [f"axis={axis}"] + (["keepdims=true"] if keep else []))

    def _log(self) -> None:
        self._unary("log")  # log of 0 or of a negative number is -inf or NaN, as in numpy

    def _dropout(self) -> None:
        x = self.operand()
        attrs = [f"ratio={self.draw(st.sampled_from(['0', '0.0', '0.25', '0.5', '0.9', '0.999', '1e-3']))}"]
        self.add_node("dropout", [(x.name, x.name)], x.shape, attrs if self.draw(st.booleans()) else [])

    def _flatten(self) -> None:
        x = self.operand(min_rank=2)
        self.add_node("flatten", [(x.name, x.name)], (x.shape[0], math.prod(concrete(x.shape[1:], 1))))

    def _batchnorm(self) -> None:
        """A batch of rows [N or k, features], gamma and beta of one number per feature."""
        draw = self.draw
        rows = [v for v in self.floats() if len(v.shape) == 2 and isinstance(v.shape[1], int)]
        x = draw(st.sampled_from(rows)) if rows and draw(st.integers(0, 3)) > 0 else None
        if x is None:
            x = self.input((draw(st.sampled_from(["N", 1, 2, 4])), draw(st.integers(1, 4))))
        features = (x.shape[1],)
        args = [(x.name, x.name)]
        for init in ("ones", "zeros"):
            choice = draw(st.integers(0, 5))
            same = [v for v in self.floats() if v.shape == features]
            if choice == 0:
                args.append(self.literal_operand(features))
            elif choice == 1 and same:
                v = draw(st.sampled_from(same))
                args.append((v.name, v.name))
            else:
                name = self.fresh("gamma" if init == "ones" else "beta")
                way = draw(st.sampled_from([init, init, *INITIALIZERS]))
                self.decls.append(f"param {name}{self.typed(features, literal=False)} = {way}")
                self.values[name] = Value(name, features, self.dtype, "param")
                args.append((name, name))
        attrs = []
        if draw(st.booleans()):
            attrs.append(f"momentum={draw(st.sampled_from(['0', '0.5', '0.9', '0.99']))}")
        if draw(st.booleans()):
            attrs.append(f"eps={draw(st.sampled_from(['1e-7', '1e-5', '0.5', '0.999']))}")
        self.add_node("batchnorm", args, x.shape, attrs)

    # images

    def image(self) -> Value:
        """A float value [N, C, H, W] of known height and width: an existing one, or a new input or param."""
        draw = self.draw
        images = [v for v in self.floats() if len(v.shape) == 4 and all(isinstance(d, int) for d in v.shape[1:])]
        if images and draw(st.integers(0, 2)) > 0:
            return images[-1] if draw(st.booleans()) else draw(st.sampled_from(images))
        # Small: gradcheck moves each number of each input and param in turn.
        batch, channels = draw(st.sampled_from(["N", 1, 2])), draw(st.integers(1, 2))
        shape = (batch, channels, draw(st.integers(1, 5)), draw(st.integers(1, 5)))
        if draw(st.integers(0, 3)) == 0:
            return self.param(tuple(2 if d == "N" else d for d in shape))
        return self.input(shape)

    def window(self, sizes: tuple[int, ...], stride: int, pad: int) -> int | None:
        """A window (at most 4 across) that fits each of `sizes` padded, moved by `stride` a whole number of times."""
        fitting = [
            k for k in range(1, 5) if all(size + 2 * pad >= k and (size + 2 * pad - k) % stride == 0 for size in sizes)
        ]
        return self.draw(st.sampled_from(fitting)) if fitting else None

    def _window_attrs(self, defaults: dict[str, int], chosen: dict[str, int]) -> list[str]:
        """The window's attributes, each written when it is not the default, or at times anyway."""
        draw = self.draw
        attrs = [f"{k}={v}" for k, v in chosen.items() if v != defaults[k] or draw(st.integers(0, 3)) == 0]
        return draw(st.permutations(attrs)) if attrs else []

    def _conv2d(self) -> None:
        draw = self.draw
        x = self.image()
        n, c, h, w = x.shape
        assert isinstance(h, int) and isinstance(w, int)
        stride, pad = draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([0, 0, 1, 2]))
        fh, fw = self.window((h,), stride, pad), self.window((w,), stride, pad)
        if fh is None or fw is None:
            stride, fh, fw = 1, 1, 1
        fn = draw(st.integers(1, 2))
        filters = [v for v in self.floats() if v.shape == (fn, c, fh, fw)]
        f = draw(st.sampled_from(filters)) if filters and draw(st.booleans()) else self.param((fn, c, fh, fw))
        bias_choice = draw(st.integers(0, 3))
        if bias_choice == 0:
            b_arg = self.literal_operand((fn,))
        else:
            biases = [v for v in self.floats() if v.shape == (fn,)]
            b = draw(st.sampled_from(biases)) if biases and bias_choice == 1 else self.param((fn,))
            b_arg = (b.name, b.name)
        out = (n, fn, (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1)
        attrs = self._window_attrs({"stride": 1, "pad": 0}, {"stride": stride, "pad": pad})
        self.add_node("conv2d", [(x.name, x.name), (f.name, f.name), b_arg], out, attrs)

    def _pool(self, op: str) -> None:
        draw = self.draw
        x = self.image()
        n, c, h, w = x.shape
        assert isinstance(h, int) and isinstance(w, int)
        stride, pad = draw(st.sampled_from([1, 2, 2, 3])), draw(st.sampled_from([0, 0, 0, 1]))
        size = self.window((h, w), stride, pad)
        if size is None:
            stride, pad, size = 1, 0, 1
        out = (n, c, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1)
        attrs = self._window_attrs({"size": 2, "stride": 2, "pad": 0}, {"size": size, "stride": stride, "pad": pad})
        self.add_node(op, [(x.name, x.name)], out, attrs)

    def _max_pool(self) -> None:
        self._pool("max_pool")

    def _avg_pool(self) -> None:
        self._pool("avg_pool")

    # blocks

    def rows(self, *, ranks: tuple[int, ...] = (1, 2)) -> Value:
        """A float value whose last dim is a known number of features (at most 16): what affine takes."""
        draw = self.draw
        fits = [
            v for v in self.floats() if len(v.shape) in ranks and isinstance(v.shape[-1], int) and v.shape[-1] <= 16
        ]
        if fits and draw(st.integers(0, 3)) > 0:
            return fits[-1] if draw(st.booleans()) else draw(st.sampled_from(fits))
        features = draw(st.integers(1, 4))
        if 1 in ranks and draw(st.integers(0, 3)) == 0:
            return self.input((features,))
        return self.input((draw(st.sampled_from(["N", 1, 2, 3])), features))

    def define(self, kind: str, params: str, body: list[str]) -> str:
        """A new block of the file's own (or, at times, one already defined of the same kind)."""
        same = [name for name in self.blocks if name.startswith(f"blk_{kind}")]
        if same and self.draw(st.booleans()):
            return self.draw(st.sampled_from(same))
        name = f"blk_{kind}{len(self.blocks)}"
        self.taken.add(name)
        brace = self.draw(st.sampled_from([" {", " {", "\n{"]))
        self.blocks[name] = [f"block {name}({params}){brace}", *[f"    {line}" for line in body], "}"]
        return name

    def _unary_links(self, head: str, keep_dims: bool) -> list[str]:
        """`x -> relu -> dropout(ratio=0.5) -> out`, or the same as assignments."""
        ops = self.draw(st.lists(st.sampled_from(SHAPE_KEEPING), min_size=1, max_size=3))
        calls = [
            f"dropout(ratio={self.draw(st.sampled_from(['0.1', '0.5']))})" if op == "dropout" else op for op in ops
        ]
        if keep_dims and self.draw(st.booleans()):
            return [f"{head} -> " + " -> ".join(calls) + " -> out"]
        lines, previous = [], head
        for k, call in enumerate(calls):
            target = "out" if k == len(calls) - 1 else f"h{k}"
            op, _, rest = call.partition("(")
            lines.append(f"{target} = {op}({previous}{', ' + rest[:-1] if rest else ''})")
            previous = target
        return lines

    def _dense_block(self) -> str:
        init_w = self.draw(st.sampled_from(INITIALIZERS))
        init_b = self.draw(st.sampled_from(["zeros", "ones", "normal(0.1)"]))
        activation = self.draw(st.sampled_from(["", " -> relu", " -> sigmoid", " -> tanh", " -> dropout(ratio=0.5)"]))
        body = [f"param W: [in(x), n] = {init_w}", f"param b: [n] = {init_b}", f"x -> affine(W, b){activation} -> out"]
        return self.define("dense", "x, n", self.draw(st.permutations(body)))

    def _use_block(self, kind: str | None = None, std: str | None = None) -> None:
        """A use of a block (of a kind of BLOCK_KINDS): of the standard library (`std`, if given) or
        of the file's own, named or not, repeated or not."""
        draw = self.draw
        kind = kind or draw(st.sampled_from(["std", *BLOCK_KINDS]))
        sizes: list[str] = []
        attrs: list[str] = []
        repeatable = True
        if kind == "std":
            block = std or draw(st.sampled_from(list(STD_BLOCKS)))
            x = self.rows(ranks=(2,) if block.startswith("bn") else (1, 2))  # batchnorm takes rows only
            self.std = True
            n = draw(st.integers(1, 4))
            ratio = draw(st.sampled_from(["0.5", "0.25", "0"]))
            values = {"n_out": str(n), "ratio": ratio}
            by_name = draw(st.booleans())
            for k, size in enumerate(STD_BLOCKS[block]):
                if by_name and k == len(STD_BLOCKS[block]) - 1:
                    attrs.append(f"{size}={values[size]}")
                else:
                    sizes.append(values[size])
            shape = x.shape[:-1] + (n,)
        elif kind in ("keep", "ratio"):
            x = self.operand(min_rank=1 if kind == "keep" else 0)
            if kind == "ratio":
                block = self.define(kind, "x, r", ["x -> dropout(ratio=r) -> out"])
                sizes.append(draw(st.sampled_from(["0.5", "0.2", "0"])))
            else:
                body = self._unary_links("x", keep_dims=True)
                if isinstance(x.shape[-1], int) and draw(st.booleans()):  # a param of one number per feature
                    body = [line.replace("-> out", "-> h").replace("out =", "h =") for line in body]
                    body += ["param s: [in(x)] = ones", "out = mul(h, s)"]
                    kind = "scale"  # (not to be used again on an x whose last dim is N)
                block = self.define(kind, "x", body)
            shape = x.shape
        elif kind in ("dense", "nested"):
            x = self.rows()
            n = draw(st.integers(1, 4))
            block = self._dense_block()
            if kind == "nested":  # a block that uses another, its values named inside the instance
                inner = draw(
                    st.sampled_from([f"x -> {block}(n) -> relu -> out", f"h = {block}(x, n)\nout = add(h, h)"])
                )
                block = self.define(kind, "x, n", inner.split("\n"))
            sizes.append(str(n) if draw(st.booleans()) else f"n={n}")
            if sizes[0].startswith("n="):
                attrs, sizes = sizes, []
            shape = x.shape[:-1] + (n,)
        elif kind == "conv":
            x = self.image()
            n, c, h, w = x.shape
            fn = draw(st.integers(1, 2))
            k, pad = draw(st.sampled_from([(3, 1), (1, 0)]))
            body = [
                f"param W: [fn, c, {k}, {k}] = he",
                "param b: [fn] = zeros",
                f"x -> conv2d(W, b, pad={pad}) -> relu -> out",
            ]
            block = self.define(f"conv{k}", "x, c, fn", body)
            sizes += [str(c), str(fn)]
            shape = (n, fn, h, w)
            repeatable = fn == c
        else:  # two operands
            x = self.operand()
            others = [v for v in self.floats() if broadcast(x.shape, v.shape) is not None]
            y = draw(st.sampled_from(others))
            op = draw(st.sampled_from(["add", "mul", "sub"]))
            block = self.define(f"two_{op}", "a, b", [f"out = {op}(a, b)"])
            shape = broadcast(x.shape, y.shape)
            assert shape is not None
            sizes.append(self.strong(y).name)
            repeatable = False
        repeat = draw(st.sampled_from([0, 0, 1, 2, 3])) if repeatable else 0
        name = self.fresh(block.removeprefix("blk_")[:5])
        while name in REGISTRY:
            name += "_"
        x = self.strong(x)
        args: list[tuple[str, str | None]] = [(x.name, x.name)]
        args += [(size, size if kind == "two" else None) for size in sizes]
        self.nodes.append(Node(name, block, args, attrs, repeat))
        self.values[name] = Value(name, shape, self.dtype, "node")

    def _affine(self) -> None:
        draw = self.draw
        x = self.operand(min_rank=1)
        features: Dim | None
        if len(x.shape) == 1:
            batch: Shape = ()
            features = x.shape[0]
        else:
            batch = x.shape[:1]
            trailing = x.shape[1:]
            features = math.prod(trailing) if all(isinstance(d, int) for d in trailing) else None
        if not isinstance(features, int) or features > 16:
            x = self.input((self.draw(st.sampled_from([2, "N"])), 3))
            batch, features = x.shape[:1], 3
        fan_out = draw(st.integers(1, 4))
        weights = [v for v in self.floats() if v.shape == (features, fan_out)]
        w = draw(st.sampled_from(weights)) if weights and draw(st.booleans()) else self.param((features, fan_out))
        out = batch + (fan_out,)
        bias_choice = draw(st.integers(0, 4))
        if bias_choice == 0:
            b_arg = self.literal_operand(draw(st.sampled_from([(fan_out,), ()])))
        else:
            biases = [v for v in self.floats() if broadcast(out, v.shape) == out]
            b = draw(st.sampled_from(biases)) if biases and bias_choice == 1 else self.param((fan_out,))
            b_arg = (b.name, b.name)
        self.add_node("affine", [(x.name, x.name), (w.name, w.name), b_arg], out)

    def _softmax_loss(self) -> None:
        draw = self.draw
        scores = [v for v in self.floats() if len(v.shape) in (1, 2)]
        y = draw(st.sampled_from(scores)) if scores and draw(st.integers(0, 3)) > 0 else self.operand(min_rank=1)
        if len(y.shape) not in (1, 2):
            y = self.param((draw(st.integers(2, 4)),))
        classes = y.shape[-1]
        if isinstance(classes, str):  # a 1-D value of N scores: N classes is not something to label
            y = self.param((3,))
            classes = 3
        kind = draw(st.sampled_from(["onehot", "indices"]))
        label_shape = y.shape if kind == "onehot" else y.shape[:-1]
        existing = [
            v
            for v in self.values.values()
            if v.labels
            and v.shape == label_shape
            and v.classes == classes
            and (v.dtype == "i64") == (kind == "indices")
        ]
        if existing and draw(st.booleans()):
            t = draw(st.sampled_from(existing))
        elif kind == "onehot" and "N" not in label_shape and draw(st.integers(0, 3)) == 0:
            name = self.fresh("t")
            array = self.label_array(label_shape, "onehot", classes)
            self.decls.append(f"const {name}{self.typed(label_shape, literal=True)} = {literal_text(array, draw)}")
            t = Value(name, label_shape, self.dtype, "const", labels=True, classes=int(classes))
            self.values[name] = t
        else:
            t = self.input(label_shape, labels=kind, classes=int(classes))
        attrs = (
            [draw(st.sampled_from(["reduction=sum", "reduction=mean", 'reduction="sum"']))]
            if draw(st.integers(0, 2)) == 0
            else []
        )
        self.add_node("softmax_loss", [(y.name, y.name), (t.name, t.name)], (), attrs)


# --- writing the statements ---------------------------------------------------------------


def _call(node: Node, args: list[tuple[str, str | None]], draw) -> str:
    parts = [text for text, _ in args] + node.attrs
    trailing = "," if parts and draw(st.integers(0, 7)) == 0 else ""
    space = draw(st.sampled_from([", ", ",", " , "]))
    return f"{node.op}({space.join(parts)}{trailing})"


def _link(node: Node, draw) -> str:
    rest = node.args[1:]
    if not rest and not node.attrs and draw(st.booleans()):
        text = node.op
    else:
        text = _call(node, rest, draw)
    return f"repeat {node.repeat} {text}" if node.repeat else text


def _node_statements(nodes: list[Node], referenced: dict[str, int], draw) -> list[str]:
    """Each node as `y = op(...)`, or runs of nodes as chains `x -> op(...) as h -> op -> y`.

    `referenced` counts the places each name is read (operands, outputs, expectations): a value
    read only by the next op of its chain may be left unnamed (graphc names it `relu1`).
    """
    lines = []
    i = 0
    while i < len(nodes):
        node = nodes[i]
        run = [node]
        if node.args[0][1] is not None and draw(st.booleans()):
            while (
                i + len(run) < len(nodes)
                and nodes[i + len(run)].args[0][1] == run[-1].name
                and draw(st.integers(0, 2)) > 0
            ):
                run.append(nodes[i + len(run)])
        while len(run) > 1 and run[-1].name in REGISTRY:  # a chain's last link names a value, not an op
            run.pop()
        functional = len(run) == 1 and (node.name in REGISTRY or draw(st.booleans())) or node.args[0][1] is None
        if functional and not node.repeat:  # (a repeated use is written only in a chain)
            lines.append(f"{node.name} = {_call(node, node.args, draw)}")
            i += 1
            continue
        parts = []
        first = run[0]
        # `op(x, ...) -> ...`: the head call's value is named by graphc unless it is the chain's last.
        head_call = (len(run) == 1 or referenced.get(first.name, 0) <= 1) and not first.repeat and draw(st.booleans())
        if head_call:
            parts.append(_call(first, first.args, draw))
            links = run[1:]
        else:
            parts.append(first.args[0][0])
            links = run
        for k, link_node in enumerate(links):
            text = _link(link_node, draw)
            last = k == len(links) - 1
            if not last and (referenced.get(link_node.name, 0) > 1 or draw(st.booleans())):
                text += f" as {link_node.name}"
            parts.append(text)
        parts.append(run[-1].name)
        # A chain may go on over lines that start with `->`.
        arrow = draw(st.sampled_from([" -> ", "->", " ->  ", "\n        -> "]))
        lines.append(arrow.join(parts))
        i += len(run)
    return lines


def _format(lines: list[str], draw, *, header: str, bom: bool) -> str:
    """The statements in a graph block, with a person's formatting: indents, blank lines,
    comments, CRLF line ends."""
    indent = draw(st.sampled_from(["    ", "  ", "\t", ""]))
    newline = "\r\n" if draw(st.integers(0, 7)) == 0 else "\n"
    body = []
    for line in lines:
        if draw(st.integers(0, 9)) == 0:
            body.append(indent + "# " + draw(st.sampled_from(["a comment", "x -> y", "é ü 名前 🙂", "graph {"])))
        if draw(st.integers(0, 9)) == 0:
            body.append("")
        comment = "  # why" if draw(st.integers(0, 9)) == 0 else ""
        body.append(indent + line + comment)
    text = header + newline + newline.join(body) + newline + "}" + newline
    return ("\ufeff" if bom else "") + text


@st.composite
def valid_graphs(draw, *, min_nodes: int = 1, max_nodes: int = 6, dtype: str | None = None) -> GeneratedGraph:
    """A graph graphc must accept and run."""
    dtype = dtype or draw(st.sampled_from(["f64"] * 7 + ["f32"]))
    symbolic = draw(st.sampled_from(["dim", "dim", "literal"]))
    n = draw(st.integers(1, 4))
    b = _Builder(draw, dtype, n, symbolic)
    for _ in range(draw(st.integers(0, 3))):
        b.leaf()
    for _ in range(draw(st.integers(min_nodes, max_nodes))):
        b.node()

    named = list(b.values)
    last = b.nodes[-1].name if b.nodes else named[-1]
    first = last if draw(st.integers(0, 4)) > 0 else draw(st.sampled_from(named))
    others = draw(st.lists(st.sampled_from(named), max_size=3, unique=True))
    outputs = [first] + [o for o in others if o != first]

    expects = []
    for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else 0):
        target = draw(st.sampled_from(named))
        of = f"grad({target})" if draw(st.booleans()) else target
        tolerance = draw(st.sampled_from(["", " within 1e-9", " within 1e300"]))
        expects.append(f"expect {of} == {number_text(draw(small_numbers()), draw)}{tolerance}")

    referenced: dict[str, int] = {}
    for node in b.nodes:
        for _, name in node.args:
            if name is not None:
                referenced[name] = referenced.get(name, 0) + 1
    for name in outputs:
        referenced[name] = referenced.get(name, 0) + 2
    for line in expects:
        for name in named:
            if re.search(rf"[ (]{re.escape(name)}[ )]", line):
                referenced[name] = referenced.get(name, 0) + 2

    statements = list(b.decls)
    if "N" in {d for v in b.values.values() for d in v.shape} and symbolic == "dim":
        statements.insert(draw(st.integers(0, len(statements))), f"dim N = {n}")
    node_lines = _node_statements(b.nodes, referenced, draw)
    # Declarations after the nodes that read them (not where a block reads a shape by `in(x)`: that
    # needs the value defined before the use).
    if not b.blocks and not b.std and draw(st.integers(0, 5)) == 0:
        statements = node_lines + statements
    else:
        statements += node_lines
    if draw(st.booleans()):
        statements.append("output " + ", ".join(outputs))
    else:
        statements += [f"output {o}" for o in outputs]
    statements += expects

    name = draw(st.sampled_from(["g", "net", "buy_apple", "class", "G_2", "dense"]))
    prelude = ['import "std/layers.graph"'] * b.std + [line for block in b.blocks.values() for line in block]
    text = _format(statements, draw, header=f"graph {name} {{", bom=False)
    if prelude and draw(st.integers(0, 3)) == 0:  # blocks and imports may come after the graph that uses them
        text += "\n" + "\n".join(prelude) + "\n"
    elif prelude:
        text = "\n".join(prelude) + "\n\n" + text
    if draw(st.integers(0, 15)) == 0:
        text = "\ufeff" + text
    second = None
    if draw(st.integers(0, 9)) == 0:
        second = "second" if name != "second" else "other"
        text += f"\ngraph {second} {{\n    input a = 2\n    b = mul(a, a)\n    output b\n}}\n"
    return GeneratedGraph(
        text,
        name,
        {k: v for k, v in b.values.items()},
        tuple(outputs),
        b.feeds,
        bool(expects),
        dtype,
        second,
        statements,
        prelude,
        frozenset(node.op for node in b.nodes if node.op in REGISTRY),
        frozenset(re.sub(r"\d+$", "", node.op) for node in b.nodes if node.op not in REGISTRY),
    )


# --- mistakes --------------------------------------------------------------------------

HUGE_INT = "9" * 5000
ODD_NUMBERS = (
    "1e400", "-1e400", "1e-400", HUGE_INT, "-" + HUGE_INT, "-0", "-0.0", "+0", "0", "nan", "NaN", "inf",
    "-inf", "Infinity", "0x10", "1_000", "1e", ".", "--1", "+-1", "99999999999999999999",
    "9223372036854775808", "-9223372036854775809", "1e308", "4.9e-324", "00012", "1.5.2", "١٢",
)  # fmt: skip
ABSURD_DIMS = (
    "0", "-1", "1000000000000", "4294967296", "9223372036854775807", "9223372036854775808",
    "18446744073709551617", "100000000000000000000", HUGE_INT, "65536", "1.5", "N", "M", "-0",
)  # fmt: skip
ODD_CHARACTERS = (
    "\ufeff", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\u200b", "\u202e", "\r",
    "\t", "é", "名前", "🙂", "e\u0301", "\x7f", "\ud7ff", "\U0010ffff", "；", "（", "－>", "\u00a0",
)  # fmt: skip
UNKNOWN_OPS = (
    "rleu", "Relu", "matmul", "softmax", "affine2", "subtract", "expo", "graph", "input", "mul2", "x", "conv",
    "maxpool", "batch_norm", "Dropout", "flaten", "avgpool", "dense2", "block", "repeat", "import", "in",
)  # fmt: skip


def _calls(lines: list[str]) -> list[tuple[int, re.Match]]:
    return [(i, m) for i, line in enumerate(lines) for m in re.finditer(r"\b([A-Za-z_]\w*)\(([^()]*)\)", line)]


def _names_in(text: str) -> list[re.Match]:
    return list(re.finditer(r"\b[A-Za-z_]\w*\b", text))


def _callable(name: str) -> bool:
    """An op, or a block of the standard library or of the generator's own."""
    return name in OPS or name in STD_BLOCKS or name.startswith("blk_")


def _wrong_arity(draw, lines):
    calls = [(i, m) for i, m in _calls(lines) if _callable(m[1])]
    if not calls:
        return lines
    i, m = draw(st.sampled_from(calls))
    args = [a for a in m[2].split(",") if a.strip()]
    if args and draw(st.booleans()):
        del args[draw(st.integers(0, len(args) - 1))]
    else:
        args += draw(st.lists(st.sampled_from(["x", "2", "[1, 2]", "W1"]), min_size=1, max_size=3))
    line = lines[i]
    return _replace(lines, i, line[: m.start(2)] + ",".join(args) + line[m.end(2) :])


def _unknown_op(draw, lines):
    ops = [(i, m) for i, line in enumerate(lines) for m in re.finditer(r"\b(" + "|".join(OPS) + r")\b", line)]
    if not ops:
        return lines
    i, m = draw(st.sampled_from(ops))
    line = lines[i]
    return _replace(lines, i, line[: m.start()] + draw(st.sampled_from(UNKNOWN_OPS)) + line[m.end() :])


BAD_ATTRIBUTES = (
    "reduction=avg", "reduction=1", "reduction=[1]", 'reduction="x"', "reduction=sum, reduction=sum",
    "axis=0", "foo=bar", "reduction=", "=sum", "reduction==sum", "reduction=\"sum\\\"\"",
    "ratio=1", "ratio=-0.5", "ratio=2", "ratio=true", "ratio=nan", "ratio=[0.5]", "ratio=1e-400",
    "momentum=1.5", "momentum=1", "eps=0", "eps=-1", "eps=1e-400", "eps=inf",
    "stride=0", "stride=-1", "stride=1.5", "stride=" + HUGE_INT, "stride=99999999999999999999",
    "pad=-1", "pad=0.5", "pad=1000000000000", "pad=" + HUGE_INT, "pad=4294967296",
    "size=0", "size=100", "size=1.5", "size=1000000000000", "size=" + HUGE_INT, "size=true",
    "n_out=0", "n_out=-1", "n_out=1000000000000", "n_out=2.5", "n=0", "n=" + HUGE_INT, "ratio=x", "x=1",
)  # fmt: skip


def _bad_attribute(draw, lines):
    calls = [(i, m) for i, m in _calls(lines) if _callable(m[1])]
    if not calls:
        return lines
    i, m = draw(st.sampled_from(calls))
    attr = draw(st.sampled_from(BAD_ATTRIBUTES))
    line = lines[i]
    inner = m[2] + (", " if m[2].strip() else "") + attr
    return _replace(lines, i, line[: m.start(2)] + inner + line[m.end(2) :])


def _duplicate_statement(draw, lines):
    if not lines:
        return lines
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines)))
    return lines[:j] + [lines[i]] + lines[j:]


def _undefined_name(draw, lines):
    spots = [(i, m) for i, line in enumerate(lines) for m in _names_in(line)]
    if not spots:
        return lines
    i, m = draw(st.sampled_from(spots))
    new = draw(st.sampled_from([m[0] + "x", m[0][:-1] or "q", m[0].upper(), "undefined", "é"]))
    line = lines[i]
    return _replace(lines, i, line[: m.start()] + new + line[m.end() :])


def _cycle(draw, lines):
    """An early statement reads a name defined later (or itself)."""
    assigns = [(i, m[1]) for i, line in enumerate(lines) if (m := re.match(r"(\w+) = ", line))]
    calls = _calls(lines)
    if not assigns or not calls:
        return lines
    i, m = draw(st.sampled_from(calls))
    later = [name for j, name in assigns if j >= i]
    if not later or not m[2].strip():
        return lines
    target = draw(st.sampled_from(later))
    args = m[2].split(",")
    args[draw(st.integers(0, len(args) - 1))] = " " + target
    line = lines[i]
    return _replace(lines, i, line[: m.start(2)] + ",".join(args) + line[m.end(2) :])


def _conflicting_dims(draw, lines):
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return [f"dim N = {draw(st.sampled_from(ABSURD_DIMS[:4] + ('2', '3')))}"] + lines
    if choice == 1:
        return ["dim N = 2", "dim N = 3"] + lines
    if choice == 2:
        return lines + ["input conflict: [N, 2] = [[1, 2], [3, 4], [5, 6]]", "dim N = 2"]
    return lines + ["input conflict: [M] = uniform(0, 1)"]


def _absurd_size(draw, lines):
    shapes = [
        (i, m)
        for i, line in enumerate(lines)
        for m in re.finditer(r"\[([0-9N, ]+)\]", line)
        if ":" in line[: m.start()]
    ]
    if shapes and draw(st.booleans()):
        i, m = draw(st.sampled_from(shapes))
        dims = m[1].split(",")
        dims[draw(st.integers(0, len(dims) - 1))] = draw(st.sampled_from(ABSURD_DIMS))
        line = lines[i]
        return _replace(lines, i, line[: m.start(1)] + ",".join(dims) + line[m.end(1) :])
    size = draw(st.sampled_from(ABSURD_DIMS))
    decl = draw(
        st.sampled_from(
            [f"param big: [{size}, {size}] = zeros", f"const big: f64[4, {size}] = 2", f"input big: [{size}] = uniform(0, 1)",
             f"param big: [{size}] = normal(0.01)", f"dim N = {size}", f"input big: [N, {size}] = onehot",
             f"param big: [{size}] = 1", f"const big: [{', '.join(['2'] * 40)}] = 1",
             f"input big: [{', '.join(['1'] * 33)}] = 0"]
        )
    )  # fmt: skip
    return lines + [decl, "big2 = mul(big, 2)", "output big2"]


def _other_size(draw, lines):
    """A dim of a declared shape changed to another small size: shapes that no longer agree."""
    shapes = [
        (i, m)
        for i, line in enumerate(lines)
        for m in re.finditer(r"\[([0-9N, ]+)\]", line)
        if ":" in line[: m.start()] and m[1].strip()
    ]
    if not shapes:
        return lines
    i, m = draw(st.sampled_from(shapes))
    dims = m[1].split(",")
    dims[draw(st.integers(0, len(dims) - 1))] = str(draw(st.integers(1, 7)))
    line = lines[i]
    return _replace(lines, i, line[: m.start(1)] + ",".join(dims) + line[m.end(1) :])


def _other_window(draw, lines):
    """A window attribute of conv2d or a pooling set to another small value: windows that may not fit."""
    calls = [(i, m) for i, m in _calls(lines) if m[1] in ("conv2d", "max_pool", "avg_pool")]
    if not calls:
        return lines
    i, m = draw(st.sampled_from(calls))
    name = draw(st.sampled_from(["stride", "pad"] + ["size"] * (m[1] != "conv2d")))
    args = [a for a in m[2].split(",") if not a.strip().startswith(name + "=")]
    args.append(f" {name}={draw(st.integers(0 if name == 'pad' else 1, 7))}")
    line = lines[i]
    return _replace(lines, i, line[: m.start(2)] + ",".join(args) + line[m.end(2) :])


def _odd_number(draw, lines):
    numbers = [
        (i, m) for i, line in enumerate(lines) for m in re.finditer(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?(?![\w.])", line)
    ]
    odd = draw(st.sampled_from(ODD_NUMBERS))
    if not numbers:
        return lines + [f"const odd = {odd}"]
    i, m = draw(st.sampled_from(numbers))
    line = lines[i]
    return _replace(lines, i, line[: m.start()] + odd + line[m.end() :])


def _odd_character(draw, lines):
    if not lines:
        return lines
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines[i])))
    char = draw(st.sampled_from(ODD_CHARACTERS))
    return _replace(lines, i, lines[i][:j] + char + lines[i][j:])


def _long_name(draw, lines):
    names = sorted(
        {m[0] for line in lines for m in _names_in(line)}
        - set(OPS)
        - {"input", "param", "const", "output", "expect", "dim", "within", "grad"}
    )
    length = draw(st.sampled_from([300, 5000, 100_000]))
    if not names or draw(st.integers(0, 3)) == 0:
        return lines + [f"{'a' * length} = relu(undefined_thing)", "# " + "c" * length]
    old = draw(st.sampled_from(names))
    new = old + "_" * length
    everywhere = draw(st.booleans())  # else once: the other uses are then undefined, or it is
    out = []
    for line in lines:
        replaced = re.sub(rf"\b{re.escape(old)}\b", new, line, count=0 if everywhere else 1)
        if replaced != line and not everywhere:
            new = old  # done
        out.append(replaced)
    return out


def _deep_nesting(draw, lines):
    depth = draw(st.sampled_from([32, 33, 64, 65, 1000, 20_000]))
    value = "[" * depth + "1" + "]" * depth
    where = draw(st.sampled_from(["const deep = {v}", "input deep = {v}", "expect {o} == {v}", "param deep = {v}",
                                  "deep = mul({v}, 2)", "const deep: [1] = {v}"]))  # fmt: skip
    first_output = next((line.split()[1].rstrip(",") for line in lines if line.startswith("output ")), "x")
    return lines + [where.format(v=value, o=first_output)]


def _wrong_dtype(draw, lines):
    decls = [(i, line) for i, line in enumerate(lines) if re.match(r"(input|param|const) \w+", line)]
    if not decls:
        return lines
    i, line = draw(st.sampled_from(decls))
    new_dtype = draw(st.sampled_from(["i64", "f32", "f64", "f16", "int", "i64[]"]))
    if re.search(r": (f32|f64|i64)", line):
        line = re.sub(r": (f32|f64|i64)", ": " + new_dtype, line, count=1)
    else:
        line = re.sub(r"^(\w+ \w+)", rf"\1: {new_dtype}", line, count=1)
    return _replace(lines, i, line)


def _broken_statement(draw, lines):
    broken = draw(
        st.sampled_from(
            ["output", "output undefined_out", "expect nothing == 1", "expect grad(x) == [1, [2]]",
             "expect x == 1 within -1", "x -> relu", "x -> relu -> mul", "relu(x) -> relu as r -> r2 as r3",
             "x -> rleu -> y9", "y = ", "= relu(x)", "input", "param w", "param w: [N] = zeros",
             "const c", "input x: [2] = [1, 2, 3]", "input x: [2, 2] = [[1, 2], [3]]", "const e = []",
             "y = relu(x) z = relu(y)", "graph inner { }", "}", "{", "dim = 3", "dim N = 2.5",
             "input x = 2 from images from labels", "input q: [N] = onehot from labels",
             "y = softmax_loss(1, 2)", "y = affine(1, 2, 3)", "y = affine([1], [[1]], [1, 2])",
             "y = mul([1, 2], [1, 2, 3])", "output x, x", "input z: i64 = 1.5", "param p: i64 = 1",
             "y = mul(x, x", "y = mul x", "y = mul(,)", "y = (x)", "x -> affine(a, b, c, d) -> q",
             "expect grad(grad(x)) == 1", 'input s = "text"', "y = relu(x=1)", "x -> relu() as -> y",
             "y = conv2d([[[[1]]]], [[[[1, 2]]]], [1])", "y = conv2d([[[[1, 2]]]], [[[[1]]]], [1, 2])",
             "y = conv2d([[[1]]], [[[[1]]]], [1])", "y = conv2d([[[[1]]]], [[[1]]], [1])",
             "y = conv2d([[[[1, 2, 3]]]], [[[[1, 2]]]], [1], stride=2)", "y = max_pool([[[[1]]]], size=3)",
             "y = avg_pool([1, 2])", "y = max_pool([[[[1, 2, 3]]]], size=1, stride=2)", "y = flatten(2)",
             "y = flatten([1, 2])", "y = batchnorm([1, 2], [1], [1])", "y = batchnorm([[1, 2]], [1], [1, 2])",
             "y = batchnorm([[1, 2]], [1, 2], [[1, 2]])", "y = dropout(2, ratio=1)", "y = log(-1)",
             "x -> repeat 0 relu -> y", "x -> repeat 1000000000 relu -> y", "x -> repeat -1 relu -> y",
             "x -> repeat " + HUGE_INT + " relu -> y", "x -> repeat 2 -> y", "y = repeat 2 relu(x)",
             "x -> repeat 2 repeat 2 relu -> y", "param W: [in(x), 2] = zeros", "x -> unknown_block(3) -> y",
             "x -> dense(3) -> y", "y = linear(x)", "x -> repeat 1000000 dense(2) -> y",
             'import "std/layers.graph"', "block b(x) {", "y = b.out", "y = relu(dense1.W)"]
        )
    )  # fmt: skip
    return lines[: (k := draw(st.integers(0, len(lines))))] + [broken] + lines[k:]


def _statements_on_one_line(draw, lines):
    if len(lines) < 2:
        return lines
    i = draw(st.integers(0, len(lines) - 2))
    separator = draw(st.sampled_from([" ", "; ", "\t", "  # c\n"]))
    return lines[:i] + [lines[i] + separator + lines[i + 1]] + lines[i + 2 :]


def _drop_statement(draw, lines):
    if not lines:
        return lines
    i = draw(st.integers(0, len(lines) - 1))
    return lines[:i] + lines[i + 1 :]


def _replace(lines: list[str], i: int, line: str) -> list[str]:
    return lines[:i] + [line] + lines[i + 1 :]


MISTAKES = (
    _wrong_arity, _unknown_op, _bad_attribute, _duplicate_statement, _undefined_name, _cycle,
    _conflicting_dims, _absurd_size, _odd_number, _odd_character, _long_name, _deep_nesting,
    _wrong_dtype, _broken_statement, _statements_on_one_line, _drop_statement, _other_size, _other_window,
)  # fmt: skip

# Imports and blocks a person gets wrong: missing, odd and circular imports, blocks that use
# themselves, clash, lack `out`, declare what only a graph may, or take a name twice.
BROKEN_PRELUDES = (
    'import "missing.graph"', 'import "FILE.graph"', 'import "."', 'import "/"', 'import ""', 'import "/dev/null"',
    'import "std/nothing.graph"', 'import "std"', 'import "std/layers.graph"', 'import "\x00"', "import",
    'import "std/layers.graph" "x"', "import std/layers.graph", 'import "' + "a" * 5000 + '"',
    "block b(x) {\n    out = b(x)\n}", "block b(x) {\n    out = c(x)\n}\nblock c(x) {\n    out = b(x)\n}",
    "block dense(x) {\n    out = relu(x)\n}", "block e() {\n}", "block f(x, x) {\n    out = relu(x)\n}",
    "block g(x) {\n    out = relu(y)\n}", "block h(x) {\n    y = relu(x)\n}", "block i(x) {\n    output x\n}",
    "block j(x) {\n    input z = 1\n    out = mul(x, z)\n}", "block k(x) {\n    dim N = 2\n    out = relu(x)\n}",
    "block l(x, n) {\n    param W: [n, in(y)] = zeros\n    out = mul(x, W)\n}", "block relu(x) {\n    out = x\n}",
    "block m(x) {\n    out = relu(x)\n    out = relu(x)\n}", "block n(x) {\n    out = x\n}",
    "block o(x) {\n    out = relu(x)\n    expect out == 1\n}", "block p(x) {", "block q(x) {\n    out = relu(x)\n}}",
    "block graph(x) {\n    out = relu(x)\n}", "block s(x, r) {\n    x -> dropout(ratio=r) -> out\n}",
)  # fmt: skip


def _broken_prelude(draw, lines):
    """A broken import or block among the file's own, and maybe a use of it."""
    k = draw(st.integers(0, len(lines)))
    broken = draw(st.sampled_from(BROKEN_PRELUDES)).split("\n")
    return lines[:k] + broken + lines[k:]


def _use_of_a_block(draw, lines):
    """A use of a block of the file (or one that is not there) with odd arguments, in the graph."""
    block = draw(st.sampled_from(["b", "c", "e", "f", "g", "h", "l", "m", "n", "s", "dense", "linear", "relu", "zz"]))
    x = next((m[1] for line in lines if (m := re.match(r"(?:input|param|const) (\w+)", line))), "x")
    use = draw(
        st.sampled_from(
            [f"y_ = {block}({x})", f"{x} -> {block} -> y_", f"{x} -> {block}(2) as y_", f"{x} -> repeat 2 {block} -> y_",
             f"y_ = {block}({x}, 2, 3)", f"y_ = {block}({x}, {x})", f"y_ = {block}(2)", f"y_ = {block}({x}, n=2, n=3)",
             f"{x} -> {block}(r=2) -> y_", f"y_ = {block}({x}, [1, 2])", f"y_ = {block}({x}, -1)"]
        )
    )  # fmt: skip
    k = draw(st.integers(0, len(lines)))
    return lines[:k] + [use, "output y_"] + lines[k:]


PRELUDE_MISTAKES = (
    _broken_prelude, _odd_character, _undefined_name, _drop_statement, _duplicate_statement, _odd_number,
    _absurd_size, _bad_attribute, _wrong_arity, _long_name,
)  # fmt: skip


@dataclass
class NearValidGraph:
    text: str
    graph: GeneratedGraph  # the valid graph it was made from
    mistakes: tuple[str, ...]
    feeds: dict[str, np.ndarray]  # the valid graph's feeds, or none of them


@st.composite
def near_valid_graphs(draw) -> NearValidGraph:
    graph = draw(valid_graphs(max_nodes=4))
    lines = list(graph.lines)
    prelude = list(graph.prelude)
    names = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:  # in the imports and blocks
            mistake = draw(st.sampled_from(PRELUDE_MISTAKES))
            names.append("prelude " + mistake.__name__.lstrip("_"))
            prelude = mistake(draw, prelude)
            if mistake is _broken_prelude and draw(st.booleans()):
                lines = _use_of_a_block(draw, lines)
            continue
        mistake = draw(st.sampled_from((*MISTAKES, _use_of_a_block)))
        names.append(mistake.__name__.lstrip("_"))
        lines = mistake(draw, lines)
    wrapper = draw(
        st.sampled_from(
            ["graph {name} {{"] * 4 + ["graph {name}{{", "graph {name} {{ graph {name} {{", "graph 1{name} {{",
             "graph {{", "graph {name} ("]
        )
    )  # fmt: skip
    header = wrapper.format(name=graph.name)
    text = _format(lines, draw, header=header, bom=False)
    if prelude:
        text = "\n".join(prelude) + "\n" + text
    if draw(st.integers(0, 9)) == 0:
        text = "\ufeff" + text
    tail = draw(st.sampled_from([""] * 7 + ["graph {name} {{\n  output q\n}}\n", "}}\n", "garbage", "\x00"]))
    text += tail.format(name=graph.name)
    feeds = graph.feeds if draw(st.booleans()) else {}
    return NearValidGraph(text, graph, tuple(names), feeds)

"""The flat IR that elaboration produces and every later stage reads.

A graph is a dict of declarations keyed by value name, in source order:
inputs, params, consts and op nodes. Chains are already expanded and
literal arguments already turned into consts, so each op node simply names
the values it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.errors import Source, Span

if TYPE_CHECKING:
    from graphc.ops import Op

Dim = int | str

DTYPES: dict[str, np.dtype] = {"f32": np.dtype(np.float32), "f64": np.dtype(np.float64), "i64": np.dtype(np.int64)}

# The float dtypes a person may ask for (--dtype, dtype=), by either spelling.
FLOAT_DTYPES = {"float32": "f32", "float64": "f64", "f32": "f32", "f64": "f64"}
DTYPE_CHOICES = ("float32", "float64")  # as the command line spells them


def shape_text(shape: Sequence[Dim]) -> str:
    """[N, 784]: how every message and table writes a shape."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class TensorType:
    """A dtype and a shape whose dims are sizes or symbols (`N`).

    dtype None marks a weak value: a scalar const with no declared dtype,
    which takes the dtype of what it meets (as numpy treats a Python float),
    so that `mul(x, 0.5)` stays float32 when x is.
    """

    dtype: str | None
    shape: tuple[Dim, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def shape_text(self) -> str:
        return shape_text(self.shape)

    def __str__(self) -> str:
        dtype = self.dtype or "f64"
        return dtype if not self.shape else dtype + self.shape_text()

    def size(self, dims: dict[str, int] | None = None) -> int | None:
        """Number of elements, or None when a symbolic dim is unbound."""
        total = 1
        for d in self.shape:
            if isinstance(d, str):
                if not dims or d not in dims:
                    return None
                d = dims[d]
            total *= d
        return total


def float_dtype(name: str | None) -> str | None:
    """ "float32" or "f32" -> "f32"; None stays None (keep the graph's own dtypes)."""
    return None if name is None else FLOAT_DTYPES[name]


def numpy_name(dtype: str) -> str:
    """ "f32" -> "float32", as numpy and the command line spell it."""
    return DTYPES[dtype].name


def retype(types: dict[str, TensorType], dtype: str | None) -> dict[str, TensorType]:
    """Every float value made `dtype` ("f32"/"f64"); None changes nothing."""
    if dtype is None:
        return dict(types)
    return {n: TensorType(dtype, t.shape) if t.dtype in ("f32", "f64") else t for n, t in types.items()}


# What each dtype holds, for messages about values it cannot.
DTYPE_RANGES = {
    "f32": f"f32 holds magnitudes up to {float(np.finfo(np.float32).max):.8g}",
    "f64": f"f64 holds magnitudes up to {float(np.finfo(np.float64).max):.17g}",
    "i64": f"i64 holds whole numbers from {np.iinfo(np.int64).min} to {np.iinfo(np.int64).max}",
}


def compact(values: Any) -> np.ndarray:
    """`values` as the smallest array with the same numbers in it: one number
    broadcast to a shape (a const of one number filling its declared shape
    is kept as such a view) becomes that number, so that checking it costs
    nothing whatever the shape."""
    values = np.asarray(values)
    if values.size > 1 and not any(values.strides):
        return np.asarray(values[(0,) * values.ndim])
    return values


def unrepresentable(values: Any, dtype: str) -> int | float | None:
    """The first of `values` that `dtype` cannot hold, else None: a finite
    number too large for a float dtype, or an integer beyond i64."""
    values = compact(values)
    if dtype in ("f32", "f64") and values.dtype.kind == "f":
        if values.dtype.itemsize <= DTYPES[dtype].itemsize:
            return None  # the same dtype or a wider one holds every number: nothing to scan
        with np.errstate(over="ignore"):
            cast = values.astype(DTYPES[dtype])
        bad = np.isfinite(values) & ~np.isfinite(cast)
    elif dtype == "i64" and values.dtype.kind == "u":
        if values.dtype.itemsize < 8:
            return None  # uint8 to uint32 all fit: nothing to scan
        bad = values > np.iinfo(np.int64).max
    else:
        return None
    return values[bad].flat[0].item() if bad.any() else None


def number_text(value: int | float) -> str:
    """A number as messages write it: 3, 0.5, 1e+40."""
    return str(value) if isinstance(value, int) else f"{value:.8g}"


@dataclass(frozen=True, eq=False)
class Initializer:
    """How a param (or a made-up input) gets its first value."""

    kind: str  # zeros, ones, normal, uniform, he, xavier, onehot, or value
    args: tuple[float, ...]
    value: np.ndarray | None  # for kind == "value"
    span: Span

    def describe(self) -> str:
        if self.kind == "value":
            return "value"
        if self.args:
            return f"{self.kind}({', '.join(f'{a:g}' for a in self.args)})"
        return self.kind


@dataclass(frozen=True, eq=False)
class Decl:
    """A named value of the flat graph: an input, a param, a const or an op's result."""

    name: str
    span: Span  # the name where it is defined
    stmt_span: Span  # the whole statement, for diagrams and cycle reports


@dataclass(frozen=True, eq=False)
class InputDecl(Decl):
    """A value fed from outside, with its type, its default or initializer, and its data role."""

    type: TensorType
    init: Initializer | None
    role: str | None  # `from images` / `from labels`
    role_span: Span | None = None


@dataclass(frozen=True, eq=False)
class ParamDecl(Decl):
    """A value training changes, with its type and how it starts."""

    type: TensorType
    init: Initializer


@dataclass(frozen=True, eq=False)
class ConstDecl(Decl):
    """A fixed value: declared, or a literal written as an argument."""

    type: TensorType
    value: np.ndarray
    literal: bool = False  # a number or list written as an argument, named by its text


@dataclass(frozen=True, eq=False)
class OpNode(Decl):
    """An op applied to named values: its result is the value `name`."""

    op: Op
    args: tuple[str, ...]
    arg_spans: tuple[Span, ...]
    attrs: dict[str, Any]
    call_span: Span
    attr_spans: dict[str, Span] = field(default_factory=dict)  # each attribute written, where its value is


@dataclass(frozen=True, eq=False)
class Expectation:
    """An `expect` line: a value or gradient the graph must produce, within a tolerance."""

    target: str
    of_grad: bool
    value: np.ndarray
    tolerance: float | None
    span: Span
    target_span: Span
    value_span: Span  # from the value to the end of the statement (`within` included)

    def describe(self) -> str:
        """`grad(x) == [4] within 0.5`, the value as written, on one line and without comments."""
        target = f"grad({self.target})" if self.of_grad else self.target
        span, source = self.value_span, self.value_span.source
        lines = [source.line(n) for n in range(span.line, span.end_line + 1)]
        lines[-1] = lines[-1][: span.end_column - 1]
        lines[0] = lines[0][span.column - 1 :]
        value = " ".join(" ".join(line.split("#", 1)[0].split()) for line in lines)
        return f"{target} == {' '.join(value.split())}"


@dataclass(frozen=True, eq=False)
class Instance:
    """One use of a block: `x -> dense(100) as h1` makes instance `h1` of block `dense`.

    Its params and inner values are named `h1.W`, `h1.affine1`; its result is `h1`.
    """

    name: str
    block: str
    span: Span  # the use
    parent: str | None  # the instance whose block holds this use, if any


@dataclass(frozen=True, eq=False)
class GraphIR:
    """One graph, flat: blocks expanded, names resolved, every value declared once."""

    name: str
    span: Span
    decls: dict[str, Decl]
    outputs: tuple[tuple[str, Span], ...]
    expects: tuple[Expectation, ...]
    dims: dict[str, int]  # `dim N = 3`, or the size a literal value gives N
    source: Source
    # Block uses, by instance name, and the innermost instance each value was made in.
    instances: dict[str, Instance] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    # Each declaration's position in the source, which breaks ties in plans
    # (CheckedGraph.order is the topological order). Always derived from
    # `decls`, which are in source order, so it cannot disagree with them
    # (not an argument, so dataclasses.replace recomputes it too).
    order: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", {name: i for i, name in enumerate(self.decls)})

    def inputs(self) -> list[InputDecl]:
        return [d for d in self.decls.values() if isinstance(d, InputDecl)]

    def params(self) -> list[ParamDecl]:
        return [d for d in self.decls.values() if isinstance(d, ParamDecl)]

    def nodes(self) -> list[OpNode]:
        return [d for d in self.decls.values() if isinstance(d, OpNode)]

"""The typed syntax tree of a .graph file: frozen dataclasses, each with a span.

Built by `graphc.parse` and nothing else; read by `graphc.elaborate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc.errors import Source, Span


@dataclass(frozen=True)
class InDim:
    """`in(x)` in a block's shape: the last dim of the operand x."""

    operand: Name
    span: Span


Dim = int | str | InDim  # an integer size, a symbolic dimension such as N, or in(x)
LiteralValue = int | float | list  # a number or a nested list of numbers


@dataclass(frozen=True)
class Name:
    """A name where it is written: of a value, an op, a dim, a graph or a block."""

    text: str
    span: Span


@dataclass(frozen=True)
class Literal:
    """A number or a nested list of numbers, as written: `1.1`, `[[1, 2], [3, 4]]`."""

    value: LiteralValue
    span: Span
    items: tuple[Literal, ...] = ()  # a list's elements, each with its own span


@dataclass(frozen=True)
class TensorType:
    """A written type, `f64[N, 784]`: its dtype, its shape, or both."""

    dtype: str | None  # "f32", "f64", or None when not written
    shape: tuple[Dim, ...] | None  # None when not written
    span: Span
    dim_spans: tuple[Span, ...] = ()  # each dim of `shape` where it is written


@dataclass(frozen=True)
class Init:
    """An initializer: `zeros`, `normal(0.01)`, ... or a literal value."""

    kind: Name | None  # None for a literal
    args: tuple[float, ...]
    literal: Literal | None
    span: Span


@dataclass(frozen=True)
class DimDecl:
    """`dim N = 3`: a size for a symbolic dimension."""

    name: Name
    size: int
    span: Span


@dataclass(frozen=True)
class InputDecl:
    """`input x: f64[N, 784] = uniform(0, 1) from images`: a value fed from outside."""

    name: Name
    type: TensorType | None
    init: Init | None
    role: Name | None  # `from images`
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    """`param W1: [784, 50] = normal(0.01)`: a value training changes."""

    name: Name
    type: TensorType | None
    init: Init | None
    span: Span


@dataclass(frozen=True)
class ConstDecl:
    """`const c: f32[3] = 2`: a fixed value."""

    name: Name
    type: TensorType | None
    value: Literal
    span: Span


@dataclass(frozen=True)
class AttrValue:
    """An attribute's value, as written."""

    value: LiteralValue | str  # a number, a list, a string or a bare word
    span: Span


@dataclass(frozen=True)
class Attr:
    """`axis=1` in a call: a named attribute of the op."""

    name: Name
    value: AttrValue
    span: Span


Arg = Name | Literal


@dataclass(frozen=True)
class Call:
    """`affine(W1, b1)`: an op, its operands and its attributes."""

    op: Name
    args: tuple[Arg, ...]
    attrs: tuple[Attr, ...]
    span: Span


@dataclass(frozen=True)
class Assign:
    """`y = mul(a, b)`: a value made by one call."""

    target: Name
    call: Call
    span: Span


@dataclass(frozen=True)
class Repeat:
    """`repeat 5 dense(100)` in a chain: the item applied `count` times in a row."""

    count: int
    count_span: Span
    item: Name | Call
    span: Span


@dataclass(frozen=True)
class Link:
    """One `-> item [as name]` of a chain."""

    item: Name | Call | Repeat
    alias: Name | None
    span: Span


@dataclass(frozen=True)
class Chain:
    """`x -> affine(W1, b1) -> relu -> y`: calls one after another, each reading the one before."""

    head: Name | Call
    links: tuple[Link, ...]
    span: Span


@dataclass(frozen=True)
class OutputDecl:
    """`output loss, y`: the values to compute; backward starts from the first."""

    names: tuple[Name, ...]
    span: Span


@dataclass(frozen=True)
class ExpectDecl:
    """`expect grad(x) == 2.2 within 1e-9`: a value the graph must produce."""

    target: Name
    of_grad: bool
    value: Literal
    tolerance: float | None
    span: Span


Statement = DimDecl | InputDecl | ParamDecl | ConstDecl | Assign | Chain | OutputDecl | ExpectDecl


@dataclass(frozen=True)
class Graph:
    """`graph name { ... }`: one graph's statements."""

    name: Name
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True)
class Block:
    """`block dense(x, n_out) { ... }`: a piece of graph, expanded at each use."""

    name: Name
    params: tuple[Name, ...]
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True)
class Import:
    """`import "layers.graph"`: the path as written, and the span of its string."""

    path: str
    span: Span


@dataclass(frozen=True)
class Module:
    """A whole .graph file: its graphs, blocks and imports."""

    graphs: tuple[Graph, ...]
    source: Source
    blocks: tuple[Block, ...] = ()
    imports: tuple[Import, ...] = ()

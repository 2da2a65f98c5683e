"""Stage 2: syntax tree -> flat IR (`graphc.ir.GraphIR`), one per graph.

Resolves op names against the registry (arity, attributes), expands arrow
chains into op nodes and each use of a block into its statements under the
use's instance name (`h1.W`; graphc.blocks renames them, graphc.imports
finds the blocks of imported files), turns literal arguments into consts,
converts values and initializers to numpy, and reports duplicate definitions. Names that are
used but never defined are left for the checker, which sees the whole graph.

Every literal value goes through `_GraphBuilder.array`: ragged lists, lists
nested past limits.MAX_DIMS, numbers out of range for their dtype and
fractions for i64 are reported at the value, never as a numpy exception.

Nothing here allocates more than the file writes: a declared shape is
checked against limits.MAX_ELEMENTS (with the sizes `dim` gives the inputs
graphc makes up), and a const of one number keeps that number, broadcast
to its declared shape as a read-only view, until a run needs the array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc import ast, limits
from graphc._gc import gc_paused
from graphc.blocks import OPERAND, BlockInfo, Scope, collect, defined_names, in_operands, instantiate
from graphc.errors import Diagnostic, GraphcError, Span, did_you_mean
from graphc.imports import imported_blocks
from graphc.initializers import KINDS
from graphc.ir import (
    DTYPE_RANGES,
    DTYPES,
    ConstDecl,
    Decl,
    Expectation,
    GraphIR,
    Initializer,
    InputDecl,
    Instance,
    OpNode,
    ParamDecl,
    TensorType,
    shape_text,
)
from graphc.ops import REGISTRY, Op, Operand, ShapeError

ROLES = ("images", "labels")

# How many times `repeat` may apply a block, how many values the uses of blocks
# may make in one graph, and how deep uses may nest: far beyond the book's nets,
# and a bound on the time (seconds) a file of blocks that use blocks many times
# over takes to expand.
MAX_REPEAT = 1000
MAX_EXPANDED_VALUES = 50_000
MAX_BLOCK_DEPTH = 32  # uses inside uses


@gc_paused
def elaborate(module: ast.Module) -> list[GraphIR]:
    errors: list[Diagnostic] = []
    graphs: list[GraphIR] = []
    seen: dict[str, ast.Name] = {}
    imported: list[tuple[ast.Block, ast.Import | None]] = []
    if module.imports:
        try:
            imported = list(imported_blocks(module))
        except GraphcError as err:
            errors.extend(err.diagnostics)
    blocks = collect(imported + [(block, None) for block in module.blocks], errors)
    for graph in module.graphs:
        if graph.name.text in seen:
            errors.append(_duplicate(graph.name, seen[graph.name.text], "graph"))
        seen[graph.name.text] = graph.name
        builder = _GraphBuilder(graph, module, blocks)
        graphs.append(builder.build())
        errors.extend(builder.errors)
    if errors:
        raise GraphcError(code=None, diagnostics=errors)
    return graphs


def _duplicate(name: ast.Name, first: ast.Name, what: str = "") -> Diagnostic:
    return Diagnostic(
        f"duplicate definition of {what + ' ' if what else ''}`{name.text}`",
        name.span,
        f"`{name.text}` is first defined at line {first.span.line}; pick another name",
        code="E102",
    )


class _GraphBuilder:
    def __init__(self, graph: ast.Graph, module: ast.Module, blocks: dict[str, BlockInfo] | None = None):
        self.graph = graph
        self.module = module
        self.blocks = blocks or {}
        self.scope = Scope()  # the graph itself, or the use of a block being expanded
        self.instances: dict[str, Instance] = {}
        self.owners: dict[str, str] = {}
        self.types: dict[str, TensorType | None] = {}  # values' types as far as elaboration knows them
        self.too_large = False
        self.errors: list[Diagnostic] = []
        self.decls: dict[str, Decl] = {}
        self.first: dict[str, ast.Name] = {}
        self.dims: dict[str, int] = {}
        self.outputs: list[tuple[str, Span]] = []
        self.output_names: set[str] = set()
        self.expects: list[Expectation] = []
        # Every name the person wrote, so generated names never collide.
        self.user_names = defined_names(self.graph.body, every_chain_name=True)
        # (dim, size, value name, span): the sizes literal values give symbolic dims.
        self.literal_dims: list[tuple[str, int, str, Span]] = []
        # (input, declared shape, span of the type): inputs graphc makes up, whose
        # size is known once every `dim` is.
        self.made_up: list[tuple[str, tuple, Span]] = []

    def error(self, message: str, span: Span | None, hint: str | None = None, *, code: str) -> None:
        self.errors.append(Diagnostic(message, span, hint, code=code))

    def build(self) -> GraphIR:
        for stmt in self.graph.body:
            handler = getattr(self, "_" + type(stmt).__name__)
            handler(stmt)
        self.bind_literal_dims()
        self.check_saved_names()
        self.check_made_up_inputs()
        self.check_made_up_sizes()
        return GraphIR(
            self.graph.name.text,
            self.graph.name.span,
            self.decls,
            tuple(self.outputs),
            tuple(self.expects),
            self.dims,
            self.module.source,
            self.instances,
            self.owners,
        )

    def bind_literal_dims(self) -> None:
        """A literal value fixes the size of each symbolic dim it fills:
        `input x: [N] = [1, 2]` makes N 2, which `dim N` and every other
        value must agree with (they are used together when nothing is fed)."""
        given: dict[str, str] = {}  # dim -> the value that gave its size
        for d, size, name, span in self.literal_dims:
            if d not in self.dims:
                self.dims[d] = size
                given[d] = name
            elif self.dims[d] != size:
                first = (
                    f"the value of `{given[d]}` has {d} = {self.dims[d]}"
                    if d in given
                    else f"the graph declares `dim {d} = {self.dims[d]}`"
                )
                self.error(
                    f"value of `{name}` has {d} = {size}, but {first}",
                    span,
                    f"every value of the graph must agree on the size of `{d}`",
                    code="E206",
                )

    def check_saved_names(self) -> None:
        """No value is named as what an op saves for backward (`h.mask` beside relu `h`):
        plans name those NODE.ITEM, and dotted names could otherwise meet them."""
        for node in [d for d in self.decls.values() if isinstance(d, OpNode)]:
            for item in node.op.own:
                clash = self.decls.get(f"{node.name}.{item}")
                if clash is not None:
                    self.error(
                        f"`{clash.name}` is also the name of what `{node.name}` ({node.op.name}) saves for backward",
                        clash.span,
                        f"rename it: graphc names the `{item}` that {node.op.name} saves after its value, "
                        f"`{node.name}.{item}`",
                        code="E102",
                    )

    def check_made_up_inputs(self) -> None:
        """An input filled by an initializer, or by one number, needs a size for each symbolic dim."""
        for decl in self.decls.values():
            if not isinstance(decl, InputDecl) or decl.init is None:
                continue
            for d in decl.type.shape:
                if not isinstance(d, str) or d in self.dims:
                    continue
                if decl.init.kind != "value":
                    self.error(
                        f"input `{decl.name}` is made up by `{decl.init.describe()}` but dim `{d}` has no size",
                        decl.init.span,
                        f"declare one in the graph, e.g. `dim {d} = 2`",
                        code="E208",
                    )
                else:  # a scalar: a list would have given d its size
                    self.error(
                        f"input `{decl.name}`: a single number cannot fill symbolic dim `{d}`",
                        decl.init.span,
                        f"declare its size, e.g. `dim {d} = 2`, or give a full list",
                        code="E208",
                    )
                break

    def check_made_up_sizes(self) -> None:
        """An input graphc makes up stays within limits.MAX_ELEMENTS with the sizes its dims take."""
        for name, shape, span in self.made_up:
            if any(isinstance(d, str) and d not in self.dims for d in shape):
                continue  # reported by check_made_up_inputs
            count = math.prod(self.dims[d] if isinstance(d, str) else d for d in shape)
            if limits.too_many_elements(count):
                sizes = ", ".join(f"{d} = {self.dims[d]}" for d in dict.fromkeys(shape) if isinstance(d, str))
                self.error(
                    f"input `{name}` {shape_text(shape)} would be made up with "
                    f"{limits.count_text(count)} numbers ({sizes})",
                    span,
                    limits.elements_hint(),
                    code="E801",
                )

    def define(self, name: ast.Name, decl: Decl) -> None:
        if name.text in self.first:
            self.errors.append(_duplicate(name, self.first[name.text]))
            return
        self.first[name.text] = name
        self.decls[name.text] = decl
        if self.scope.instance is not None:
            self.owners[name.text] = self.scope.instance

    # --- declarations --------------------------------------------------------

    def _DimDecl(self, stmt: ast.DimDecl) -> None:
        if stmt.name.text in self.dims:
            self.error(f"duplicate definition of dim `{stmt.name.text}`", stmt.name.span, code="E102")
        elif stmt.size < 1:
            self.error(f"dim `{stmt.name.text}` must be at least 1, got {stmt.size}", stmt.span, code="E210")
        else:
            self.dims[stmt.name.text] = stmt.size

    def _InputDecl(self, stmt: ast.InputDecl) -> None:
        dtype = (stmt.type.dtype if stmt.type else None) or "f64"
        if not self.plain_dims(stmt.type):
            return
        shape = _shape(stmt.type)
        type_span = stmt.type.span if stmt.type else stmt.name.span
        if shape is not None and not self.sizes_fit(shape, "input", stmt.name, type_span):
            return
        init = self.initializer(stmt.init, dtype, shape, stmt.name) if stmt.init else None
        if init is not None and shape is not None:
            self.made_up.append((stmt.name.text, shape, type_span))
        if shape is None:
            shape = tuple(init.value.shape) if init is not None and init.value is not None else ()
        role = None
        if stmt.role is not None:
            role = stmt.role.text
            if role not in ROLES:
                hint = did_you_mean(role, ROLES) or "an input is fed `from images` or `from labels`"
                self.error(f"unknown data role `{role}`", stmt.role.span, hint, code="E112")
        decl = InputDecl(
            stmt.name.text,
            stmt.name.span,
            stmt.span,
            TensorType(dtype, tuple(shape)),
            init,
            role,
            stmt.role.span if stmt.role else None,
        )
        self.define(stmt.name, decl)

    def _ParamDecl(self, stmt: ast.ParamDecl) -> None:
        # A block's params take the dtype of its first operand, unless written.
        dtype = (stmt.type.dtype if stmt.type else None) or self.scope.dtype or "f64"
        if not self.plain_dims(stmt.type):
            return
        shape = _shape(stmt.type)
        type_span = stmt.type.span if stmt.type else stmt.name.span
        if dtype == "i64":
            self.error(f"param `{stmt.name.text}` must be f32 or f64: it is trained", type_span, code="E209")
        if shape is not None and not (
            self.concrete(shape, "param", stmt.name, type_span) and self.sizes_fit(shape, "param", stmt.name, type_span)
        ):
            return
        if stmt.init is None:
            self.error(
                f"param `{stmt.name.text}` has no initializer",
                stmt.span,
                "add one, e.g. `= normal(0.01)`, `= zeros` or `= he`",
                code="E110",
            )
            return
        init = self.initializer(stmt.init, dtype, shape, stmt.name)
        if init is None:
            return
        if shape is None:
            if init.value is None:
                self.error(
                    f"param `{stmt.name.text}` needs a shape for `{init.kind}`",
                    type_span,
                    f"e.g. `param {stmt.name.text}: [784, 50] = {init.describe()}`",
                    code="E111",
                )
                return
            shape = tuple(init.value.shape)
        self.define(
            stmt.name, ParamDecl(stmt.name.text, stmt.name.span, stmt.span, TensorType(dtype, tuple(shape)), init)
        )

    def _ConstDecl(self, stmt: ast.ConstDecl) -> None:
        # With no dtype written, shape inference gives the const its readers' dtype.
        dtype = stmt.type.dtype if stmt.type else None
        if not self.plain_dims(stmt.type):
            return
        shape = _shape(stmt.type)
        type_span = stmt.type.span if stmt.type else stmt.name.span
        if shape is not None and not (
            self.concrete(shape, "const", stmt.name, type_span) and self.sizes_fit(shape, "const", stmt.name, type_span)
        ):
            return
        value = self.array(stmt.value, dtype or "f64", stmt.name.text)
        if value is None:
            return
        if shape is None:
            shape = value.shape
        elif value.ndim == 0:
            # One number fills the declared shape, as for a param: a view of
            # it, so that checking allocates nothing (the run makes the array).
            value = np.broadcast_to(value, tuple(int(d) for d in shape))
        elif not self.literal_fits(value, shape, stmt.value, stmt.name):
            return
        self.define(
            stmt.name, ConstDecl(stmt.name.text, stmt.name.span, stmt.span, TensorType(dtype, tuple(shape)), value)
        )

    def plain_dims(self, type_: ast.TensorType | None) -> bool:
        """No `in(x)` in a graph's types: it sizes a block's params by an operand."""
        for d in type_.shape or () if type_ is not None else ():
            if isinstance(d, ast.InDim):
                self.error(
                    f"`in({d.operand.text})` is only allowed in a block",
                    d.span,
                    "in a block, `in(x)` is the last dim of its operand x; in a graph, write the size",
                    code="E128",
                )
                return False
        return True

    def concrete(self, shape, kind: str, name: ast.Name, span: Span) -> bool:
        """A param's or a const's shape has no symbolic dims: its value is fixed."""
        symbolic = [d for d in shape if isinstance(d, str)]
        if symbolic:
            self.error(
                f"{kind} `{name.text}` has symbolic dim `{symbolic[0]}`; a {kind}'s shape must be concrete",
                span,
                code="E208",
            )
        return not symbolic

    def sizes_fit(self, shape, kind: str, name: ast.Name, span: Span) -> bool:
        """A declared shape has at most limits.MAX_DIMS dims, each of size at least 1 (as for
        `dim`), and at most limits.MAX_ELEMENTS numbers (its symbolic dims taken at 1)."""
        empty = [d for d in shape if isinstance(d, int) and d < 1]
        if len(shape) > limits.MAX_DIMS:
            self.error(
                f"{kind} `{name.text}` has {len(shape)} dims; a value has at most {limits.MAX_DIMS}",
                span,
                code="E802",
            )
            return False
        if empty:
            self.error(f"`{name.text}` has a dim of size {empty[0]}; every size must be at least 1", span, code="E210")
            return False
        count = math.prod(d for d in shape if isinstance(d, int))
        if limits.too_many_elements(count):
            self.error(
                f"{kind} `{name.text}` {shape_text(shape)} has {limits.count_text(count)} numbers",
                span,
                limits.elements_hint(),
                code="E801",
            )
            return False
        return True

    def initializer(self, init: ast.Init, dtype: str, shape, name: ast.Name) -> Initializer | None:
        if init.literal is not None:
            value = self.array(init.literal, dtype, name.text)
            if value is None:
                return None
            if shape is not None and value.ndim > 0 and not self.literal_fits(value, shape, init.literal, name):
                return None
            return Initializer("value", (), value, init.span)
        assert init.kind is not None
        kind = init.kind.text
        if kind not in KINDS:
            hint = did_you_mean(kind, KINDS) or "initializers: " + ", ".join(KINDS)
            self.error(f"unknown initializer `{kind}`", init.kind.span, hint, code="E108")
            return None
        wanted = len(KINDS[kind].params)
        if len(init.args) != wanted:
            self.error(
                f"initializer `{kind}` takes {wanted} number{'s' if wanted != 1 else ''}, got {len(init.args)}",
                init.span,
                f"write `{KINDS[kind].usage}`",
                code="E109",
            )
            return None
        if not all(np.isfinite(init.args)):
            self.error(
                f"initializer `{kind}` takes finite numbers", init.span, f"write `{KINDS[kind].usage}`", code="E109"
            )
            return None
        return Initializer(kind, init.args, None, init.span)

    def array(self, literal: ast.Literal, dtype: str, name: str | None = None) -> np.ndarray | None:
        """A literal as an array of `dtype`; None, with the error reported, if it cannot be one.
        `name` is the value it is written for, if any."""
        numbers = self.numbers(literal)
        if numbers is None:
            return None
        shape, leaves = numbers
        values = self.fitting(leaves, dtype, name)
        return None if values is None else values.reshape(shape)

    def numbers(self, literal: ast.Literal) -> tuple[tuple[int, ...], list[ast.Literal]] | None:
        """The literal's shape and its numbers in order, level by level (no recursion)."""
        shape: list[int] = []
        level = [literal]
        while any(isinstance(item.value, list) for item in level):
            if not all(isinstance(item.value, list) for item in level) or len({len(i.items) for i in level}) > 1:
                self.error("ragged list: every row must have the same length", literal.span, code="E211")
                return None
            if not level[0].items:
                self.error("empty list: a value needs at least one number", level[0].span, code="E211")
                return None
            shape.append(len(level[0].items))
            if len(shape) > limits.MAX_DIMS:
                depth = limits.MAX_DIMS
                self.error(
                    f"list nested more than {depth} deep: a value has at most {depth} dims", literal.span, code="E802"
                )
                return None
            level = [item for outer in level for item in outer.items]
        return tuple(shape), level

    def fitting(self, leaves: list[ast.Literal], dtype: str, name: str | None) -> np.ndarray | None:
        """The numbers as a flat array of `dtype`; None, with the error reported at the
        first number it cannot hold (out of range, or a fraction for i64)."""

        def unfit(leaf: ast.Literal) -> None:
            self.error(f"`{_text(leaf.span)}` is out of range for {dtype}", leaf.span, DTYPE_RANGES[dtype], code="E212")

        numbers = [_number(leaf) for leaf in leaves]
        if dtype == "i64":
            for leaf, number in zip(leaves, numbers):
                if isinstance(number, float) and not math.isfinite(number):  # 1e400
                    unfit(leaf)
                    return None
                if isinstance(number, float) and not number.is_integer():
                    self.error(f"`{_text(leaf.span)}` is not a whole number; `{name}` is i64", leaf.span, code="E213")
                    return None
                if not -(2**63) <= int(number) < 2**63:
                    unfit(leaf)
                    return None
            return np.array([int(number) for number in numbers], dtype=np.int64)
        floats = []
        for leaf, number in zip(leaves, numbers):
            try:
                floats.append(float(number))
            except OverflowError:  # an integer with hundreds of digits
                unfit(leaf)
                return None
        with np.errstate(over="ignore"):
            values = np.array(floats, dtype=DTYPES[dtype])
        bad = ~np.isfinite(values)  # no literal is infinite: 1e400 overflowed
        if bad.any():
            unfit(leaves[int(np.argmax(bad))])
            return None
        return values

    def literal_fits(self, value: np.ndarray, shape, literal: ast.Literal, name: ast.Name) -> bool:
        declared = TensorType(None, tuple(shape))
        ok = value.ndim == len(shape) and all(isinstance(d, str) or d == n for d, n in zip(shape, value.shape))
        if not ok:
            self.error(
                f"value of `{name.text}` has shape {list(value.shape)}, declared {declared.shape_text()}",
                literal.span,
                code="E207",
            )
        else:
            self.literal_dims += [
                (d, n, name.text, literal.span) for d, n in zip(shape, value.shape) if isinstance(d, str)
            ]
        return ok

    # --- nodes ---------------------------------------------------------------

    def resolve_op(self, name: ast.Name) -> Op | None:
        op = REGISTRY.get(name.text)
        if op is None:
            self.unknown_op(name)
        return op

    def unknown_op(self, name: ast.Name) -> None:
        if not self.blocks:
            hint = did_you_mean(name.text, REGISTRY) or "ops: " + ", ".join(REGISTRY)
            self.error(f"unknown op `{name.text}`", name.span, hint, code="E103")
            return
        hint = did_you_mean(name.text, [*REGISTRY, *self.blocks]) or (
            "ops: " + ", ".join(REGISTRY) + "; blocks: " + ", ".join(self.blocks)
        )
        self.error(f"unknown op or block `{name.text}`", name.span, hint, code="E103")

    def operand(self, arg: ast.Arg) -> tuple[str, Span]:
        if isinstance(arg, ast.Name):
            return arg.text, arg.span
        # A literal operand becomes a const named by its text, shared by equal
        # literals; shape inference gives it its readers' dtype.
        name = _literal_text(arg.span)
        if name in self.decls:
            return name, arg.span
        value = self.array(arg, "f64")
        if value is None:
            return name, arg.span
        if name not in self.decls:
            self.decls[name] = ConstDecl(name, arg.span, arg.span, TensorType(None, value.shape), value, literal=True)
        return name, arg.span

    def node(
        self,
        target: str,
        target_span: Span,
        stmt_span: Span,
        call: ast.Call | ast.Name,
        piped: tuple[str, Span] | None = None,
    ) -> bool:
        """Add `target = op(piped, args...)`, or expand a block's use; False if the op is wrong."""
        op_name = call.op if isinstance(call, ast.Call) else call
        if op_name.text in self.blocks:
            return self.use_block(target, target_span, call, piped)
        op = self.resolve_op(op_name)
        if op is None:
            return False
        operands = [piped] if piped else []
        attrs: dict[str, Any] = {}
        if isinstance(call, ast.Call):
            operands += [self.operand(a) for a in call.args]
            if not self.attributes(op, call, attrs):
                return False
        for key, attr in op.attributes.items():
            attrs.setdefault(key, attr.default)
        call_span = call.span
        if len(operands) != len(op.operands):
            n = len(op.operands)
            got = len(operands) - (1 if piped else 0)
            piped_note = " plus the value piped in by `->`" if piped else ""
            self.error(
                f"wrong number of arguments: `{op.name}` takes {n} ({', '.join(op.operands)}), got {got}{piped_note}",
                call_span,
                f"write `{op.name}({', '.join(op.operands)})`"
                + (f", or `-> {op.name}({', '.join(op.operands[1:])})` in a chain" if n > 1 else ""),
                code="E106",
            )
            return False
        decl = OpNode(
            target,
            target_span,
            stmt_span,
            op,
            tuple(name for name, _ in operands),
            tuple(span for _, span in operands),
            attrs,
            call_span,
            {a.name.text: a.value.span for a in call.attrs} if isinstance(call, ast.Call) else {},
        )
        self.define(ast.Name(target, target_span), decl)
        return True

    def attributes(self, op: Op, call: ast.Call, attrs: dict[str, Any]) -> bool:
        ok = True
        for attr in call.attrs:
            key = attr.name.text
            spec = op.attributes.get(key)
            if spec is None:
                known = ", ".join(f"`{k}`" for k in op.attributes)
                hint = did_you_mean(key, op.attributes) or (
                    f"`{op.name}` takes {known}" if known else f"`{op.name}` takes no attributes"
                )
                self.error(f"unknown attribute `{key}` for `{op.name}`", attr.name.span, hint, code="E104")
                ok = False
            elif key in attrs:
                self.error(f"attribute `{key}` given twice", attr.name.span, code="E105")
                ok = False
            elif spec.choices and attr.value.value not in spec.choices:
                choices = ", ".join(f"`{c}`" for c in spec.choices)
                self.error(
                    f"`{key}` of `{op.name}` must be one of {choices}, got `{attr.value.value}`",
                    attr.value.span,
                    did_you_mean(str(attr.value.value), spec.choices),
                    code="E107",
                )
                ok = False
            elif spec.problem is not None and (problem := spec.problem(attr.value.value)) is not None:
                self.error(
                    f"`{key}` of `{op.name}` {problem}, got `{_written(attr.value)}`",
                    attr.value.span,
                    spec.hint,
                    code="E107",
                )
                ok = False
            else:
                attrs[key] = attr.value.value
        return ok

    def _Assign(self, stmt: ast.Assign) -> None:
        self.node(stmt.target.text, stmt.target.span, stmt.span, stmt.call)

    def _Chain(self, stmt: ast.Chain) -> None:
        """`x -> f(a) -> g as h -> y` is `f1 = f(x, a); h = g(f1); y = ...`.

        The last link names the result; the links between apply ops, the piped
        value first. Unnamed intermediate values are called after their op
        (affine1, relu1, affine2), the textbook's layer names.
        """
        *steps, last = stmt.links
        if not isinstance(last.item, ast.Name) or last.alias is not None:
            self.error(
                "a chain must end by naming its result",
                last.span,
                "end it with `-> NAME`, e.g. `x -> relu -> h`",
                code="E007",
            )
            return
        if self.known(last.item.text):
            what = "op" if last.item.text in REGISTRY else "block"
            self.error(
                f"chain ends in {what} `{last.item.text}`; name its result",
                last.item.span,
                f"write `... -> {last.item.text} -> NAME`",
                code="E007",
            )
            return
        if not steps and isinstance(stmt.head, ast.Name):
            self.error(
                "a chain needs at least one op between its ends", stmt.span, "e.g. `x -> relu -> h`", code="E007"
            )
            return
        if isinstance(stmt.head, ast.Call):
            first = self.auto_name(stmt.head.op.text) if steps else last.item.text
            if not self.node(first, stmt.head.span, stmt.span, stmt.head):
                return
            current = (first, stmt.head.span)
        else:
            current = (stmt.head.text, stmt.head.span)
        for i, link in enumerate(steps):
            final = i == len(steps) - 1
            if isinstance(link.item, ast.Name) and not self.known(link.item.text):
                hint = did_you_mean(link.item.text, [*REGISTRY, *self.blocks])
                hint = hint or f"to name a value inside a chain, write `-> op as {link.item.text}`"
                what = "op or block" if self.blocks else "op"
                self.error(f"unknown {what} `{link.item.text}`", link.item.span, hint, code="E103")
                return
            if final and link.alias is not None:
                self.error(
                    f"`as {link.alias.text}` on the last op of a chain: its result is `{last.item.text}`",
                    link.alias.span,
                    code="E007",
                )
                return
            if isinstance(link.item, ast.Repeat):
                repeated = self.repeat(link.item, last.item if final else link.alias, stmt.span, current)
                if repeated is None:
                    return
                current = repeated
                continue
            if final:
                target, span = last.item.text, last.item.span
            elif link.alias is not None:
                target, span = link.alias.text, link.alias.span
            else:
                target, span = self.auto_name(_op_name(link.item)), _op_span(link.item)
            if not self.node(target, span, stmt.span, link.item, piped=current):
                return
            current = (target, span)

    def auto_name(self, op: str) -> str:
        counts = self.scope.counts
        taken = self.user_names if self.scope.instance is None else self.scope.defined
        while True:
            counts[op] = counts.get(op, 0) + 1
            name = f"{self.scope.prefix}{op}{counts[op]}"
            if name not in taken and name not in self.decls and name not in self.instances:
                return name

    def known(self, name: str) -> bool:
        """Whether `name` is an op or a block."""
        return name in REGISTRY or name in self.blocks

    # --- blocks --------------------------------------------------------------

    def repeat(
        self, repeat: ast.Repeat, named: ast.Name | None, stmt_span: Span, current: tuple[str, Span]
    ) -> tuple[str, Span] | None:
        """`-> repeat 3 dense(100) as h`: uses h.1, h.2 and h (its result), one after the other;
        unnamed, dense1, dense2, dense3. The value the last one makes, or None on a mistake."""
        item = repeat.item
        if not 1 <= repeat.count <= MAX_REPEAT:
            self.error(
                f"`repeat {repeat.count}`: the count must lie in 1..{MAX_REPEAT}", repeat.count_span, code="E130"
            )
            return None
        if isinstance(item, ast.Name) and not self.known(item.text):
            self.unknown_op(item)
            return None
        # Numbered after the name (h.1, h.2, ...), except where the name is a
        # block's `out`: that one belongs to the outer use, so the uses before
        # the last are named inside this one's instance, as unnamed uses are.
        numbered = named is not None and not (self.scope.instance is not None and named.text == self.scope.result)
        for i in range(1, repeat.count + 1):
            if named is not None and i == repeat.count:
                target, span = named.text, named.span
            elif named is not None and numbered:
                target, span = f"{named.text}.{i}", named.span
            else:
                target, span = self.auto_name(_op_name(item)), _op_span(item)
            if not self.node(target, span, stmt_span, item, piped=current):
                return None
            current = (target, span)
        return current

    def use_block(
        self, target: str, target_span: Span, call: ast.Call | ast.Name, piped: tuple[str, Span] | None
    ) -> bool:
        """Expand one use of a block: its statements, renamed for the instance, in a scope of their own."""
        name = call.op if isinstance(call, ast.Call) else call
        info = self.blocks[name.text]
        if not info.ok:
            return False  # its definition's mistakes are reported
        if name.text in self.scope.blocks:
            loop = " -> ".join((*self.scope.blocks[self.scope.blocks.index(name.text) :], name.text))
            self.error(
                f"block `{name.text}` uses itself ({loop})",
                name.span,
                "a block cannot contain itself; to apply it several times, write `repeat N` in a chain",
                code="E127",
            )
            return False
        if len(self.scope.blocks) >= MAX_BLOCK_DEPTH:
            self.error(
                f"blocks nested more than {MAX_BLOCK_DEPTH} deep",
                name.span,
                "a use inside a use inside a use ...: write fewer levels of blocks",
                code="E804",
            )
            return False
        if len(self.decls) > MAX_EXPANDED_VALUES:
            if not self.too_large:
                self.too_large = True
                self.error(
                    f"the uses of blocks make more than {MAX_EXPANDED_VALUES:,} values",
                    name.span,
                    "a graph this large is beyond what graphc runs; use fewer or smaller blocks",
                    code="E804",
                )
            return False
        bound = self.bind(info, call, piped)
        if bound is None:
            return False
        values, sizes = bound
        instance = target
        if self.scope.instance is not None and target == self.scope.result:
            instance = self.auto_name(name.text)  # `-> dense(n) -> out` in a block: its result is the outer one's
        in_dims = self.in_dims(info, values, call.span)
        if in_dims is None:
            return False
        use = call.span
        first = next((values[p.text] for p in info.block.params if p.text in values), None)  # operand
        dtype = self.dtype_of(first) if first is not None else None
        inner = Scope(
            prefix=instance + ".",
            values=values,
            sizes=sizes,
            result=target,
            via=((f"in this use of `{name.text}`", use), *use.via),
            instance=instance,
            blocks=(*self.scope.blocks, name.text),
            dtype=dtype,
        )
        self.instances[instance] = Instance(instance, name.text, use, self.scope.instance)
        known = set(REGISTRY) | set(self.blocks)
        body = [instantiate(stmt, inner, in_dims, known) for stmt in info.block.body]
        inner.defined.update(defined_names(tuple(body)))
        outer, self.scope = self.scope, inner
        try:
            for stmt in body:
                getattr(self, "_" + type(stmt).__name__)(stmt)
        finally:
            self.scope = outer
        return target in self.decls

    def bind(
        self, info: BlockInfo, call: ast.Call | ast.Name, piped: tuple[str, Span] | None
    ) -> tuple[dict[str, str], dict[str, int | float | str]] | None:
        """The values and sizes a use passes to the block's parameters; None on a mistake."""
        params = [p.text for p in info.block.params]
        args: list[ast.Arg | tuple[str, Span]] = [piped] if piped else []
        keywords: tuple[ast.Attr, ...] = ()
        if isinstance(call, ast.Call):
            args += list(call.args)
            keywords = call.attrs
        name = info.name
        if len(args) + len(keywords) != len(params):
            got = len(args) + len(keywords) - (1 if piped else 0)
            piped_note = " plus the value piped in by `->`" if piped else ""
            rest = ", ".join(params[1:])
            self.error(
                f"wrong number of arguments: block `{name}` takes {len(params)} ({', '.join(params)}), "
                f"got {got}{piped_note}",
                call.span,
                f"write `{name}({', '.join(params)})`" + (f", or `-> {name}({rest})` in a chain" if params else ""),
                code="E106",
            )
            return None
        given: dict[str, ast.Arg | tuple[str, Span] | ast.AttrValue] = dict(zip(params, args))
        for attr in keywords:
            key = attr.name.text
            if key not in params:
                hint = did_you_mean(key, params) or f"block `{name}` takes {info.signature()}"
                self.error(f"block `{name}` has no parameter `{key}`", attr.name.span, hint, code="E104")
                return None
            if key in given:
                self.error(f"`{key}` given twice", attr.name.span, code="E105")
                return None
            given[key] = attr.value
        values: dict[str, str] = {}
        sizes: dict[str, int | float | str] = {}
        for param in params:
            if info.kinds.get(param) == OPERAND:
                value = self.operand_of(info, param, given[param])
                if value is None:
                    return None
                values[param] = value
            else:
                size = self.size_of(info, param, given[param])
                if size is None:
                    return None
                sizes[param] = size
        return values, sizes

    def operand_of(self, info: BlockInfo, param: str, arg) -> str | None:
        if isinstance(arg, tuple):  # piped in
            return arg[0]
        if isinstance(arg, ast.AttrValue):
            self.error(
                f"`{param}` of block `{info.name}` is an operand: pass it without `{param}=`",
                arg.span,
                f"write `{info.name}({info.signature()})`",
                code="E129",
            )
            return None
        return self.operand(arg)[0]

    def size_of(self, info: BlockInfo, param: str, arg) -> int | float | str | None:
        if isinstance(arg, tuple):
            self.error(
                f"the value piped in by `->` goes to `{param}`, a size of block `{info.name}`",
                arg[1],
                f"a block used in a chain takes the piped value as its first parameter, an operand; "
                f"`{info.name}` takes {info.signature()}",
                code="E129",
            )
            return None
        value = arg.text if isinstance(arg, ast.Name) else arg.value
        if isinstance(value, str) and param not in info.dims:
            return value  # a word for an attribute, as in `reduction=sum`
        if not isinstance(value, (int, float)):
            shown = arg.text if isinstance(arg, ast.Name) else _text(arg.span)
            self.error(
                f"`{param}` of block `{info.name}` is a size: give a number, got `{shown}`", arg.span, code="E129"
            )
            return None
        if param in info.dims and (isinstance(value, float) or value < 1):
            self.error(
                f"`{param}` of block `{info.name}` is a dim: it takes a whole number of at least 1, "
                f"got `{_text(arg.span)}`",
                arg.span,
                code="E129",
            )
            return None
        return value

    def in_dims(self, info: BlockInfo, values: dict[str, str], use: Span) -> dict[str, int] | None:
        """The last dim of each operand the block sizes by `in(x)`; None, reported, where one is not known."""
        dims: dict[str, int] = {}
        for operand in sorted(in_operands(info.block)):
            value = values[operand]
            type_ = self.type_of(value)
            problem = None
            if type_ is None:
                problem = f"the shape of `{value}` is not known where block `{info.name}` is used"
                hint = f"`in(x)` reads the shape of the value passed in: define `{value}` before this use"
            elif not type_.shape or not isinstance(type_.shape[-1], int):
                what = "a scalar" if not type_.shape else f"{type_.shape_text()}, whose last dim is symbolic"
                problem = f"`in({operand})` of block `{info.name}`: `{value}` is {what}"
                hint = "`in(x)` sizes a param by the last dim of x, which must be a number"
            if problem is not None:
                self.error(problem, use, hint, code="E128")
                return None
            assert type_ is not None and isinstance(type_.shape[-1], int)
            dims[operand] = type_.shape[-1]
        return dims

    def type_of(self, name: str) -> TensorType | None:
        """The type of a value defined so far, inferred by its op's shape rule as
        the shapes stage will (which reports any mismatch); None if not known."""
        if name in self.types:
            return self.types[name]
        decl = self.decls.get(name)
        type_: TensorType | None = None
        if isinstance(decl, (InputDecl, ParamDecl, ConstDecl)):
            type_ = decl.type
        elif isinstance(decl, OpNode):
            operands = [self.type_of(arg) for arg in decl.args]
            if all(t is not None for t in operands):
                try:
                    type_ = decl.op.infer([Operand(a, t) for a, t in zip(decl.args, operands)], decl.attrs)  # type: ignore[arg-type]
                except ShapeError:
                    type_ = None
        if decl is not None:
            self.types[name] = type_
        return type_

    def dtype_of(self, name: str) -> str | None:
        type_ = self.type_of(name)
        return type_.dtype if type_ is not None and type_.dtype in ("f32", "f64") else None

    # --- outputs and expectations --------------------------------------------

    def _OutputDecl(self, stmt: ast.OutputDecl) -> None:
        for name in stmt.names:
            if name.text in self.output_names:
                self.error(f"`{name.text}` is already an output", name.span, code="E105")
            else:
                self.outputs.append((name.text, name.span))
                self.output_names.add(name.text)

    def _ExpectDecl(self, stmt: ast.ExpectDecl) -> None:
        value = self.array(stmt.value, "f64")
        if value is None:
            return
        if stmt.tolerance is not None and stmt.tolerance < 0:
            self.error("a tolerance must not be negative", stmt.span, code="E115")
            return
        value_span = Span(
            stmt.span.source, stmt.value.span.line, stmt.value.span.column, stmt.span.end_line, stmt.span.end_column
        )
        self.expects.append(
            Expectation(stmt.target.text, stmt.of_grad, value, stmt.tolerance, stmt.span, stmt.target.span, value_span)
        )


def _number(leaf: ast.Literal) -> int | float:
    """A leaf of a literal, which is a number, never a list."""
    assert not isinstance(leaf.value, list)
    return leaf.value


def _written(value: ast.AttrValue) -> str:
    """An attribute's value as written (`1e0`, not 1.0), on one line."""
    span = value.span
    return _text(span) if span.line == span.end_line else " ".join(repr(value.value).split())


def _literal_text(span: Span) -> str:
    """A literal's source text without its spaces, line breaks and comments: its name, the
    same however the literal is laid out over lines (graphc fmt may move its line breaks)."""
    lines = [span.source.line(n) for n in range(span.line, span.end_line + 1)]
    lines[-1] = lines[-1][: span.end_column - 1]
    lines[0] = lines[0][span.column - 1 :]
    return "".join("".join(line.split("#", 1)[0].split()) for line in lines)


def _text(span: Span) -> str:
    """The source text a one-line span covers."""
    return span.source.line(span.line)[span.column - 1 : span.end_column - 1]


def _shape(type_: ast.TensorType | None) -> tuple[int | str, ...] | None:
    """A declared shape, once `plain_dims` has made sure it holds no `in(x)`."""
    if type_ is None or type_.shape is None:
        return None
    return tuple(d for d in type_.shape if not isinstance(d, ast.InDim))


def _op_name(item: ast.Name | ast.Call) -> str:
    return item.op.text if isinstance(item, ast.Call) else item.text


def _op_span(item: ast.Name | ast.Call) -> Span:
    return item.op.span if isinstance(item, ast.Call) else item.span

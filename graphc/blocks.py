"""Blocks, for elaboration: what each block's parameters are, the mistakes a
block's definition can hold, and one use of a block as ordinary statements.

A block's parameter is an operand when the block reads it as a value (an
op's argument, a chain's head, `in(x)`), and a size when it is used as a dim
(`param W: [n_in, n_out]`), as an attribute's value (`ratio=r`) or as a size
of a block it uses. `graphc.elaborate` expands every use: the block's
statements, renamed for the instance (`W` -> `h1.W`, `out` -> `h1`, an
operand -> the value passed in, a size -> its number) and with every span
remembering the use it was expanded through, so that a mistake found inside
the block later (a shape, say) also shows the use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from graphc import ast
from graphc.errors import Diagnostic, Span, did_you_mean
from graphc.ops import REGISTRY

RESULT = "out"  # the value a block names its result

OPERAND = "operand"
SIZE = "size"

# Statements a graph has and a block has not, and why.
_GRAPH_ONLY = {
    ast.InputDecl: ("input", "a block's values come in through its parameters, e.g. `block dense(x, n_out)`"),
    ast.OutputDecl: ("output", f"a block's result is the value it names `{RESULT}`, e.g. `x -> relu -> {RESULT}`"),
    ast.ExpectDecl: ("expect", "state expectations in the graph that uses the block"),
    ast.DimDecl: ("dim", "declare dims in the graph that uses the block"),
}


@dataclass
class BlockInfo:
    """A block as expansion needs it: what each parameter is, and whether it is fit to expand."""

    block: ast.Block
    kinds: dict[str, str] = field(default_factory=dict)  # parameter -> OPERAND or SIZE
    dims: set[str] = field(default_factory=set)  # sizes used as dims: whole numbers of at least 1
    ok: bool = True  # its definition is free of mistakes, so it can be expanded

    @property
    def name(self) -> str:
        return self.block.name.text

    def signature(self) -> str:
        return ", ".join(p.text for p in self.block.params)


def collect(blocks: list[tuple[ast.Block, ast.Import | None]], errors: list[Diagnostic]) -> dict[str, BlockInfo]:
    """Each block by name, its parameters sorted into operands and sizes, its definition checked.
    `blocks` holds the imported ones, each with the import that brought it in, then the file's own."""
    infos: dict[str, BlockInfo] = {}
    for block, site in blocks:
        name = block.name
        if name.text in infos:
            first = infos[name.text].block.name.span
            if site is not None:  # two imports: at the second, in the file that imports both
                errors.append(
                    Diagnostic(
                        f'`import "{site.path}"` brings in block `{name.text}` a second time',
                        site.span,
                        f"`{name.text}` is first defined at {first} and again at {name.span}; "
                        "import only one of the two",
                        code="E142",
                    )
                )
                continue
            where = f"line {first.line}" if first.source is name.span.source else f"{first}"
            errors.append(
                Diagnostic(
                    f"duplicate definition of block `{name.text}`",
                    name.span,
                    f"`{name.text}` is first defined at {where}; pick another name",
                    code="E102",
                )
            )
            continue
        infos[name.text] = BlockInfo(block)

    # The blocks a block uses are checked before it: their parameters' kinds decide its own.
    for info in _callees_first(infos):
        _check_definition(info, infos, errors)
    return infos


def _callees_first(infos: dict[str, BlockInfo]) -> list[BlockInfo]:
    """The blocks in an order where each comes after the blocks it uses (a block that
    uses itself, reported where it is expanded, anywhere in its loop). Iterative: a
    chain of thousands of blocks must not exhaust Python's recursion limit."""
    order: list[BlockInfo] = []
    placed: set[str] = set()
    for root in infos:
        stack = [(root, iter(sorted(_callees(infos[root].block, infos))))]
        seen = {root}
        while stack:
            name, callees = stack[-1]
            callee = next((c for c in callees if c not in placed and c not in seen), None)
            if callee is None:
                stack.pop()
                if name not in placed:
                    placed.add(name)
                    order.append(infos[name])
                continue
            seen.add(callee)
            stack.append((callee, iter(sorted(_callees(infos[callee].block, infos)))))
    return order


def _callees(block: ast.Block, infos: dict[str, BlockInfo]) -> set[str]:
    """The blocks that `block` uses."""
    names: set[str] = set()
    for stmt in block.body:
        items: list[Any] = []
        if isinstance(stmt, ast.Assign):
            items.append(stmt.call)
        elif isinstance(stmt, ast.Chain):
            items.append(stmt.head)
            items += [link.item.item if isinstance(link.item, ast.Repeat) else link.item for link in stmt.links]
        for item in items:
            name = item.op.text if isinstance(item, ast.Call) else item.text
            if name in infos:
                names.add(name)
    return names


def _check_definition(info: BlockInfo, infos: dict[str, BlockInfo], errors: list[Diagnostic]) -> None:
    found: list[Diagnostic] = []
    block = info.block
    if block.name.text in REGISTRY:
        found.append(
            Diagnostic(
                f"block `{block.name.text}` has the name of an op", block.name.span, "pick another name", code="E120"
            )
        )
    for name in (block.name, *block.params):
        if "." in name.text:
            found.append(
                Diagnostic(f"`{name.text}`: a block's name and parameters are plain names", name.span, code="E122")
            )
    seen: set[str] = set()
    for param in block.params:
        if param.text in seen:
            found.append(
                Diagnostic(f"duplicate parameter `{param.text}` of block `{block.name.text}`", param.span, code="E102")
            )
        if param.text == RESULT:
            found.append(
                Diagnostic(
                    f"`{RESULT}` is the block's result, not a parameter", param.span, "pick another name", code="E122"
                )
            )
        seen.add(param.text)
    for stmt in block.body:
        if type(stmt) in _GRAPH_ONLY:
            keyword, hint = _GRAPH_ONLY[type(stmt)]
            found.append(
                Diagnostic(f"`{keyword}` is not allowed in a block", _keyword_span(stmt, keyword), hint, code="E123")
            )
    _sort_parameters(info, infos, found)
    if not found and RESULT not in defined_names(block.body):
        found.append(
            Diagnostic(
                f"block `{block.name.text}` never defines `{RESULT}`",
                block.name.span,
                f"name the block's result `{RESULT}`, e.g. `x -> relu -> {RESULT}`",
                code="E121",
            )
        )
    if found:
        info.ok = False
        errors.extend(found)


def _keyword_span(stmt: Any, keyword: str) -> Span:
    span = stmt.span
    return Span(span.source, span.line, span.column, span.line, span.column + len(keyword))


def defined_names(body: tuple[ast.Statement, ...], every_chain_name: bool = False) -> set[str]:
    """Every name the statements define. With `every_chain_name`, also every plain
    name a chain passes through (`x -> relu -> y` gives x as well as y): the
    names a person wrote, which generated names must keep clear of."""
    names: set[str] = set()
    for stmt in body:
        if isinstance(stmt, (ast.InputDecl, ast.ParamDecl, ast.ConstDecl)):
            names.add(stmt.name.text)
        elif isinstance(stmt, ast.Assign):
            names.add(stmt.target.text)
        elif isinstance(stmt, ast.Chain):
            for link in stmt.links:
                if link.alias:
                    names.add(link.alias.text)
            items = [link.item for link in stmt.links] if every_chain_name else [stmt.links[-1].item]
            names.update(item.text for item in items if isinstance(item, ast.Name))
    return names


def _sort_parameters(info: BlockInfo, infos: dict[str, BlockInfo], found: list[Diagnostic]) -> None:
    """Sort the block's parameters into operands and sizes by how its statements use them."""
    block = info.block
    params = {p.text for p in block.params}
    first_use: dict[str, tuple[str, Span]] = {}

    def use(name: ast.Name, kind: str) -> None:
        if name.text not in params:
            return
        if name.text in first_use and first_use[name.text][0] != kind:
            other, span = first_use[name.text]
            found.append(
                Diagnostic(
                    f"`{name.text}` is used as {_as(kind)} here and as {_as(other)} at line {span.line}",
                    name.span,
                    f"a parameter of block `{block.name.text}` is either an operand (a value) or a size (a number)",
                    code="E124",
                )
            )
            return
        first_use.setdefault(name.text, (kind, name.span))
        info.kinds.setdefault(name.text, kind)

    for stmt in block.body:
        for name, kind in _uses(stmt, infos):
            use(name, kind)
            if kind == SIZE and isinstance(stmt, (ast.ParamDecl, ast.ConstDecl)):
                info.dims.add(name.text)
        for operand in _in_names(stmt):
            if operand.text not in params:
                hint = (
                    did_you_mean(operand.text, params)
                    or f"`in(x)` is the last dim of x, an operand of block `{block.name.text}` ({info.signature()})"
                )
                found.append(
                    Diagnostic(
                        f"`{operand.text}` is not a parameter of block `{block.name.text}`",
                        operand.span,
                        hint,
                        code="E126",
                    )
                )
        for dim, span in _shape_names(stmt):
            if dim not in params:
                hint = did_you_mean(dim, params) or (
                    f"a size in a block is a number, `in(x)` or one of its parameters ({info.signature()})"
                )
                found.append(
                    Diagnostic(f"`{dim}` is not a parameter of block `{block.name.text}`", span, hint, code="E126")
                )
    for param in block.params:
        if param.text not in first_use:
            found.append(
                Diagnostic(
                    f"parameter `{param.text}` of block `{block.name.text}` is never used",
                    param.span,
                    "use it as a value, as a size (a dim or an attribute's value), or remove it",
                    code="E125",
                )
            )


def _as(kind: str) -> str:
    return "a value" if kind == OPERAND else "a size"


def _in_names(stmt: ast.Statement) -> list[ast.Name]:
    """The operands a statement's type sizes a dim by, `x` in `in(x)`."""
    type_ = getattr(stmt, "type", None)
    if not isinstance(type_, ast.TensorType) or type_.shape is None:
        return []
    return [d.operand for d in type_.shape if isinstance(d, ast.InDim)]


def _shape_names(stmt: ast.Statement) -> list[tuple[str, Span]]:
    """The symbolic dims a statement's type writes, with their spans."""
    type_ = getattr(stmt, "type", None)
    if not isinstance(type_, ast.TensorType) or type_.shape is None:
        return []
    return [(d, span) for d, span in zip(type_.shape, type_.dim_spans) if isinstance(d, str)]


def _uses(stmt: ast.Statement, infos: dict[str, BlockInfo]) -> list[tuple[ast.Name, str]]:
    """(name, OPERAND or SIZE) for every name the statement reads."""
    found: list[tuple[ast.Name, str]] = []
    type_ = getattr(stmt, "type", None)
    if isinstance(type_, ast.TensorType) and type_.shape is not None:
        for d, span in zip(type_.shape, type_.dim_spans):
            if isinstance(d, ast.InDim):
                found.append((d.operand, OPERAND))
            elif isinstance(d, str):
                found.append((ast.Name(d, span), SIZE))
    calls: list[tuple[ast.Call | ast.Name, bool]] = []  # and whether a value is piped in
    if isinstance(stmt, ast.Assign):
        calls.append((stmt.call, False))
    elif isinstance(stmt, ast.Chain):
        if isinstance(stmt.head, ast.Name):
            found.append((stmt.head, OPERAND))
        else:
            calls.append((stmt.head, False))
        for link in stmt.links:
            item = link.item.item if isinstance(link.item, ast.Repeat) else link.item
            calls.append((item, True))
    for call, piped in calls:
        if isinstance(call, ast.Call):
            found.extend(_call_uses(call, piped, infos))
    return found


def _call_uses(call: ast.Call, piped: bool, infos: dict[str, BlockInfo]) -> list[tuple[ast.Name, str]]:
    """A call's arguments: operands, but for a block, sizes where the block takes sizes."""
    callee = infos.get(call.op.text)
    found: list[tuple[ast.Name, str]] = []
    for position, arg in enumerate(call.args):
        if not isinstance(arg, ast.Name):
            continue
        kind = OPERAND
        params = callee.block.params if callee is not None else ()
        if position + piped < len(params):
            kind = callee.kinds.get(params[position + piped].text, OPERAND) if callee else OPERAND
        found.append((arg, kind))
    for attr in call.attrs:
        if isinstance(attr.value.value, str):
            found.append((ast.Name(attr.value.value, attr.value.span), SIZE))
    return found


# --- one use of a block -----------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Where statements are elaborated: the graph itself, or one use of a block."""

    prefix: str = ""  # `h1.` inside instance h1
    values: dict[str, str] = field(default_factory=dict)  # operand -> the value passed in
    sizes: dict[str, int | float | str] = field(default_factory=dict)  # size -> its number (or word, for attributes)
    result: str = ""  # what `out` stands for
    via: tuple[tuple[str, Span], ...] = ()  # the uses, innermost first
    instance: str | None = None
    blocks: tuple[str, ...] = ()  # the blocks being expanded, outermost first
    counts: dict[str, int] = field(default_factory=dict)  # for unnamed values: affine1, affine2
    defined: set[str] = field(default_factory=set)  # names its statements define
    dtype: str | None = None  # of the block's first operand: its params' dtype unless written

    def value(self, name: ast.Name) -> ast.Name:
        text = name.text
        if text in self.values:
            text = self.values[text]
        elif text == RESULT:
            text = self.result
        else:
            text = self.prefix + text
        return ast.Name(text, name.span)

    def at(self, span: Span) -> Span:
        return dataclasses.replace(span, via=self.via)


def instantiate(stmt: ast.Statement, scope: Scope, in_dims: dict[str, int], known: set[str]) -> ast.Statement:
    """A block's statement for one use: its names renamed, its sizes made numbers
    (in_dims gives each `in(x)` operand's last dim), its spans noting the use.
    `known` is every op and block name: a chain's links name those, not values."""
    renamed = _rename(stmt, scope, in_dims, known)
    return _respan(renamed, scope.via)


def _rename(stmt: ast.Statement, scope: Scope, in_dims: dict[str, int], known: set[str]) -> ast.Statement:
    if isinstance(stmt, (ast.ParamDecl, ast.ConstDecl)):
        type_ = _sized(stmt.type, scope, in_dims) if stmt.type is not None else None
        return dataclasses.replace(stmt, name=scope.value(stmt.name), type=type_)
    if isinstance(stmt, ast.Assign):
        return dataclasses.replace(stmt, target=scope.value(stmt.target), call=_call(stmt.call, scope))
    assert isinstance(stmt, ast.Chain)
    head = scope.value(stmt.head) if isinstance(stmt.head, ast.Name) else _call(stmt.head, scope)
    links = []
    for i, link in enumerate(stmt.links):
        item: Any = link.item
        if isinstance(item, ast.Call):
            item = _call(item, scope)
        elif isinstance(item, ast.Repeat) and isinstance(item.item, ast.Call):
            item = dataclasses.replace(item, item=_call(item.item, scope))
        elif isinstance(item, ast.Name) and i == len(stmt.links) - 1 and item.text not in known:
            item = scope.value(item)
        alias = scope.value(link.alias) if link.alias is not None else None
        links.append(dataclasses.replace(link, item=item, alias=alias))
    return dataclasses.replace(stmt, head=head, links=tuple(links))


def _call(call: ast.Call, scope: Scope) -> ast.Call:
    args: list[ast.Arg] = []
    for arg in call.args:
        if isinstance(arg, ast.Name) and arg.text in scope.sizes:
            size = scope.sizes[arg.text]
            args.append(ast.Name(size, arg.span) if isinstance(size, str) else ast.Literal(size, arg.span))
        elif isinstance(arg, ast.Name):
            args.append(scope.value(arg))
        else:
            args.append(arg)
    attrs = []
    for attr in call.attrs:
        value = attr.value.value
        if isinstance(value, str) and value in scope.sizes:
            attr = dataclasses.replace(attr, value=ast.AttrValue(scope.sizes[value], attr.value.span))
        attrs.append(attr)
    return dataclasses.replace(call, args=tuple(args), attrs=tuple(attrs))


def _sized(type_: ast.TensorType, scope: Scope, in_dims: dict[str, int]) -> ast.TensorType:
    if type_.shape is None:
        return type_
    shape: list[ast.Dim] = []
    for d in type_.shape:
        if isinstance(d, ast.InDim):
            shape.append(in_dims[d.operand.text])
        elif isinstance(d, str) and isinstance(scope.sizes.get(d), int):
            shape.append(int(scope.sizes[d]))
        else:
            shape.append(d)
    return dataclasses.replace(type_, shape=tuple(shape))


def _respan(node: Any, via: tuple[tuple[str, Span], ...]) -> Any:
    """`node` with every span in it noting the uses `via`."""
    if isinstance(node, Span):
        return Span(node.source, node.line, node.column, node.end_line, node.end_column, via)
    if isinstance(node, tuple):
        return tuple(_respan(item, via) for item in node)
    names = _FIELDS.get(type(node))
    if names is None:
        if not dataclasses.is_dataclass(node) or isinstance(node, type):
            return node
        names = _FIELDS[type(node)] = tuple(f.name for f in dataclasses.fields(node))
    return type(node)(*(_respan(getattr(node, name), via) for name in names))


# The fields of each syntax-tree class, in the order its constructor takes them.
_FIELDS: dict[type, tuple[str, ...]] = {}


def in_operands(block: ast.Block) -> set[str]:
    """The operands the block sizes something by with `in(x)`."""
    names: set[str] = set()
    for stmt in block.body:
        type_ = getattr(stmt, "type", None)
        if isinstance(type_, ast.TensorType) and type_.shape is not None:
            names.update(d.operand.text for d in type_.shape if isinstance(d, ast.InDim))
    return names

"""The language server (`graphc lsp`): what graphc knows about a .graph buffer,
as an editor asks for it over the Language Server Protocol.

Two halves. `analyze` runs the front end on a buffer's text (parse,
elaborate, check, infer shapes: the stages `graphc check` runs) and keeps
what every request reads: the syntax tree, the compiled graphs, the
diagnostics, the blocks in reach. The functions under it answer one request
each from an Analysis and a position, in the protocol's terms but without
pygls, so they read like the rest of graphc. `serve` wires them to pygls,
which is imported there only: `pip install "graphc[lsp]"`.

Positions: graphc's spans count lines and columns from 1 in characters; LSP
counts from 0 in UTF-16 code units. `_lsp_position` and `_column` convert.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc import ast
from graphc.check import check
from graphc.compiler import CompiledGraph
from graphc.elaborate import elaborate
from graphc.errors import Diagnostic, GraphcError, Source, Span
from graphc.imports import imported_blocks, resolve
from graphc.ir import ConstDecl, InputDecl, OpNode, ParamDecl
from graphc.ops import REGISTRY, Op
from graphc.parse import parse
from graphc.shapes import infer_shapes

if TYPE_CHECKING:
    from lsprotocol import types as lsp

# A name as the grammar writes it, dots included (`hidden.1.W`).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
SOURCE = "graphc"  # the `source` of every diagnostic, as editors show it


# --- the analysis of one buffer ------------------------------------------------


@dataclass(frozen=True, eq=False)
class Analysis:
    """What the front end made of a buffer: its syntax tree (None if it does not
    parse), the graphs that compiled, by name, and every diagnostic."""

    source: Source
    module: ast.Module | None
    graphs: dict[str, CompiledGraph]
    diagnostics: tuple[Diagnostic, ...]
    # The blocks in reach (the file's own, then those its imports bring in), by name.
    blocks: dict[str, ast.Block] = field(default_factory=dict)
    # Each graph's plan, made when a hover over an op first asks for it.
    plans: dict[str, Any] = field(default_factory=dict)


def analyze(text: str, path: str) -> Analysis:
    """Run the front end on `text` as the file `path` (imports are relative to it).

    Graphs are checked one by one, so that one graph's mistake leaves the
    shapes of the others to hover over."""
    source = Source(text, path)
    try:
        module = parse(text, path)
    except GraphcError as err:
        return Analysis(source, None, {}, tuple(err.diagnostics))
    diagnostics: list[Diagnostic] = []
    graphs: dict[str, CompiledGraph] = {}
    try:
        irs = elaborate(module)
    except GraphcError as err:
        diagnostics.extend(err.diagnostics)
        irs = []
    for ir in irs:
        try:
            checked = check(ir)
            graphs[ir.name] = CompiledGraph(checked, infer_shapes(checked))
            diagnostics.extend(checked.warnings)
        except GraphcError as err:
            diagnostics.extend(err.diagnostics)
    return Analysis(module.source, module, graphs, tuple(diagnostics), _blocks_in_reach(module))


def _blocks_in_reach(module: ast.Module) -> dict[str, ast.Block]:
    blocks = {block.name.text: block for block in module.blocks}
    if module.imports:
        try:
            imported = imported_blocks(module)
        except GraphcError:
            imported = []  # elaborate has reported why
        for block, _ in imported:
            blocks.setdefault(block.name.text, block)
    return blocks


# --- positions -------------------------------------------------------------------


def _lsp_position(source: Source, line: int, column: int) -> tuple[int, int]:
    """A 1-based (line, column in characters) as LSP's 0-based (line, UTF-16 offset)."""
    text = source.line(line)[: max(column - 1, 0)]
    return line - 1, len(text.encode("utf-16-le")) // 2


def _column(source: Source, line: int, character: int) -> int:
    """LSP's UTF-16 offset on 0-based `line` as a 0-based index into graphc's line."""
    text = source.line(line + 1)
    units = 0
    for index, char in enumerate(text):
        if units >= character:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(text)


def span_range(span: Span) -> tuple[tuple[int, int], tuple[int, int]]:
    """A span as an LSP range: ((line, character), (line, character)), 0-based, end exclusive."""
    return _lsp_position(span.source, span.line, span.column), _lsp_position(
        span.source, span.end_line, span.end_column
    )


def _contains(span: Span, line: int, column: int) -> bool:
    """Whether the 1-based (line, column) lies in the span (its end included, where a cursor after a word sits)."""
    return (span.line, span.column) <= (line, column) <= (span.end_line, span.end_column)


@dataclass(frozen=True)
class Word:
    """The name under the cursor: its text and where it is (1-based line, columns [start, end))."""

    text: str
    line: int
    start: int
    end: int


def word_at(source: Source, line: int, character: int) -> Word | None:
    """The name at an LSP position (0-based line, UTF-16 character), if the cursor is on one."""
    column = _column(source, line, character)
    text = source.line(line + 1)
    for match in _NAME.finditer(text):
        if match.start() <= column <= match.end():
            return Word(match.group(), line + 1, match.start() + 1, match.end() + 1)
    return None


# --- diagnostics -------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A diagnostic as an editor shows it in the buffer `path`: LSP's fields, plain data."""

    range: tuple[tuple[int, int], tuple[int, int]]
    message: str
    severity: str  # "error" or "warning"
    code: str | None
    related: tuple[tuple[str, tuple[tuple[int, int], tuple[int, int]], str], ...]  # (path, range, message)


def problems(analysis: Analysis) -> list[Problem]:
    """The buffer's diagnostics, each placed in the buffer: one in an imported file is
    shown at the import, with where it is as related information."""
    path = analysis.source.path
    found = []
    for diagnostic in analysis.diagnostics:
        related = [(str(span.source.path), span_range(span), text) for text, span in _notes(diagnostic)]
        related += [(str(span.source.path), span_range(span), "see also") for span in diagnostic.related]
        message = diagnostic.message
        span = diagnostic.span
        if span is not None and span.source.path != path:
            related.insert(0, (str(span.source.path), span_range(span), diagnostic.message))
            message = f"in {span}: {message}"
            span = next((s for _, s in _notes(diagnostic) if s.source.path == path), None) or _import_of(analysis, span)
        if diagnostic.hint:
            message += f"\nhint: {diagnostic.hint}"
        code = getattr(diagnostic, "code", None)
        where = span_range(span) if span is not None else ((0, 0), (0, 0))
        found.append(Problem(where, message, diagnostic.severity, code, tuple(related)))
    return found


def _import_of(analysis: Analysis, span: Span) -> Span | None:
    """The import that brings in the file of `span` (or, for a file imported by an
    imported file, this buffer's first import): where its mistakes are shown."""
    module = analysis.module
    if module is None or not module.imports:
        return None
    target = Path(span.source.path).resolve()
    for spec in module.imports:
        if resolve(spec, module.source.path).resolve() == target:
            return spec.span
    return module.imports[0].span


def _notes(diagnostic: Diagnostic) -> list[tuple[str, Span]]:
    """The places a diagnostic's notes point at, as `graphc check` prints them."""
    notes = list(diagnostic.span.via if diagnostic.span is not None else ())
    for text, span in diagnostic.notes:
        notes += [(text, span), *span.via]
    return notes


# --- scopes: which graph or block the cursor is in, and the names it defines ----------


@dataclass(frozen=True)
class Scope:
    kind: str  # "graph" or "block"
    name: str
    span: Span
    definitions: dict[str, Span]  # each name the scope defines, where (the first time)


def scopes(module: ast.Module) -> list[Scope]:
    found = [Scope("graph", g.name.text, g.span, definitions(g.body)) for g in module.graphs]
    for block in module.blocks:
        defined = {p.text: p.span for p in block.params}
        defined.update({k: v for k, v in definitions(block.body).items() if k not in defined})
        found.append(Scope("block", block.name.text, block.span, defined))
    return found


def scope_at(module: ast.Module, line: int, column: int) -> Scope | None:
    return next((s for s in scopes(module) if _contains(s.span, line, column)), None)


def definitions(body: tuple[ast.Statement, ...]) -> dict[str, Span]:
    """Where each name the statements define is defined: declarations, assignments,
    `as` names and the names chains end in (as graphc.blocks.defined_names finds them)."""
    found: dict[str, Span] = {}
    for stmt in body:
        for name in _defined_by(stmt):
            found.setdefault(name.text, name.span)
    return found


def _defined_by(stmt: ast.Statement) -> Iterator[ast.Name]:
    if isinstance(stmt, (ast.DimDecl, ast.InputDecl, ast.ParamDecl, ast.ConstDecl)):
        yield stmt.name
    elif isinstance(stmt, ast.Assign):
        yield stmt.target
    elif isinstance(stmt, ast.Chain):
        yield from (link.alias for link in stmt.links if link.alias is not None)
        if isinstance(stmt.links[-1].item, ast.Name):
            yield stmt.links[-1].item


# --- hover ---------------------------------------------------------------------------


def hover(analysis: Analysis, line: int, character: int, checked: Analysis | None = None) -> tuple[str, Word] | None:
    """Markdown for what is under the cursor: a value's type, a block's signature, an op's rules.

    `checked` is the buffer as it last checked: while a graph has a mistake (as it
    mostly has while a person types), its values are shown with the types they had then."""
    word = word_at(analysis.source, line, character)
    if word is None:
        return None
    if analysis.module is not None:
        scope = scope_at(analysis.module, word.line, word.start)
    else:
        scope = _scope_from_prefix(analysis.source, word.line + 1)  # the lines up to the word's
    if scope is not None and word.text in scope.definitions:
        text = _value_hover(analysis, scope, word.text)
        if text is None and checked is not None and scope.name not in analysis.graphs:
            text = _value_hover(checked, scope, word.text)
            text = text and text + "\n\n(as the buffer last checked)"
        return (text, word) if text else None
    if word.text in analysis.blocks:
        return _block_signature(analysis.blocks[word.text]), word
    if word.text in REGISTRY:
        return op_doc(REGISTRY[word.text], analysis, _node_at(analysis, scope, word)), word
    return None


def _value_hover(analysis: Analysis, scope: Scope, name: str) -> str | None:
    if scope.kind == "graph":
        graph = analysis.graphs.get(scope.name)
        if graph is None:
            return None  # the graph does not compile: no shapes to tell
        if name in graph.ir.dims:
            return f"```graph\ndim {name} = {graph.ir.dims[name]}\n```"
        if name not in graph.types:
            return None
        kind = _kind(graph, name)
        t = graph.types[name]
        return f"```graph\n{name}: {t}\n```\n{kind}; shape {t.shape_text()}, dtype {t.dtype or 'f64'}"
    # In a block, a name is a value of each use: h1.W, h2.W, ...
    lines = []
    for graph in analysis.graphs.values():
        for instance in graph.ir.instances.values():
            if instance.block != scope.name:
                continue
            value = instance.name if name == "out" else f"{instance.name}.{name}"
            if value in graph.types:
                lines.append(f"{value}: {graph.types[value]}")
    if not lines:
        return None
    shown = lines[:MAX_HOVER_USES] + ([f"# ... {len(lines) - MAX_HOVER_USES} more"] * (len(lines) > MAX_HOVER_USES))
    return "```graph\n" + "\n".join(shown) + f"\n```\nin each use of block `{scope.name}`"


MAX_HOVER_USES = 12  # a block used more often is shown by its first uses


def _kind(graph: CompiledGraph, name: str) -> str:
    decl = graph.ir.decls[name]
    if isinstance(decl, InputDecl):
        return "input" + (f" from {decl.role}" if decl.role else "")
    if isinstance(decl, ParamDecl):
        return f"param, initialized {decl.init.describe()}"
    if isinstance(decl, ConstDecl):
        return "const"
    assert isinstance(decl, OpNode)
    return f"`{_call_text(name, decl)}`"


def _call_text(name: str, node: OpNode) -> str:
    attrs = "".join(f", {k}={v}" for k, v in node.attrs.items() if v != node.op.attributes[k].default)
    return f"{name} = {node.op.name}({', '.join(node.args)}{attrs})"


def _node_at(analysis: Analysis, scope: Scope | None, word: Word) -> tuple[CompiledGraph, str] | None:
    """The op node whose call the word names, in a graph that compiled."""
    if scope is None or scope.kind != "graph" or scope.name not in analysis.graphs:
        return None
    graph = analysis.graphs[scope.name]
    for name, decl in graph.ir.decls.items():
        span = decl.call_span if isinstance(decl, OpNode) else None
        if span is not None and (span.line, span.column) == (word.line, word.start) and not span.via:
            return graph, name
    return None


def op_signature(op: Op) -> str:
    attrs = [f"{k}={_attr_text(a.default)}" for k, a in op.attributes.items()]
    return f"{op.name}({', '.join([*op.operands, *attrs])})"


def _attr_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else str(value)


def op_doc(op: Op, analysis: Analysis | None = None, at: tuple[CompiledGraph, str] | None = None) -> str:
    """An op as graphc/ops.py defines it: its signature, forward and local gradient
    rules; at a node of a compiled graph, the rules with the node's names, as its plan prints them."""
    lines = [f"```graph\n{op_signature(op)}\n```", "forward:", "```python", *op.computes, "```"]
    step = _backward_step(analysis, *at) if analysis is not None and at is not None else None
    if at is not None and step is not None:
        graph, name = at
        node = graph.ir.decls[name]
        assert isinstance(node, OpNode)
        lines += [f"here: `{_call_text(name, node)}`; backward:", "```python"]
        lines += [f"{w.target} {'+=' if w.accumulate else '='} {w.rule}" for w in step.writes]
    else:
        lines += ["backward (local rules):", "```python"]
        lines += [f"d_{operand} = {formula}" for operand, formula in op.rules.items()]
    lines.append("```")
    attributes = [f"- `{k}`: {a.doc}" for k, a in op.attributes.items() if a.doc]
    return "\n".join(lines + attributes)


def _backward_step(analysis: Analysis, graph: CompiledGraph, name: str) -> Any:
    from graphc.plan import make_plan  # only a hover over an op reads a plan

    if graph.name not in analysis.plans:
        analysis.plans[graph.name] = make_plan(graph.checked, graph.types)
    plan = analysis.plans[graph.name]
    return next((step for step in plan.backward if step.node == name), None)


def _block_signature(block: ast.Block) -> str:
    params = ", ".join(p.text for p in block.params)
    where = Path(block.span.source.path).name
    return f"```graph\nblock {block.name.text}({params})\n```\ndefined in {where} at line {block.span.line}"


# --- go to definition ------------------------------------------------------------------


def definition(analysis: Analysis, line: int, character: int) -> Span | None:
    """Where the name under the cursor is defined: a value or dim in its graph or
    block, a block (in this file or an imported one), or the file an import names."""
    module = analysis.module
    if module is None:
        return None
    for spec in module.imports:
        if spec.span.line == line + 1 and _contains(spec.span, line + 1, _column(analysis.source, line, character) + 1):
            target = resolve(spec, module.source.path)
            return Span(Source("", str(target)), 1, 1, 1, 1) if target.is_file() else None
    word = word_at(analysis.source, line, character)
    if word is None:
        return None
    scope = scope_at(module, word.line, word.start)
    if scope is not None and word.text in scope.definitions:
        return scope.definitions[word.text]
    if word.text in analysis.blocks:
        return analysis.blocks[word.text].name.span
    return None


# --- completion ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # "op", "block", "attribute", "value"
    detail: str
    insert: str | None = None  # what to insert, when not the label


def completions(analysis: Analysis, line: int, character: int) -> list[Completion]:
    """What may be written at the cursor: inside `op(...)`, the op's attributes and
    the names in scope; elsewhere ops, blocks and names in scope."""
    source = analysis.source
    before = source.line(line + 1)[: _column(source, line, character)]
    found: list[Completion] = []
    called = _open_call(before)
    if called in REGISTRY:
        op = REGISTRY[called]
        found += [
            Completion(k, "attribute", f"{k}={_attr_text(a.default)}" + (f": {a.doc}" if a.doc else ""), f"{k}=")
            for k, a in op.attributes.items()
        ]
    else:
        found += [Completion(name, "op", op_signature(op)) for name, op in REGISTRY.items()]
        for name, block in analysis.blocks.items():
            found.append(Completion(name, "block", f"block {name}({', '.join(p.text for p in block.params)})"))
    scope = _scope_of_line(analysis, line + 1)
    if scope is not None:
        found += [Completion(name, "value", f"defined at line {span.line}") for name, span in scope.definitions.items()]
    return found


def _open_call(before: str) -> str | None:
    """The op whose parentheses the cursor is inside, on this line: `affine(W1, ` -> affine."""
    depth = 0
    for index in range(len(before) - 1, -1, -1):
        char = before[index]
        if char == ")":
            depth += 1
        elif char == "(":
            if depth == 0:
                match = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before[:index])
                return match.group(1) if match else None
            depth -= 1
    return None


def _scope_of_line(analysis: Analysis, line: int) -> Scope | None:
    """The graph or block around a 1-based line; a buffer that does not parse yet is
    parsed up to the line, so that names defined above it still complete."""
    if analysis.module is not None:
        return next((s for s in scopes(analysis.module) if s.span.line <= line <= s.span.end_line), None)
    return _scope_from_prefix(analysis.source, line)


def _scope_from_prefix(source: Source, line: int) -> Scope | None:
    """The scope a half-written buffer's cursor line is in, from the lines above it:
    from the last `graph` or `block` line, closed at the cursor, each line the parser
    stops at left out (a buffer being typed rarely parses)."""
    lines = source.lines[: line - 1]
    opening = next((i for i in range(len(lines) - 1, -1, -1) if re.match(r"\s*(graph|block)\b", lines[i])), None)
    if opening is None:
        return None
    chunk = lines[opening:]
    for _ in range(MAX_REPAIRS):
        try:
            module = parse("\n".join(chunk + ["}"]) + "\n", source.path)
        except GraphcError as err:
            bad = err.span.line - 1 if err.span is not None else 0
            if bad >= len(chunk):  # at the closing brace: an unclosed `(` above, say; leave out the last line
                bad = max((i for i, text in enumerate(chunk) if text.strip()), default=0)
            if bad == 0:
                return None  # the header itself: nothing left to leave out
            chunk = chunk[:bad] + [""] + chunk[bad + 1 :]  # blank, so that lines keep their numbers
            continue
        found = scopes(module)
        if not found:
            return None
        scope = found[-1]
        moved = {
            name: dataclasses.replace(span, line=span.line + opening, end_line=span.end_line + opening)
            for name, span in scope.definitions.items()
        }
        return dataclasses.replace(scope, definitions=moved)
    return None


MAX_REPAIRS = 8  # lines of a half-written scope left out before completion gives up on its names


# --- the server ------------------------------------------------------------------------------


def _uri_path(uri: str) -> str:
    from pygls.uris import to_fs_path

    return to_fs_path(uri) or uri


def serve() -> None:  # pragma: no cover (run in a subprocess by tests/test_lsp.py)
    """Serve LSP on stdin and stdout until the client says exit."""
    from lsprotocol import types as lsp
    from pygls.lsp.server import LanguageServer

    from graphc import __version__

    server = LanguageServer("graphc", __version__)
    latest: dict[str, Analysis] = {}
    checked: dict[str, Analysis] = {}  # each buffer as it last checked with no error, for hover meanwhile

    def refresh(uri: str) -> None:
        document = server.workspace.get_text_document(uri)
        analysis = analyze(document.source, _uri_path(uri))
        latest[uri] = analysis
        if not any(d.severity == "error" for d in analysis.diagnostics):
            checked[uri] = analysis
        found = [_lsp_diagnostic(p, analysis.source.path, uri, lsp) for p in problems(analysis)]
        server.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, diagnostics=found, version=document.version)
        )

    def analysis_of(uri: str) -> Analysis:
        document = server.workspace.get_text_document(uri)
        current = latest.get(uri)
        if current is None or current.source.text != document.source:
            refresh(uri)
        return latest[uri]

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: lsp.DidOpenTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: lsp.DidChangeTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: lsp.DidSaveTextDocumentParams) -> None:
        refresh(params.text_document.uri)  # an imported file may have changed on disk

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: lsp.DidCloseTextDocumentParams) -> None:
        latest.pop(params.text_document.uri, None)
        checked.pop(params.text_document.uri, None)
        server.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
        )

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def on_hover(params: lsp.HoverParams) -> lsp.Hover | None:
        uri = params.text_document.uri
        found = hover(analysis_of(uri), params.position.line, params.position.character, checked.get(uri))
        if found is None:
            return None
        text, word = found
        source = latest[uri].source
        start = _lsp_position(source, word.line, word.start)
        end = _lsp_position(source, word.line, word.end)
        return lsp.Hover(
            contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text),
            range=lsp.Range(lsp.Position(*start), lsp.Position(*end)),
        )

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def on_definition(params: lsp.DefinitionParams) -> lsp.Location | None:
        span = definition(analysis_of(params.text_document.uri), params.position.line, params.position.character)
        if span is None:
            return None
        uri = _uri(span.source.path, latest[params.text_document.uri].source.path, params.text_document.uri)
        return lsp.Location(uri=uri, range=_lsp_range(span_range(span), lsp))

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["(", ",", ">", " "]))
    def on_completion(params: lsp.CompletionParams) -> lsp.CompletionList:
        kinds = {
            "op": lsp.CompletionItemKind.Function,
            "block": lsp.CompletionItemKind.Module,
            "attribute": lsp.CompletionItemKind.Property,
            "value": lsp.CompletionItemKind.Variable,
        }
        found = completions(analysis_of(params.text_document.uri), params.position.line, params.position.character)
        items = [
            lsp.CompletionItem(label=c.label, kind=kinds[c.kind], detail=c.detail, insert_text=c.insert) for c in found
        ]
        return lsp.CompletionList(is_incomplete=False, items=items)

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def on_formatting(params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
        document = server.workspace.get_text_document(params.text_document.uri)
        return format_edits(document.source, _uri_path(params.text_document.uri), lsp)

    # The protocol gets a stream of its own on stdout, which pygls closes at exit;
    # anything else printed goes to stderr, where it cannot corrupt a message.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    with contextlib.redirect_stdout(sys.stderr):
        server.start_io(sys.stdin.buffer, protocol_out)


def format_edits(text: str, path: str, lsp: Any) -> list[lsp.TextEdit] | None:
    """`graphc fmt`'s layout of the buffer as one edit replacing it all; none when
    it is already so or does not parse (its diagnostics say why)."""
    try:
        # graphc fmt's module, by name: a graphc without it still serves everything else.
        format_text = importlib.import_module("graphc.fmt").format_text
    except ImportError:
        from pygls.exceptions import JsonRpcInternalError

        raise JsonRpcInternalError("graphc fmt is not part of this graphc: cannot format") from None
    try:
        formatted = format_text(text, path)
    except GraphcError:
        return None
    if formatted == text:
        return []
    source = Source(text, path)
    end = (len(source.lines), 0) if text.endswith("\n") else _lsp_position(source, len(source.lines), 10**9)
    whole = lsp.Range(lsp.Position(0, 0), lsp.Position(*end))
    return [lsp.TextEdit(range=whole, new_text=formatted)]


def _lsp_range(where: tuple[tuple[int, int], tuple[int, int]], lsp: Any) -> lsp.Range:
    (start_line, start_char), (end_line, end_char) = where
    return lsp.Range(lsp.Position(start_line, start_char), lsp.Position(end_line, end_char))


def _uri(path: str, document_path: str, document_uri: str) -> str:
    """The URI of a file a span is in: the document's own (which may be unsaved), or a file on disk."""
    return document_uri if path == document_path else Path(path).resolve().as_uri()


def _lsp_diagnostic(problem: Problem, document_path: str, document_uri: str, lsp: Any) -> lsp.Diagnostic:
    severity = lsp.DiagnosticSeverity.Warning if problem.severity == "warning" else lsp.DiagnosticSeverity.Error
    related = [
        lsp.DiagnosticRelatedInformation(
            location=lsp.Location(uri=_uri(path, document_path, document_uri), range=_lsp_range(where, lsp)),
            message=message,
        )
        for path, where, message in problem.related
        if path == document_path or not path.startswith("<")
    ]
    return lsp.Diagnostic(
        range=_lsp_range(problem.range, lsp),
        message=problem.message,
        severity=severity,
        code=problem.code,
        source=SOURCE,
        related_information=related or None,
    )

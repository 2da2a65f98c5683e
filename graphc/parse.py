"""Stage 1: .graph text -> typed syntax tree (`graphc.ast.Module`).

The grammar lives in grammars/graphc.lark (installed as package data under
`graphc.grammars`). Lark parses it LALR, and the builder below makes the
dataclasses as it goes, each with its place in the file. Lark's exceptions
become GraphcErrors that say, in words, what was expected where.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import re
import string
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import lark
from lark import Token

from graphc import ast, limits
from graphc._gc import gc_paused
from graphc.cache import cache_file, store
from graphc.errors import GraphcError, Source, Span

GRAMMAR_FILE = "graphc.lark"


def grammar_text() -> str:
    """The grammar, from the installed package or, in a source checkout, grammars/."""
    try:
        return resources.files("graphc.grammars").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parent.parent / "grammars" / GRAMMAR_FILE).read_text(encoding="utf-8")


class _TooDeep(Exception):
    """A `[` past limits.MAX_DIMS levels of lists."""

    def __init__(self, token: Token):
        self.token = token


class _RunTogether(Exception):
    """Two words with no space between them, lexed apart: `graphg` as `graph` `g`
    where only the keyword may come."""

    def __init__(self, first: Token, second: Token):
        self.first, self.second = first, second


def _run_together(first: Token, second: Token) -> bool:
    """Whether `second` starts, with a letter or digit, right where the word `first` ends.
    No two tokens of a valid file do: a name takes every letter and digit it can."""
    return first.end_pos == second.start_pos and first.value[-1:] in _WORD and second.value[:1] in _WORD


_WORD = frozenset(string.ascii_letters + string.digits + "_")  # what a name is made of


class _Lines(lark.lark.PostLex):
    """Newlines as the grammar wants them: dropped inside ( ) and [ ], where
    lists and calls may run over several lines; a line break followed by
    `->` becomes that `->`, placed where the arrow is.

    One token in, at most one out, never a look ahead: Lark's contextual
    lexer reads each token in the parser state the one before it left.
    """

    always_accept = ("_NL",)  # lexed inside brackets too, to be dropped there
    _OPEN = frozenset({"LPAR", "LSQB"})
    _CLOSE = frozenset({"RPAR", "RSQB"})
    _SPECIAL = _OPEN | _CLOSE | {"_NL", "_NL_ARROW"}  # any other token passes as it is

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0  # of ( and [ together
        lists = 0  # of [ alone: a value has at most limits.MAX_DIMS dims
        last: Token | None = None
        special = self._SPECIAL
        for token in stream:
            if last is not None and last.end_pos == token.start_pos and _run_together(last, token):
                raise _RunTogether(last, token)
            last = token
            if token.type not in special:
                yield token
            elif token.type in self._OPEN:
                depth += 1
                lists += token.type == "LSQB"
                if lists > limits.MAX_DIMS:
                    raise _TooDeep(token)  # before the parser stacks up 100,000 of them
                yield token
            elif token.type in self._CLOSE:
                depth = max(depth - 1, 0)
                lists = max(lists - (token.type == "RSQB"), 0)
                yield token
            elif token.type == "_NL_ARROW":
                _, _, line, end = _where(token)
                assert token.end_pos is not None
                yield Token("_ARROW", "->", token.end_pos - 2, line, end - 2, line, end, token.end_pos)
            elif not depth:  # a line break, dropped inside brackets
                yield token


_OPTIONS: dict[str, Any] = {"parser": "lalr", "maybe_placeholders": True}


@functools.cache
def _parser() -> lark.Lark:
    """The LALR parser, from the cache when one was saved for this grammar,
    these options and this Lark (building its tables costs 0.15-0.25 s a
    process; loading them, 10 ms)."""
    text = grammar_text()
    key = f"{text}\0{_OPTIONS}\0{lark.__version__}\0{sys.version_info[:2]}"
    path = cache_file(f"parser-{hashlib.sha256(key.encode()).hexdigest()[:32]}.lark")
    if path is not None and path.is_file():
        try:
            with open(path, "rb") as handle:
                loaded = lark.Lark.load(handle)
            if isinstance(loaded.options.postlex, _Lines) and isinstance(loaded.options.transformer, _Build):
                return loaded
        except Exception:  # noqa: BLE001 -- unreadable or corrupt: build it again, as with no cache
            pass
    parser = build_parser(text)
    if path is not None:
        store(path, parser.save)
    return parser


def build_parser(text: str) -> lark.Lark:
    # The builder makes the syntax tree as Lark parses (Lark's "tree-less" mode).
    return lark.Lark(text, postlex=_Lines(), transformer=_Build(), **_OPTIONS)


@gc_paused
def parse(text: str, path: str = "<string>") -> ast.Module:
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the program
    source = Source(text, path)
    _check_size(source)
    building = _SOURCE.set(source)
    try:
        module = _parser().parse(text)
    except lark.UnexpectedInput as err:
        raise _syntax_error(err, source) from None
    except _RunTogether as err:
        raise _run_together_error(err.first, err.second, source) from None
    except _TooDeep as err:
        raise GraphcError(
            f"list nested more than {limits.MAX_DIMS} deep: a value has at most {limits.MAX_DIMS} dims",
            _token_span(source, err.token),
            code="E802",
        ) from None
    finally:
        _SOURCE.reset(building)
    assert isinstance(module, ast.Module)
    return module


def _check_size(source: Source) -> None:
    """Refuse a file too long, or a line too wide, before the parser spends its time on it."""
    if len(source.lines) > limits.MAX_LINES:
        line = limits.MAX_LINES + 1
        raise GraphcError(
            f"the file is longer than {limits.MAX_LINES:,} lines",
            Span(source, line, 1, line, 2),
            f"graphc reads .graph files of at most {limits.MAX_LINES:,} lines; "
            f"raise the limit with {limits.LINES_VARIABLE}=N",
            code="E803",
        )
    widest = max(range(len(source.lines)), key=lambda i: len(source.lines[i]), default=0)
    width = len(source.line(widest + 1))
    if width > limits.MAX_LINE_CHARS:
        column = limits.MAX_LINE_CHARS + 1
        raise GraphcError(
            f"line {widest + 1} is {width:,} characters long",
            Span(source, widest + 1, column, widest + 1, column + 1),
            f"graphc reads lines of at most {limits.MAX_LINE_CHARS:,} characters; "
            "a list may run over several lines, and large data belongs in a .npy file (--input)",
            code="E803",
        )


def parse_file(path: str | Path) -> ast.Module:
    return parse(decode(read_graph_bytes(path), str(path)), str(path))


def read_graph_bytes(path: str | Path) -> bytes:
    """A .graph file's bytes, at most graphc's limit, or a GraphcError saying why not."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            return read_graph_stream(file, str(path))
    except FileNotFoundError:
        raise GraphcError("no such file", where=str(path), code="E601") from None
    except IsADirectoryError:
        raise GraphcError("is a directory, not a .graph file", where=str(path), code="E602") from None
    except OSError as err:
        raise GraphcError(err.strerror or str(err), where=str(path), code="E603") from None


def read_graph_stream(stream: BinaryIO, where: str) -> bytes:
    """What a .graph file or standard input holds, at most graphc's limit (bounded: it may be
    /dev/zero or an endless pipe)."""
    data = stream.read(limits.MAX_FILE_BYTES + 1)
    if len(data) > limits.MAX_FILE_BYTES:
        raise GraphcError(
            f"larger than {limits.MAX_FILE_BYTES // 2**20} MiB: too large for a .graph file",
            where=where,
            hint="large data belongs in a .npy file, given with --input",
            code="E803",
        )
    return data


def decode(data: bytes, path: str) -> str:
    """UTF-8 text, or a GraphcError at the first byte that is not UTF-8, on its line shown as
    best it decodes. A leading byte-order mark (as editors on Windows write) stays the character
    U+FEFF, which `parse` drops from any text: one, and only one, as from a string."""
    bom = "\ufeff" if data.startswith(codecs.BOM_UTF8) else ""
    data = data.removeprefix(codecs.BOM_UTF8)  # not a column of line 1 in a message below
    # Universal newlines, as Python reads text: "\r\n" and a lone "\r" end a line
    # (no UTF-8 character holds either byte).
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    try:
        return bom + data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        column = len(data[line_start : err.start].decode("utf-8")) + 1  # all good up to the first bad byte
        source = Source(data.decode("utf-8", errors="replace"), path)
        raise GraphcError(
            f"not UTF-8 text: byte 0x{data[err.start]:02x} cannot start or continue a character",
            Span(source, line, column, line, column + 1),
            "save the file as UTF-8",
            code="E006",
        ) from None


# --- syntax errors -----------------------------------------------------------

# How terminals read in "expected ..." messages; string terminals show themselves.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "SIGNED_NUMBER": "a number",
    "STRING": "a string",
    "DTYPE": "`f32`, `f64` or `i64`",
    "$END": "end of file",
    "_NL": "the end of the line",
    "_NL_ARROW": "`->`",
}
_STATEMENT_KEYWORDS = {"input", "param", "const", "output", "expect", "dim"}


def _describe(terminal: str) -> str:
    if terminal in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[terminal]
    try:
        pattern = _parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal
    if isinstance(pattern, lark.lexer.PatternStr):
        return f"`{pattern.value}`"
    return terminal.lower()


def _expected(terminals: set[str] | frozenset[str]) -> str:
    words = sorted({_describe(t) for t in terminals})
    keywords = {w.strip("`") for w in words}
    if _STATEMENT_KEYWORDS <= keywords:
        # Blank lines may come anywhere a statement may: not worth a mention.
        skip = {"a name", _TERMINAL_WORDS["_NL"]}
        rest = [w for w in words if w.strip("`") not in _STATEMENT_KEYWORDS and w not in skip]
        words = ["a statement"] + rest
    last = _TERMINAL_WORDS["_NL"]
    if last in words:  # reads best at the end: "expected `from`, `}` or the end of the line"
        words = [w for w in words if w != last] + [last]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _where(token: Token) -> tuple[int, int, int, int]:
    """A token's line, column, end line and end column (which Lark's lexer always sets)."""
    assert token.line is not None and token.column is not None
    assert token.end_line is not None and token.end_column is not None
    return token.line, token.column, token.end_line, token.end_column


def _token_span(source: Source, token: Token) -> Span:
    # _where's, inline: every name of a large file comes here (a tenth of its parse)
    line, column, end_line, end_column = token.line, token.column, token.end_line, token.end_column
    assert line is not None and column is not None and end_line is not None and end_column is not None
    end = end_column if end_line == line else column + 1
    return Span(source, line, column, line, max(end, column + 1))


def _syntax_error(err: lark.UnexpectedInput, source: Source) -> GraphcError:
    if isinstance(err, lark.UnexpectedCharacters):
        char = source.text[err.pos_in_stream or 0]
        span = Span(source, err.line, err.column, err.line, err.column + 1)
        if char == ";":
            hint: str | None = "statements end at the end of the line; no `;` is needed"
        elif char == "\ufeff":
            hint = "a byte-order mark may start a file, once, and nowhere else"
        elif char.isalpha():
            hint = "names are made of the letters A to Z and a to z, digits and `_`"
        else:
            hint = None
        shown = char if char.isprintable() else repr(char)[1:-1]  # `\x00`, not an invisible character
        return GraphcError(f"unexpected character `{shown}`", span, hint, code="E001")
    # What the parser accepts at the error, exactly; `expected` is LALR's
    # merged lookahead, which names tokens that could not come next.
    expected: set[str] = set(getattr(err, "accepts", None) or getattr(err, "expected", None) or ())
    if isinstance(err, lark.UnexpectedEOF) or (isinstance(err, lark.UnexpectedToken) and err.token.type == "$END"):
        last = len(source.lines)
        column = len(source.line(last)) + 1
        span = Span(source, last, column, last, column + 1)
        hint = "every `graph NAME {` needs a closing `}`" if "RBRACE" in expected else None
        expected = (expected - {"_NL"}) or expected  # the end of the file ends the line too
        return GraphcError(f"unexpected end of file; expected {_expected(expected)}", span, hint, code="E003")
    assert isinstance(err, lark.UnexpectedToken)
    token = err.token
    span = _token_span(source, token)
    unclosed = _unclosed_graph(source, token)
    if unclosed is not None:
        return unclosed
    before = (getattr(err, "token_history", None) or [None])[-1]  # set where the lexer raised it
    if before is not None and _run_together(before, token):
        return _run_together_error(before, token, source)
    if "_NL" in expected and _starts_a_statement(err):
        return GraphcError("two statements on one line", span, "put each statement on its own line", code="E002")
    if token.type == "_ARROW" and not source.line(token.line)[: token.column - 1].strip():
        return GraphcError(
            "`->` at the start of a line continues a chain, but the statement before is not one",
            span,
            "a chain reads `x -> relu -> h`; `h = relu(x)` ends at the end of its line",
            code="E002",
        )
    if token.type == "_NL":
        return GraphcError(f"unexpected end of line; expected {_expected(expected)}", span, _CONTINUED, code="E003")
    shown = token.value if len(token.value) <= 20 else token.value[:20] + "..."
    return GraphcError(
        f"unexpected `{shown}`; expected {_expected(expected)}", span, _syntax_hint(err, expected, source), code="E002"
    )


def _run_together_error(first: Token, second: Token, source: Source) -> GraphcError:
    line, column, _, _ = _where(first)
    _, _, end_line, end = _where(second)
    return GraphcError(
        f"`{first}` and `{second}` run together",
        Span(source, line, column, end_line, end),
        f"put a space between them: `{first} {second}`",
        code="E002",
    )


def _unclosed_graph(source: Source, token: Token) -> GraphcError | None:
    """`graph b {` inside a graph: the `}` of the graph before it is missing.

    Inside a graph `graph` is an ordinary name, so the parser stumbles on
    the name after it; say what really happened.
    """
    line, column, _, _ = _where(token)
    text = source.line(line)
    if token.type != "NAME" or text[: column - 1].strip() != "graph":
        return None
    start = text.index("graph") + 1
    outer = next(
        (
            m.group(1)
            for before in reversed(source.lines[: line - 1])
            if (m := re.match(r"\s*graph\s+([A-Za-z_][A-Za-z0-9_]*)", before))
        ),
        None,
    )
    if outer is None:
        return None
    return GraphcError(
        f"graph `{outer}` is not closed before graph `{token.value}` starts",
        Span(source, line, start, line, start + len("graph")),
        f"add `}}` at the end of graph `{outer}`",
        code="E004",
    )


def _starts_a_statement(err: lark.UnexpectedToken) -> bool:
    """Whether the parser, had the line ended before `err.token`, would take
    the token as the start of the next statement: two statements on one line."""
    parser = getattr(err, "interactive_parser", None)
    if parser is None:
        return False
    # Not deep-copied: the builder never changes what it is given, and Lark's deep copy of a
    # token drops its end position.
    parser = parser.copy(deepcopy_values=False)
    try:
        parser.feed_token(Token("_NL", "\n"))
        parser.feed_token(err.token)
    except lark.LarkError:  # (the builder runs as this reduces: a size it refuses is the first error)
        return False
    return True


def _syntax_hint(err: lark.UnexpectedToken, expected: set[str] | frozenset[str], source: Source) -> str | None:
    token = err.token
    first_on_its_line = not source.line(token.line)[: token.column - 1].strip()
    if "RPAR" in expected and first_on_its_line:
        return "a `(` is not closed: is a `)` missing at the end of the line before?"
    if "LPAR" in expected and token.type == "NAME" and "_ARROW" not in expected:
        return "ops are called with parentheses, e.g. `y = relu(x)`"
    if token.type == "_ARROW" and "_NL" in expected:
        return "`->` links the steps of a chain, e.g. `x -> relu -> h`"
    if token.type == "EQUAL" and "_EQEQ" in expected:
        return "an expectation compares with `==`, e.g. `expect price == 220`"
    if token.type == "NAME" and "COLON" in expected and "EQUAL" in expected:
        return "a declaration reads `input NAME: f64[N, 784]` or `input NAME = VALUE`"
    if first_on_its_line and "RBRACE" in expected:
        return _CONTINUED
    return None


_CONTINUED = (
    "a statement ends at the end of its line; it goes on to the next only inside `( )` or `[ ]`, "
    "or where the next line starts with `->`"
)


# --- the syntax tree ---------------------------------------------------------


# The source being parsed, for the spans the builder makes. The parser, and so
# its builder, is one per process; a context variable keeps parses in different
# threads (the language server's) apart.
_SOURCE: ContextVar[Source] = ContextVar("graphc_parse_source")

Children = list[Any]  # a rule's children, as Lark hands them to the builder


class _Dim(NamedTuple):
    """A dim of a shape as written, and where, for messages about one dim."""

    value: int | ast.Name | ast.InDim
    span: Span


class _Shape(NamedTuple):
    dims: tuple[_Dim, ...]
    span: Span


class _GradTarget(NamedTuple):
    """`grad(name)` in an expectation, told apart from a plain name."""

    name: ast.Name


def _name(token: Token) -> ast.Name:
    return ast.Name(str(token), _token_span(_SOURCE.get(), token))


def _operand(child: Token | Any) -> Any:
    """A NAME token as an `ast.Name`; a node already built as it is."""
    return _name(child) if isinstance(child, Token) else child


def _names(children: Children) -> tuple[ast.Name, ...]:
    return tuple(_name(c) for c in children if isinstance(c, Token) and c.type == "NAME")


def _extent(children: Children) -> Span:
    """Where a rule's text is: from its first child's start to its last child's end,
    absent optional parts (None) aside. A child is a token or a node with a span."""
    first, last = children[0], children[-1]
    if first is None or last is None:
        first = next(c for c in children if c is not None)
        last = next(c for c in reversed(children) if c is not None)
    if isinstance(first, Token):
        line, column, _, _ = _where(first)
    else:
        line, column = first.span.line, first.span.column
    if isinstance(last, Token):
        _, _, end_line, end_column = _where(last)
    else:
        end_line, end_column = last.span.end_line, last.span.end_column
    return Span(_SOURCE.get(), line, column, end_line, end_column)


class _Build:
    """Builds `graphc.ast` dataclasses while Lark parses, and nothing else.

    Lark reduces bottom-up and calls the method named after each rule with
    the rule's children: the nodes already built for its rules, and its
    tokens (a NAME becomes an `ast.Name` here). A rule marked `!` in the
    grammar also gets its punctuation and keywords, so that its span can
    start or end at them; an absent optional part is None. Building while
    parsing spares a whole tree of Lark's and its positions (0.3 s of a
    10,000-line file), and needs no recursion however deep a value nests.
    Rules named `_...` are inlined by Lark and have no method.
    """

    def start(self, items: Children):
        graphs = tuple(i for i in items if isinstance(i, ast.Graph))
        blocks = tuple(i for i in items if isinstance(i, ast.Block))
        imports = tuple(i for i in items if isinstance(i, ast.Import))
        return ast.Module(graphs, _SOURCE.get(), blocks, imports)

    def block(self, children: Children):
        # block NAME ( PARAM, ... ) { statements }: the names after the block's are its parameters
        body = tuple(c for c in children if c is not None and not isinstance(c, Token))
        return ast.Block(_name(children[1]), _names(children[2:]), body, _extent(children))

    def import_decl(self, children: Children):
        (token,) = children
        return ast.Import(self._unescape(token), _token_span(_SOURCE.get(), token))

    def repeat(self, children: Children):
        _, count, item = children
        return ast.Repeat(self._size(count), _token_span(_SOURCE.get(), count), _operand(item), _extent(children))

    def graph(self, children: Children):
        body = tuple(c for c in children if c is not None and not isinstance(c, Token))
        return ast.Graph(_name(children[1]), body, _extent(children))

    def dim_decl(self, children: Children):
        _, name, _, size = children
        return ast.DimDecl(_name(name), self._size(size), _extent(children))

    def input_decl(self, children: Children):
        type_, init = _typed_parts(children)
        roles = _names(children[2:])  # the name after `from`
        return ast.InputDecl(_name(children[1]), type_, init, roles[0] if roles else None, _extent(children))

    def param_decl(self, children: Children):
        type_, init = _typed_parts(children)
        return ast.ParamDecl(_name(children[1]), type_, init, _extent(children))

    def const_decl(self, children: Children):
        type_, _ = _typed_parts(children)
        return ast.ConstDecl(_name(children[1]), type_, children[-1], _extent(children))

    def assign(self, children: Children):
        target, call = children
        return ast.Assign(_name(target), call, _extent(children))

    def chain(self, children: Children):
        return ast.Chain(_operand(children[0]), tuple(children[1:]), _extent(children))

    def link(self, children: Children):
        # -> item [as NAME]: a token last is the alias (an absent one is None)
        alias = _name(children[-1]) if len(children) > 2 and isinstance(children[-1], Token) else None
        return ast.Link(_operand(children[1]), alias, _extent(children))

    def output_decl(self, children: Children):
        return ast.OutputDecl(_names(children), _extent(children))

    def expect_decl(self, children: Children):
        target = children[1]
        of_grad = isinstance(target, _GradTarget)
        name = target.name if of_grad else _name(target)
        value, *tolerance = (c for c in children if isinstance(c, ast.Literal))
        tol = _number_value(tolerance[0]) if tolerance else None
        return ast.ExpectDecl(name, of_grad, value, tol, _extent(children))

    def grad_target(self, children: Children):
        return _GradTarget(_name(children[0]))

    def call(self, children: Children):
        # NAME ( arg, ... ): the arguments (None where there are none), then the `)`
        attrs, operands = [], []
        for arg in children[1:-1]:
            if isinstance(arg, Token):
                operands.append(_name(arg))
            elif isinstance(arg, ast.Attr):
                attrs.append(arg)
            elif arg is not None:
                operands.append(arg)
        return ast.Call(_name(children[0]), tuple(operands), tuple(attrs), _extent(children))

    def attr_arg(self, children: Children):
        name, value = children
        if isinstance(value, ast.Literal):
            value = ast.AttrValue(value.value, value.span)
        return ast.Attr(_name(name), value, _extent(children))

    def symbol(self, children: Children):
        name = _name(children[0])
        return ast.AttrValue(name.text, name.span)

    def string(self, children: Children):
        return ast.AttrValue(self._unescape(children[0]), _extent(children))

    def _unescape(self, token: Token) -> str:
        """The text between the quotes, with its escapes (`\\"`, `\\\\`, `\\n`, `\\t`) applied."""
        raw = str(token)[1:-1]
        if "\\" not in raw:
            return raw
        parts, i = [], 0
        while i < len(raw):
            if raw[i] != "\\":
                parts.append(raw[i])
                i += 1
                continue
            escape = raw[i + 1]  # the grammar lets no string end in a lone backslash
            if escape not in _ESCAPES:
                line, start, _, _ = _where(token)
                column = start + 1 + i
                raise GraphcError(
                    f"unknown escape `\\{escape}` in a string",
                    Span(_SOURCE.get(), line, column, line, column + 2),
                    'a string may hold `\\"`, `\\\\`, `\\n` and `\\t`',
                    code="E005",
                )
            parts.append(_ESCAPES[escape])
            i += 2
        return "".join(parts)

    def type(self, children: Children):
        dtype = None
        shape = None
        spans: tuple[Span, ...] = ()
        for part in children:
            if isinstance(part, Token):
                dtype = str(part)
            elif part is not None:
                shape = tuple(d.value.text if isinstance(d.value, ast.Name) else d.value for d in part.dims)
                spans = tuple(d.span for d in part.dims)
        return ast.TensorType(dtype, shape, _extent(children), spans)

    def shape(self, children: Children):
        return _Shape(tuple(d for d in children if isinstance(d, _Dim)), _extent(children))

    def int_dim(self, children: Children):
        (token,) = children
        return _Dim(self._size(token), _token_span(_SOURCE.get(), token))

    def in_dim(self, children: Children):
        span = _extent(children)
        (operand,) = _names(children)
        return _Dim(ast.InDim(operand, span), span)

    def _size(self, token: Token) -> int:
        """A size written in a shape or a `dim`; one with thousands of digits is refused here,
        where Python's int() would."""
        if _too_many_digits(str(token)):
            raise GraphcError(
                f"size `{token}` is too large: it has {len(str(token).lstrip('0')):,} digits",
                _token_span(_SOURCE.get(), token),
                limits.elements_hint(),
                code="E801",
            )
        return _whole_number(str(token))

    def sym_dim(self, children: Children):
        name = _name(children[0])
        return _Dim(name, name.span)

    def init_call(self, children: Children):
        numbers = tuple(_number_value(a) for a in children if isinstance(a, ast.Literal))
        return ast.Init(_name(children[0]), numbers, None, _extent(children))

    def init_value(self, children: Children):
        return ast.Init(None, (), children[0], _extent(children))

    def list(self, children: Children):
        items = tuple(item for item in children if isinstance(item, ast.Literal))
        return ast.Literal([item.value for item in items], _extent(children), items)

    def number(self, children: Children):
        (token,) = children
        text = str(token)
        value: int | float
        if not text.lstrip("+-").isdigit():
            value = float(text)  # 1e400 is inf, for elaboration to report
        elif _too_many_digits(text):
            value = float("-inf") if text.startswith("-") else float("inf")  # beyond every dtype, as 1e400
        else:
            value = _whole_number(text)
        return ast.Literal(value, _token_span(_SOURCE.get(), token))


def _typed_parts(children: Children) -> tuple[ast.TensorType | None, ast.Init | None]:
    """A declaration's written type and initializer, each None where not written."""
    type_ = next((c for c in children if isinstance(c, ast.TensorType)), None)
    init = next((c for c in children if isinstance(c, ast.Init)), None)
    return type_, init


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


def _too_many_digits(text: str) -> bool:
    """An integer past limits.MAX_INT_DIGITS significant digits: larger than any size or
    dtype, and more than Python's int() converts."""
    return len(text.lstrip("+-").lstrip("0")) > limits.MAX_INT_DIGITS


def _whole_number(text: str) -> int:
    """int(text), whatever the number of leading zeros (int() counts them against its limit)."""
    magnitude = int(text.lstrip("+-").lstrip("0") or "0")
    return -magnitude if text.startswith("-") else magnitude


def _number_value(literal: ast.Literal) -> float:
    """A `number` of the grammar (never a list there) as a float."""
    assert not isinstance(literal.value, list), literal
    return _as_float(literal.value)


def _as_float(value: int | float) -> float:
    """A number as a float; an integer too large for one becomes infinity, for elaboration to report."""
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")

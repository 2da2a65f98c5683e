"""`graphc fmt`: one canonical layout for .graph text, comments kept.

The file is parsed first (a syntax error is a located GraphcError, as
everywhere), then laid out again from its tokens, which a small lexer of its
own reads comments included (the grammar skips them). The layout:

- four spaces per level inside `graph` and `block`; each statement on its
  own line, `{` at the end of its header, `}` on a line of its own;
- one space around `=`, `==` and `->` and after `,` and `:`, none inside
  brackets, none around an attribute's `=` (`axis=1`);
- consecutive declarations of one kind (`param` lines, `input` lines, ...)
  aligned in columns: name, type, `= value`;
- trailing comments of consecutive lines aligned, two spaces after the
  longest;
- at most one blank line in a row, none at the start or end of a body, one
  after each graph and block;
- a statement wider than WIDTH breaks: a chain before each `->`, a call or
  list after its bracket, one item a line (numbers filled), with a trailing
  comma where the grammar allows one;
- a statement with comments inside keeps its line breaks, so that each
  comment stays on the line it explains.

Everything is decided from the tokens alone, never from the spacing found,
so formatting twice gives what formatting once gave.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from graphc.parse import parse

WIDTH = 100  # columns a statement may take before it breaks
INDENT = "    "
COMMENT_GAP = "  "  # between code and a trailing comment

_TOKEN = re.compile(
    r"""
    (?P<newline>\n)
  | (?P<space>[ \t\f\r]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<op>->|==|[()\[\]{},:=])
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    """,
    re.VERBOSE,
)
_OPEN = {"(": ")", "[": "]"}
_CLOSE = frozenset(_OPEN.values())
_DECLARATIONS = frozenset({"input", "param", "const", "dim"})


@dataclass(frozen=True)
class _Token:
    kind: str  # newline, comment, string, op, number, name
    text: str


def _tokens(text: str) -> list[_Token]:
    """The tokens of a file the parser accepted, comments and line ends included."""
    found = []
    depth = 0  # of ( and [: an `=` inside is an attribute's
    for match in _TOKEN.finditer(text):
        kind, value = match.lastgroup, match.group()
        assert kind is not None
        if kind == "space":
            continue
        depth += value in _OPEN
        depth -= value in _CLOSE
        found.append(_Token("attr" if value == "=" and depth else kind, value))
    return found


# --- the file as items: statements, comments, blank lines, braces -------------


@dataclass
class _Segment:
    """One source line of a statement: its tokens and the comment that ends it."""

    tokens: list[_Token] = field(default_factory=list)
    comment: str | None = None


@dataclass
class _Statement:
    segments: list[_Segment]
    opens: bool = False  # a `graph NAME {` or `block NAME(...) {` header

    @property
    def tokens(self) -> list[_Token]:
        return [t for s in self.segments for t in s.tokens]

    @property
    def comment_inside(self) -> bool:
        return any(s.comment is not None for s in self.segments[:-1])

    @property
    def comment(self) -> str | None:
        return self.segments[-1].comment


@dataclass(frozen=True)
class _Comment:
    text: str


@dataclass(frozen=True)
class _Blank:
    pass


@dataclass
class _Close:
    comment: str | None = None


_Item = _Statement | _Comment | _Blank | _Close


class _Reader:
    """Cuts the token stream into items the way the grammar ends statements:
    at a line end outside brackets, unless the next line starts with `->`,
    and at a `{` or `}`."""

    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.i = 0
        self.items: list[_Item] = []

    def peek(self, offset: int = 0) -> _Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def read(self) -> list[_Item]:
        line_ends = 0  # in a row, before the current token
        while (token := self.peek()) is not None:
            if token.kind == "newline":
                line_ends += 1
                self.i += 1
                continue
            if line_ends >= 2:
                self.items.append(_Blank())
            line_ends = 0
            if token.kind == "comment":
                self.attach_or_add(token.text)
                self.i += 1
            elif token.text == "}":
                self.items.append(_Close())
                self.i += 1
            else:
                self.items.append(self.statement())
        return self.items

    def attach_or_add(self, comment: str) -> None:
        """A comment after code on its line ends that code's line; alone, it is an item."""
        before = self.tokens[self.i - 1] if self.i else None
        last = self.items[-1] if self.items else None
        if before is not None and before.kind != "newline":
            if isinstance(last, _Statement):
                last.segments[-1].comment = comment.rstrip()
                return
            if isinstance(last, _Close):
                last.comment = comment.rstrip()
                return
        self.items.append(_Comment(comment.rstrip()))

    def statement(self) -> _Statement:
        segments = [_Segment()]
        depth = 0
        while (token := self.peek()) is not None:
            if token.kind == "newline":
                if depth == 0 and self.next_code() not in ("->", "{"):
                    break
                self.i += 1
                if segments[-1].tokens or segments[-1].comment is not None:
                    segments.append(_Segment())
                continue
            if token.kind == "comment":
                segments[-1].comment = token.text.rstrip()
                self.i += 1
                continue
            if token.text == "}" and depth == 0:
                break
            self.i += 1
            segments[-1].tokens.append(token)
            if token.text in _OPEN:
                depth += 1
            elif token.text in _CLOSE:
                depth -= 1
            elif token.text == "{":
                return _Statement(self.trimmed(segments), opens=True)
        return _Statement(self.trimmed(segments))

    def next_code(self) -> str | None:
        """The first token of the next line with code: a `->` goes on with the chain, a `{`
        opens the graph or block its header names."""
        j = self.i
        while j < len(self.tokens) and self.tokens[j].kind in ("newline", "comment"):
            j += 1
        return self.tokens[j].text if j < len(self.tokens) else None

    @staticmethod
    def trimmed(segments: list[_Segment]) -> list[_Segment]:
        return [s for s in segments if s.tokens or s.comment is not None]


# --- spacing and breaking of one statement ------------------------------------


def _spaced(tokens: list[_Token]) -> list[str]:
    """Each token's text with the space that goes before it ("" or " ")."""
    out = []
    before: _Token | None = None
    for token in tokens:
        text = token.text
        if before is None or text in (",", ")", "]", ":") or before.text in ("(", "["):
            gap = ""
        elif text in ("(", "[") and before.kind == "name":
            gap = ""  # a call, `in(x)`, `grad(x)`; a dtype's shape, `f64[3]`
        elif token.kind == "attr" or before.kind == "attr":
            gap = ""  # an attribute, `axis=1`
        else:
            gap = " "
        out.append(gap + text)
        before = token
    return out


def _flat(tokens: list[_Token]) -> str:
    return "".join(_spaced(tokens))


def _without_trailing_commas(tokens: list[_Token]) -> list[_Token]:
    """Trailing commas dropped, but in a list written inside a call: such a literal is named
    after its text (`[1,2,]`, spaces aside), in plans and messages."""
    kept = []
    openers: list[str] = []
    for i, token in enumerate(tokens):
        if token.text in _OPEN:
            openers.append(token.text)
        elif token.text in _CLOSE:
            openers.pop()
        trailing = token.text == "," and i + 1 < len(tokens) and tokens[i + 1].text in _CLOSE
        if not trailing or (openers[-1] == "[" and "(" in openers):
            kept.append(token)
    return kept


def _groups(tokens: list[_Token]) -> list[tuple[int, int]]:
    """The outermost bracket pairs, as (index of the opening, index of the closing)."""
    pairs, depth, start = [], 0, 0
    for i, token in enumerate(tokens):
        if token.text in _OPEN:
            if depth == 0:
                start = i
            depth += 1
        elif token.text in _CLOSE:
            depth -= 1
            if depth == 0:
                pairs.append((start, i))
    return pairs


def _items(tokens: list[_Token]) -> list[list[_Token]]:
    """The comma-separated items of a bracket's inside."""
    items: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.text == "," and depth == 0:
            items.append([])
            continue
        depth += token.text in _OPEN
        depth -= token.text in _CLOSE
        items[-1].append(token)
    return [item for item in items if item]


@dataclass(frozen=True)
class _Layout:
    """How one statement breaks: where trailing commas are allowed."""

    comma_in_parens: bool  # an op call's or a block header's `(`; not an initializer's

    def lines(self, tokens: list[_Token], indent: str, suffix: str = "", in_call: bool = False) -> list[str]:
        """`tokens` at `indent`, in one line if it fits (with `suffix` after), else broken.
        A list inside a call stays on one line: a literal operand is named after its text."""
        flat = indent + _flat(tokens) + suffix
        if len(flat) <= WIDTH:
            return [flat]
        links = self.links(tokens)
        if len(links) > 2:
            head = self.lines(links[0] + links[1], indent, in_call=in_call)  # the head and its first link
            links = links[1:]
            rest = [line for link in links[1:] for line in self.lines(link, indent + INDENT, in_call=in_call)]
            rest[-1] += suffix
            return head + rest
        groups = [(start, end) for start, end in _groups(tokens) if not (in_call and tokens[start].text == "[")]
        if not groups:
            return [flat]
        start, end = max(groups, key=lambda pair: len(_flat(tokens[pair[0] : pair[1] + 1])))
        items = _items(tokens[start + 1 : end])
        if not items:
            return [flat]
        opening = tokens[start].text
        comma = "," if opening == "[" or self.comma_in_parens else ""
        inner = indent + INDENT
        if opening == "[" and all(len(item) == 1 for item in items):
            body = self.filled([_flat(item) for item in items], inner, comma)
        else:
            body = []
            for n, item in enumerate(items):
                more = "," if n < len(items) - 1 else comma
                body += self.lines(item, inner, more, in_call or opening == "(")
        head = self.lines(tokens[: start + 1], indent, in_call=in_call)
        tail = indent + _flat(tokens[end:]) + suffix
        return head + body + [tail]

    @staticmethod
    def links(tokens: list[_Token]) -> list[list[_Token]]:
        """A chain cut before each `->` outside brackets (one piece if it is no chain)."""
        pieces: list[list[_Token]] = [[]]
        depth = 0
        for token in tokens:
            if token.text == "->" and depth == 0 and pieces[-1]:
                pieces.append([])
            depth += token.text in _OPEN
            depth -= token.text in _CLOSE
            pieces[-1].append(token)
        return pieces

    @staticmethod
    def filled(words: list[str], indent: str, comma: str) -> list[str]:
        """Numbers or names, as many to a line as fit."""
        lines: list[str] = []
        line = ""
        for n, word in enumerate(words):
            word += "," if n < len(words) - 1 else comma
            if line and len(indent) + len(line) + 1 + len(word) > WIDTH:
                lines.append(indent + line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        return lines + [indent + line]


def _layout_for(tokens: list[_Token]) -> _Layout:
    first = tokens[0].text if tokens else ""
    return _Layout(comma_in_parens=first not in ("input", "param", "const", "expect"))


# --- rendering ----------------------------------------------------------------


@dataclass
class _Line:
    """An output line: its code, and a trailing comment to align."""

    code: str
    comment: str | None = None
    run: bool = True  # may align its comment with the lines around it
    cells: tuple[str, ...] | None = None  # a one-line declaration's columns, to align
    keyword: str = ""

    def text(self) -> str:
        return self.code if self.comment is None else f"{self.code}{COMMENT_GAP}{self.comment}"


def _cells(tokens: list[_Token]) -> tuple[str, ...] | None:
    """A declaration's columns: `param W:`, its type, and `= value from role` (each may be "")."""
    if len(tokens) < 2 or tokens[0].text not in _DECLARATIONS or tokens[1].kind != "name":
        return None
    head = tokens[:2]
    rest = tokens[2:]
    type_: list[_Token] = []
    if rest and rest[0].text == ":":
        head.append(rest[0])
        rest = rest[1:]
        cut = next((i for i, t in enumerate(rest) if t.text in ("=", "from") and _depth(rest, i) == 0), len(rest))
        type_, rest = rest[:cut], rest[cut:]
    return (_flat(head), _flat(type_), _flat(rest))


def _depth(tokens: list[_Token], index: int) -> int:
    return sum((t.text in _OPEN) - (t.text in _CLOSE) for t in tokens[:index])


def _render_statement(statement: _Statement, indent: str) -> list[_Line]:
    if statement.comment_inside:
        return _render_as_written(statement, indent)
    tokens = _without_trailing_commas(statement.tokens)
    codes = _layout_for(tokens).lines(tokens, indent)
    # A header's comment is the graph's, not one of a column of its statements'.
    lines = [_Line(code, run=len(codes) == 1 and not statement.opens) for code in codes]
    lines[-1].comment = statement.comment
    if len(codes) == 1 and not statement.opens:
        lines[0].cells = _cells(tokens)
        lines[0].keyword = tokens[0].text
    return lines


def _render_as_written(statement: _Statement, indent: str) -> list[_Line]:
    """A statement with comments inside: its line breaks kept, each line spaced."""
    texts = iter(_spaced(statement.tokens))
    lines: list[_Line] = []
    depth = 0
    chained = False
    pending: list[str] = []  # comment lines, placed at the level of the code after them
    for n, segment in enumerate(statement.segments):
        if not segment.tokens:
            pending.append(segment.comment or "")
            continue
        closers = next((i for i, t in enumerate(segment.tokens) if t.text not in _CLOSE), len(segment.tokens))
        chained = chained or segment.tokens[0].text == "->"
        level = 0 if n == 0 else depth - closers + chained
        prefix = indent + INDENT * max(level, 0)
        lines += [_Line(prefix + comment, run=False) for comment in pending]
        pending = []
        code = "".join(next(texts) for _ in segment.tokens).lstrip(" ")
        lines.append(_Line(prefix + code, segment.comment, run=False))
        for token in segment.tokens:
            depth += token.text in _OPEN
            depth -= token.text in _CLOSE
    return lines


def _align(lines: list[_Line]) -> None:
    """Columns of declarations of one kind in a row, then trailing comments in a row."""
    for run in _runs(lines, lambda a, b: a.cells is not None and b.cells is not None and a.keyword == b.keyword):
        if len(run) > 1:
            _align_cells(run)
    for run in _runs(lines, lambda a, b: a.run and b.run):
        commented = [line for line in run if line.comment is not None]
        column = max((len(line.code) for line in commented), default=0)
        for line in commented:
            line.code = line.code.ljust(column)


def _runs(lines: list[_Line], together: Callable[[_Line, _Line], bool]) -> Iterator[list[_Line]]:
    """The lines cut into runs of neighbours that go `together`."""
    run: list[_Line] = []
    for line in lines:
        if run and not together(run[-1], line):
            yield run
            run = []
        run.append(line)
    if run:
        yield run


def _align_cells(run: list[_Line]) -> None:
    rows = [line.cells for line in run if line.cells is not None]
    widths = [0, 0]
    for row in rows:
        for k in (0, 1):
            if any(row[k + 1 :]):
                widths[k] = max(widths[k], len(row[k]))
    for line in run:
        assert line.cells is not None
        indent = line.code[: len(line.code) - len(line.code.lstrip())]
        parts = []
        for k, cell in enumerate(line.cells):
            later = any(line.cells[k + 1 :])
            if k < 2 and later and (cell or widths[k]):
                parts.append(cell.ljust(widths[k]))
            elif cell:
                parts.append(cell)
        line.code = indent + " ".join(parts)


def _render(items: list[_Item]) -> str:
    lines: list[_Line] = []
    depth = 0
    opened = False  # the last line is a header's: its body starts
    blank = _Line("", run=False)
    for n, item in enumerate(items):
        last = lines[-1] if lines else None
        following = items[n + 1] if n + 1 < len(items) else None
        if isinstance(item, _Blank):
            # Never two in a row, nor first in the file or a body, nor before a `}`.
            if last is not None and last is not blank and not opened and not isinstance(following, _Close):
                lines.append(blank)
        elif isinstance(item, _Comment):
            lines.append(_Line(INDENT * depth + item.text, run=False))
        elif isinstance(item, _Close):
            depth = max(depth - 1, 0)
            if opened and last is not None and last.comment is None:
                last.code += "}"  # an empty body
            else:
                lines.append(_Line(INDENT * depth + "}", run=False))
            if item.comment is not None:
                lines[-1].comment = item.comment
            if depth == 0 and following is not None and not isinstance(following, _Blank):
                lines.append(blank)  # one blank line after each graph and block
        else:
            if item.opens and depth == 0 and last is not None and last is not blank and not last.code.startswith("#"):
                lines.append(blank)
            lines += _render_statement(item, INDENT * depth)
            depth += item.opens
        opened = isinstance(item, _Statement) and item.opens or (opened and isinstance(item, _Blank))
    while lines and lines[-1] is blank:
        lines.pop()
    _align(lines)
    return "".join(line.text().rstrip() + "\n" for line in lines)


def format_text(text: str, path: str = "<string>") -> str:
    """`text` in graphc's canonical layout; a GraphcError if it is not valid syntax."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parse(text, path)  # a syntax error is reported where it is, as by every command (it drops a byte-order mark)
    return _render(_Reader(_tokens(text.removeprefix("\ufeff"))).read())


def read_source(path: str) -> tuple[bytes, str]:
    """A .graph file's bytes, and its text as the parser reads it (UTF-8, universal newlines)."""
    from graphc.parse import decode, read_graph_bytes

    data = read_graph_bytes(path)
    return data, decode(data, path)

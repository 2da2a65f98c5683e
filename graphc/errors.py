"""Diagnostics: every mistake a person can make becomes a GraphcError.

A diagnostic points at a span of some source text (a .graph file, or the
command line itself) and renders as

    models/bad.graph:7:9: error[E104]: unknown op `rleu`
        7 |     h = rleu(x)
          |         ^^^^
    hint: did you mean `relu`?

Every diagnostic carries a stable code (graphc/codes.py catalogues them;
`graphc explain E104` explains one). The command line prints it and exits with
status 2; nothing here raises a Python traceback at a person.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from graphc import limits


class ExitCode(enum.IntEnum):
    OK = 0
    CHECK_FAILED = 1  # a check ran and failed: an `expect`, a gradient check
    USER_ERROR = 2  # the person's input is wrong: syntax, shapes, flags, files
    INTERNAL_ERROR = 3  # a bug in graphc itself
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class Source:
    """Text that diagnostics point into: a file, a string, a command-line argument."""

    def __init__(self, text: str, path: str = "<string>"):
        self.text = text
        self.path = path
        # Lines as the parser counts them: only "\n" ends one (splitlines would
        # also split on form feeds, \x1c-\x1e, \x85 and \u2028).
        lines = text.split("\n")
        if len(lines) > 1 and not lines[-1]:
            lines.pop()  # the newline that ends the last line starts no new one
        self.lines = [line.removesuffix("\r") for line in lines]

    def line(self, lineno: int) -> str:
        if 1 <= lineno <= len(self.lines):
            return self.lines[lineno - 1]
        return ""

    def __repr__(self) -> str:
        return f"Source({self.path!r})"


@dataclass(frozen=True, eq=False)
class Span:
    """A region of a Source, 1-based lines and columns, end exclusive."""

    source: Source
    line: int
    column: int
    end_line: int
    end_column: int
    # For a span inside a block, the uses it was expanded through, innermost
    # first: (what the note says, the use). Diagnostics show each as a note.
    via: tuple[tuple[str, Span], ...] = ()

    def __str__(self) -> str:
        return f"{self.source.path}:{self.line}:{self.column}"

    def __repr__(self) -> str:
        return f"Span({self})"


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning: what is wrong, where, and how to fix it."""

    message: str
    span: Span | None = None
    hint: str | None = None
    severity: str = "error"  # or "warning"
    # Further places shown under the first, e.g. each step of a cycle.
    related: tuple[Span, ...] = ()
    # A prefix for diagnostics with no span ("graphc", or a data file's path).
    where: str | None = None
    # Labelled places elsewhere, e.g. the declaration a command-line value disagrees with.
    notes: tuple[tuple[str, Span], ...] = ()
    # The stable code from graphc/codes.py: E... for errors, W... for warnings.
    # Required (no default), so a new diagnostic cannot be made without one.
    code: str = dataclasses.field(kw_only=True)

    def render(self) -> str:
        message = clip_message(self.message)
        head = f"{self.where_text}: {self.severity}[{self.code}]: {message}"
        lines = [head]
        spans = ([self.span] if self.span is not None else []) + list(self.related)
        if spans:
            width = len(str(max(s.line for s in spans)))
            for span in spans:
                lines.extend(_excerpt(span, width))
        # A place inside a block is followed by the uses it was expanded through.
        for text, span in self._notes():
            lines.append(f"{span}: note: {text}")
            lines.extend(_excerpt(span, len(str(span.line))))
        if self.hint:
            lines.append(f"hint: {clip_message(self.hint)}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The diagnostic for editors and CI (`graphc check --json`): where it points
        (1-based lines and columns, end exclusive; null without a span), what it says."""
        place = _place(self.span) if self.span is not None else dict.fromkeys(_PLACE)
        return {
            "code": self.code,
            "severity": self.severity,
            "file": self.span.source.path if self.span is not None else self.where or "graphc",
            **place,
            "message": self.message,
            "hints": [self.hint] if self.hint else [],
            "notes": [{"message": text, "file": span.source.path, **_place(span)} for text, span in self._notes()],
            "related": [{"file": span.source.path, **_place(span)} for span in self.related],
        }

    def _notes(self) -> list[tuple[str, Span]]:
        """The notes under the message: the uses a span in a block was expanded through, then labelled places."""
        notes = list(self.span.via if self.span is not None else ())
        for text, span in self.notes:
            notes += [(text, span), *span.via]
        return notes

    @property
    def where_text(self) -> str:
        """Where the diagnostic points, as its first line starts: `path:line:col`, or a prefix."""
        return str(self.span) if self.span is not None else self.where or "graphc"


_PLACE = ("line", "column", "end_line", "end_column")


def _place(span: Span) -> dict[str, int]:
    return {"line": span.line, "column": span.column, "end_line": span.end_line, "end_column": span.end_column}


def _excerpt(span: Span, width: int) -> list[str]:
    text = span.source.line(span.line).expandtabs(1)  # one column a tab, as the parser counts
    if not text.isprintable():  # a control character would move or hide what follows
        text = "".join(c if c.isprintable() else "\ufffd" for c in text)
    if span.end_line == span.line:
        end = max(span.end_column, span.column + 1)
    else:
        end = max(len(text.rstrip()) + 1, span.column + 1)
    text, start, end = _window(text, span.column - 1, end - 1)
    caret = " " * start + "^" * (end - start)
    pad = " " * width
    return [f" {span.line:>{width}} | {text}".rstrip(), f" {pad} | {caret}"]


def _window(text: str, start: int, end: int) -> tuple[str, int, int]:
    """A line clipped to about limits.MAX_EXCERPT characters around the caret
    at [start, end) (0-based), with `...` where text is left out; returns
    the clipped line and where the caret falls in it. A caret wider than the
    window is cut with it."""
    if len(text) <= limits.MAX_EXCERPT:
        return text, start, end
    lead = limits.MAX_EXCERPT // 3  # of the line shown before the caret
    left = max(0, min(start - lead, len(text) - limits.MAX_EXCERPT))
    if left < lead:
        left = 0  # not worth a `...`
    right = left + limits.MAX_EXCERPT
    prefix = "..." if left > 0 else ""
    suffix = "..." if right < len(text) else ""
    shift = len(prefix) - left
    start += shift
    end = max(min(end + shift, right + shift), start + 1)
    return prefix + text[left:right] + suffix, start, end


_QUOTED = re.compile(r"`([^`\n]*)`")


def clip(text: str, limit: int) -> str:
    """`text` with its middle left out (`...`) when longer than `limit` characters."""
    if len(text) <= limit:
        return text
    keep = max(limit - 3, 2)
    return text[: (keep + 1) // 2] + "..." + text[len(text) - keep // 2 :]


def clip_message(message: str) -> str:
    """A message or hint of reasonable length, whatever the names and numbers in the
    file: each quoted name or value in it (`aaaa...aaa`) clipped to the length of an
    excerpt, then the whole to four."""
    quoted = _QUOTED.sub(lambda m: "`" + clip(m.group(1), limits.MAX_EXCERPT) + "`", message)
    return clip(quoted, 4 * limits.MAX_EXCERPT)


class GraphcError(Exception):
    """A mistake in a person's input; carries one or more diagnostics."""

    def __init__(
        self,
        message: str | None = None,
        span: Span | None = None,
        hint: str | None = None,
        related: Iterable[Span] = (),
        where: str | None = None,
        diagnostics: Iterable[Diagnostic] | None = None,
        notes: Iterable[tuple[str, Span]] = (),
        *,
        code: str | None,
    ):
        """`code` (graphc/codes.py) is required: None only with `diagnostics`, which carry their own."""
        if diagnostics is None:
            assert message is not None and code is not None
            diagnostics = [Diagnostic(message, span, hint, "error", tuple(related), where, tuple(notes), code=code)]
        self.diagnostics = list(diagnostics)
        super().__init__(self.render())

    @property
    def message(self) -> str:
        return self.diagnostics[0].message

    @property
    def span(self) -> Span | None:
        return self.diagnostics[0].span

    @property
    def code(self) -> str:
        return self.diagnostics[0].code

    def render(self) -> str:
        """Every diagnostic, up to limits.MAX_ERRORS of them, then how many more there are."""
        shown = [d.render() for d in self.diagnostics[: limits.MAX_ERRORS]]
        more = len(self.diagnostics) - limits.MAX_ERRORS
        if more > 0:
            first = self.diagnostics[0]
            where = str(first.span.source.path) if first.span is not None else first.where or "graphc"
            errors = f"{more:,} more error{'s' * (more != 1)}"
            shown.append(f"{where}: note: {errors} not shown (graphc shows the first {limits.MAX_ERRORS})")
        return "\n".join(shown)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None if nothing is close.

    Among many candidates, only the limits.MAX_SUGGESTION_CANDIDATES that sort
    nearest to `name` are compared with it (a typo mostly keeps the start of
    a name), so that a file of thousands of misspelt names in a graph of
    thousands of values is answered in time.
    """
    names = sorted(set(candidates))
    if len(names) > limits.MAX_SUGGESTION_CANDIDATES:
        half = limits.MAX_SUGGESTION_CANDIDATES // 2
        middle = bisect.bisect_left(names, name)
        names = names[max(middle - half, 0) : middle + half]
    import difflib  # here: only a mistake needs it, and a run without one need not import it

    matches = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None

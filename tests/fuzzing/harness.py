"""Run graphc in-process as a person runs it, and say what is wrong with what it did.

`run_graphc(argv)` calls `graphc.cli.main(argv)` with stdout and stderr captured,
Python warnings recorded and a wall-clock timer (SIGALRM) armed: a run past the
timeout is stopped and reported as a hang. `problems(outcome, source)` lists
everything the run did that a person must never see:

- exit status 3 (graphc's "internal error", with a traceback), or any status but 0, 1, 2;
- a hang;
- stderr that is not graphc's diagnostics (`PATH:LINE:COL: error[E103]: ...` with its source
  excerpt, caret and hint; `graphc: error[E501]: ...`; `<command line>:1:C: error[E406]: ...`),
  or a diagnostic without a code from graphc/codes.py;
- when the input is one source file and nothing else: an error or warning that does not
  point into that file, or points past its end;
- a source excerpt hundreds of characters wide (long lines must be clipped);
- a Python warning.

Each problem has a cause, the key the long mode groups findings by: for an internal error,
the exception's type and the innermost graphc function it came from.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import io
import os
import re
import signal
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import graphc.cli
from graphc.cli import main
from graphc.codes import BY_CODE
from graphc.errors import ExitCode

# Seconds one command may take. Every fuzzed input is small; anything near this is a hang
# (or an allocation graphc should have refused before making it). Commands that read MNIST
# (70,000 images, converted to floats) get DATA_FACTOR times as long.
TIMEOUT = float(os.environ.get("GRAPHC_FUZZ_TIMEOUT", "5"))
DATA_FACTOR = 6
DATA_COMMANDS = ("eval", "train")

# Source excerpts are clipped by graphc to about 120 characters around the caret; the
# margin allows for the line number gutter.
MAX_EXCERPT_LINE = 300
MAX_STDERR = 200_000


class Hang(BaseException):
    """Raised by the timer. A BaseException, so that graphc's `except Exception` lets it through."""


@dataclass(frozen=True)
class Outcome:
    argv: tuple[str, ...]
    status: int | None  # None: stopped by the timer
    stdout: str
    stderr: str
    warnings: tuple[str, ...]
    seconds: float
    timeout: float


@dataclass(frozen=True)
class Problem:
    kind: str  # "internal error", "hang", "stray stderr", ...
    cause: str  # what the long mode groups by, e.g. "ValueError in graphc/elaborate.py:fitting"
    detail: str = field(default="", compare=False)  # what to show a person: the traceback's tail, the line

    @property
    def signature(self) -> str:
        return f"{self.kind}: {self.cause}"

    def __str__(self) -> str:
        return f"{self.signature}\n{self.detail}" if self.detail else self.signature


@dataclass(frozen=True)
class SourceFile:
    """The one file an input consists of: every diagnostic must point into it."""

    path: str
    text: str  # decoded, for the line count

    @property
    def line_count(self) -> int:
        # Lines as graphc reads the file: with universal newlines, so a lone \r ends a line too.
        return len(self.text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def _on_alarm(signum, frame):
    raise Hang()


_PARSER: list = []  # graphc's argument parser, built once: building it is a third of a small run


def _built_parser():
    if not _PARSER:
        _PARSER.append(_build_parser())
    return _PARSER[0]


_build_parser = graphc.cli.build_parser


class FullStream(io.StringIO):
    """A stdout on a full disk (`graphc ... > /dev/full`): every write fails."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def run_graphc(argv: Sequence[str], timeout: float | None = None, stdout: io.StringIO | None = None) -> Outcome:
    """graphc.cli.main(argv), captured and timed; status None if it ran past `timeout` seconds
    (by default TIMEOUT, or DATA_FACTOR times that for a command that reads MNIST)."""
    if timeout is None:
        timeout = TIMEOUT * (DATA_FACTOR if argv and argv[0] in DATA_COMMANDS else 1)
    out, err = stdout or io.StringIO(), io.StringIO()
    gc_was_on = gc.isenabled()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    start = time.perf_counter()
    status: int | None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            graphc.cli.build_parser = _built_parser  # only while the harness runs graphc
            signal.setitimer(signal.ITIMER_REAL, timeout)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main(list(argv))
        except Hang:
            status = None
        except SystemExit as exit_:  # argparse's --help and --version; nothing the fuzzer sends
            status = exit_.code if isinstance(exit_.code, int) else ExitCode.USER_ERROR
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            graphc.cli.build_parser = _build_parser
            if gc_was_on:
                gc.enable()
    seconds = time.perf_counter() - start
    shown = tuple(f"{w.category.__name__}: {w.message} ({_short_path(w.filename)}:{w.lineno})" for w in caught)
    return Outcome(tuple(argv), status, out.getvalue(), err.getvalue(), shown, seconds, timeout)


# --- judging ----------------------------------------------------------------------------

_FRAME = re.compile(r'^  File "(?P<path>[^"]*)", line (?P<line>\d+), in (?P<function>\S+)')
_HEAD = re.compile(
    r"^(?P<where>\S.*?): (?P<severity>error|warning|note)(?:\[(?P<code>[A-Z]\d{3})\])?: (?P<message>.*)$"
)
_LOCATED = re.compile(r"^(?P<path>.*):(?P<line>\d+):(?P<column>\d+)$")
_EXCERPT = re.compile(r"^ +\d+ \|( |$)")
_CARET = re.compile(r"^ +\| *\^+$")


def _short_path(path: str) -> str:
    """graphc/elaborate.py, numpy/core/..., from a full path."""
    for marker in ("/graphc/", "/site-packages/", "/lib/python"):
        if marker in path:
            return path[path.rindex(marker) + 1 :]
    return os.path.basename(path)


def mask(text: str) -> str:
    """A message with its particulars blanked (names, numbers, paths), to group alike ones."""
    text = re.sub(r"`[^`]*`", "`…`", text)
    text = re.sub(r"/[^\s:,'\"]+", "PATH", text)
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    return text[:160]


def internal_error_cause(stderr: str) -> tuple[str, str]:
    """(cause, detail) of graphc's internal error, from the traceback it printed."""
    lines = stderr.splitlines()
    frames = [(i, m) for i, line in enumerate(lines) if (m := _FRAME.match(line))]
    graphc_frames = [m for _, m in frames if "/graphc/" in m["path"] and "/tests/" not in m["path"]]
    exception = next(
        (line for line in reversed(lines) if line and not line.startswith((" ", "graphc: internal error"))),
        "?",
    )
    exc_type = exception.split(":", 1)[0].strip()
    where = (
        f"{_short_path(graphc_frames[-1]['path'])}:{graphc_frames[-1]['function']}"
        if graphc_frames
        else "outside graphc"
    )
    tail = "\n".join(lines[-8:])
    return f"{exc_type} in {where}", tail


def problems(outcome: Outcome, source: SourceFile | None = None, statuses: Sequence[int] = (0, 1, 2)) -> list[Problem]:
    """What is wrong with one run; [] if nothing. With `source`, the input is that file alone,
    so every diagnostic must point into it."""
    found: list[Problem] = []
    if outcome.status is None:
        found.append(Problem("hang", f"{outcome.argv[0]} ran past {outcome.timeout:g} s", _command(outcome)))
        return found
    if outcome.status == ExitCode.INTERNAL_ERROR or "\ngraphc: internal error" in "\n" + outcome.stderr:
        cause, detail = internal_error_cause(outcome.stderr)
        found.append(Problem("internal error", cause, detail))
        return found
    if outcome.status not in statuses:
        found.append(
            Problem("exit status", f"{outcome.argv[0]} exited {outcome.status}", _command(outcome) + outcome.stderr)
        )
    for shown in outcome.warnings:
        found.append(Problem("python warning", mask(shown), shown))
    if len(outcome.stderr) > MAX_STDERR:
        found.append(Problem("huge stderr", f"more than {MAX_STDERR // 1000} kB", outcome.stderr[:300]))
    found.extend(_stderr_problems(outcome.stderr, source))
    return found


def _command(outcome: Outcome) -> str:
    return "graphc " + " ".join(outcome.argv) + "\n"


def _stderr_problems(stderr: str, source: SourceFile | None) -> list[Problem]:
    """Every stderr line is part of a diagnostic: a head, a source excerpt, a caret, a hint."""
    found = []
    # An error or warning inside an imported block is located in the block's file, and located in
    # the input by the note at its use that follows it: unlocated only if no such note comes.
    elsewhere: list[Problem] = []
    in_diagnostic = False
    lines = stderr.split("\n")  # not splitlines: a form feed or \x85 in a source excerpt ends no line
    if lines[-1] == "":
        lines.pop()
    for line in lines:
        head = _HEAD.match(line)
        if _EXCERPT.match(line) or _CARET.match(line):
            if not in_diagnostic:
                found.append(Problem("stray stderr", "excerpt outside a diagnostic", line[:200]))
            elif len(line) > MAX_EXCERPT_LINE:
                found.append(
                    Problem("long excerpt", "a long source line shown whole", f"{len(line)} characters: {line[:200]}")
                )
        elif head:
            in_diagnostic = True
            if head["severity"] == "note":
                if source is not None and _located_in(head, source):
                    elsewhere = []
                continue
            found += elsewhere
            judged = _head_problems(head, source, line)
            elsewhere = [p for p in judged if p.kind == "unlocated diagnostic"]
            found += [p for p in judged if p.kind != "unlocated diagnostic"]
        elif line.startswith("hint: ") and in_diagnostic:
            pass
        elif line.startswith("  ") and line[2:3].strip() and in_diagnostic:
            pass  # a message's continuation: the list of mirrors a download tried
        elif line == "" and in_diagnostic:
            pass
        elif line.startswith("wrote "):
            in_diagnostic = False  # what a command that writes a file (-o) reports, after any warnings
        else:
            found.append(Problem("stray stderr", mask(line), line[:300]))
    return found + elsewhere


def _located_in(head: re.Match, source: SourceFile) -> bool:
    located = _LOCATED.match(head["where"])
    return located is not None and located["path"] == source.path


def _head_problems(head: re.Match, source: SourceFile | None, line: str) -> list[Problem]:
    if head["severity"] != "note" and head["code"] not in BY_CODE:
        # Every error and warning carries a code from the catalogue (graphc/codes.py); a note none.
        return [Problem("diagnostic without a catalogued code", mask(head["message"]), line[:300])]
    if source is None or head["severity"] == "note":
        return []
    if head["where"] == source.path:
        return []  # about the file as a whole: it has no graph to run (E113)
    located = _LOCATED.match(head["where"])
    if located is None or located["path"] != source.path:
        return [Problem("unlocated diagnostic", mask(head["message"]), line[:300])]
    if not 1 <= int(located["line"]) <= source.line_count or int(located["column"]) < 1:
        return [
            Problem(
                "diagnostic outside the file",
                mask(head["message"]),
                f"{line[:300]}\n(the file has {source.line_count} lines)",
            )
        ]
    return []

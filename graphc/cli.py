"""The `graphc` command line: a thin layer over the library.

main(argv) -> exit status, so tests call it directly. A person's mistakes
arrive as GraphcError and print as diagnostics with status 2; a failed check
(an expectation, a gradient check) is status 1; --traceback shows the Python
traceback for debugging graphc itself.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from graphc import __version__
from graphc.errors import ExitCode, GraphcError

# Each command is a module in graphc.commands with HELP, add_arguments and
# run; these come first in --help, in the order people learn them.
FIRST = ("check", "compile", "run", "gradcheck", "train", "eval", "draw", "time")


def command_names() -> list[str]:
    import graphc.commands

    found = [m.name for m in pkgutil.iter_modules(graphc.commands.__path__) if not m.name.startswith("_")]
    found = [name for name in found if name != "common"]
    return [n for n in FIRST if n in found] + sorted(n for n in found if n not in FIRST)


class _Parser(argparse.ArgumentParser):
    """argparse, but its complaints are GraphcErrors like every other mistake."""

    def error(self, message: str) -> NoReturn:
        raise GraphcError(message, where=self.prog, hint=f"see `{self.prog} --help`", code="E501")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command, for --help and for mistakes in naming one."""
    return _parser_of(command_names())


def _parser_of(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="graphc",
        description="Compile, run, check, train and draw computational graphs written as .graph files.",
    )
    parser.add_argument("--version", action="version", version=f"graphc {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show Python tracebacks (for debugging graphc)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in names:
        module = importlib.import_module(f"graphc.commands.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        command.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for `argv`: when it names a command (after nothing but --traceback),
    that command's alone. Importing every command module and adding every command's
    arguments took 10-20 ms of each run of one; argparse reads `argv` the same either
    way, since the top-level flags take no values and only the named command is used."""
    rest = list(itertools.dropwhile(lambda arg: arg == "--traceback", argv))
    if rest and rest[0] in command_names():
        return _parser_of([rest[0]])
    return build_parser()


class _Output:
    """sys.stdout, but a failed write (a full disk, `> /dev/full`) is a
    GraphcError saying so; a closed pipe (`graphc ... | head`) stays
    BrokenPipeError, which main takes quietly. Text the stream's encoding
    cannot hold (a file name of bytes that are not UTF-8, from the command
    line) is written escaped, as stderr writes it. With no stdout at all
    (`graphc ... >&-`: Python's sys.stdout is None), printing is the error."""

    def __init__(self, stream: TextIO | None):
        self.stream = stream

    def write(self, text: str) -> int:
        if self.stream is None:
            raise _OutputFailed("cannot write to standard output: it is closed", where="graphc", code="E604")
        try:
            try:
                return self.stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self.stream, "encoding", None) or "utf-8"
                return self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        except BrokenPipeError:
            raise
        except OSError as err:
            raise _cannot_write(err) from None

    def flush(self) -> None:
        if self.stream is None:
            return
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise _cannot_write(err) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _OutputFailed(GraphcError):
    """Standard output refused what graphc printed."""


def _cannot_write(err: OSError) -> GraphcError:
    return _OutputFailed(f"cannot write to standard output: {err.strerror or err}", where="graphc", code="E604")


def _drop_unwritten(stream: TextIO | None) -> None:
    """Send what is still buffered for a failed stdout nowhere, so that Python's
    own flush at exit does not fail again (and print a traceback)."""
    if stream is None:
        return
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return  # not a file (a test's capture): nothing flushes it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    traceback = "--traceback" in argv
    stdout = sys.stdout
    sys.stdout = _Output(stdout)
    try:
        args = parser_for(argv).parse_args(argv)
        status = int(args.run(args))
        sys.stdout.flush()  # here, where a failure is still graphc's to report
        return status
    except GraphcError as err:
        if traceback:
            raise
        if isinstance(err, _OutputFailed):
            _drop_unwritten(stdout)
        print(err.render(), file=sys.stderr)
        return ExitCode.USER_ERROR
    except KeyboardInterrupt:
        print("graphc: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        _drop_unwritten(stdout)
        return ExitCode.OK  # `graphc ... | head` is not an error
    except Exception:
        # Not the person's mistake but graphc's: show everything.
        import traceback as tb

        tb.print_exc()
        print(
            "graphc: internal error (a bug in graphc, not in your graph); please report it with the traceback above",
            file=sys.stderr,
        )
        return ExitCode.INTERNAL_ERROR
    finally:
        sys.stdout = stdout


def entry_point() -> None:
    """The `graphc` program: main, then the process ends."""
    from graphc._gc import spare_the_exit_collection

    status = main()
    spare_the_exit_collection()
    sys.exit(status)

"""Rewrite .graph files in graphc's one canonical layout: four-space
indentation, one space around `=`, `==` and `->` and after `,` and `:`,
declarations of one kind aligned in columns, trailing comments aligned,
statements wider than 100 columns broken (a chain before each `->`, a call
or a list after its bracket). Comments stay where they are. A file already
in that layout is left untouched; a changed one is replaced atomically.
`--check` changes nothing and exits 1 naming the files that would change;
`--diff` prints what would change. `-` formats standard input to standard
output."""

from __future__ import annotations

import argparse
import sys

from graphc.errors import ExitCode, GraphcError

HELP = "rewrite .graph files in the canonical layout (--check, --diff)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="a .graph file; `-` reads standard input")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    parser.add_argument("--diff", action="store_true", help="write nothing; print a unified diff of the changes")


def run(args: argparse.Namespace) -> int:
    status = ExitCode.OK
    for path in args.files:
        try:
            changed = _format_one(path, args)
        except GraphcError as err:
            print(err.render(), file=sys.stderr)
            status = ExitCode.USER_ERROR
            continue
        if changed and (args.check or args.diff) and status == ExitCode.OK:
            status = ExitCode.CHECK_FAILED if args.check else status
    return status


def _format_one(path: str, args: argparse.Namespace) -> bool:
    """Format one file as the flags say; whether it is not in the canonical layout."""
    from graphc.fmt import format_text, read_source
    from graphc.parse import decode, read_graph_stream

    if path == "-":  # bytes, bounded and decoded as a file's are
        shown = "<stdin>"
        data = read_graph_stream(sys.stdin.buffer, shown)
        text = decode(data, shown)
    else:
        data, text = read_source(path)
        shown = path
    formatted = format_text(text, shown)
    changed = formatted.encode("utf-8") != data
    if args.diff and changed:
        sys.stdout.write(_diff(text, formatted, shown))
    if args.check and changed:
        print(f"would reformat {shown}")
    if path == "-" and not (args.check or args.diff):
        sys.stdout.write(formatted)
    elif changed and not (args.check or args.diff):
        from graphc.fileio import write_text

        write_text(path, formatted)
        print(f"reformatted {shown}")
    return changed


def _diff(before: str, after: str, path: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"{path} (before)", f"{path} (formatted)"
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)

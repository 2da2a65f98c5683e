"""Explain an error code: what the mistake is, an example that makes it and the
message it gets, and how to fix it (the catalogue is graphc/codes.py)."""

from __future__ import annotations

import argparse
import re

from graphc.errors import ExitCode, GraphcError

HELP = "explain an error code such as E012"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="a .graph file, or an error code such as E012")


def run(args: argparse.Namespace) -> int:
    if re.fullmatch(r"[EW]\d{3}", args.target.upper()):
        from graphc.codes import explain_code

        print(explain_code(args.target))
        return ExitCode.OK
    raise GraphcError(
        f"`{args.target}` is not an error code",
        where="graphc explain",
        hint="give a code such as E012, as a message shows it: `error[E012]`",
        code="E501",
    )

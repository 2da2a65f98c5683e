"""Explain a graph's run step by step, the chain rule with numbers: each
forward step with its inputs and output, each backward edge as upstream
gradient · local derivative = downstream gradient, each gradient of a value
read more than once as the sum of its shares. Or explain an error code
(`graphc explain E012`)."""

from __future__ import annotations

import argparse
import os
import re

from graphc.errors import ExitCode, GraphcError, Source, Span

HELP = "the chain rule with numbers: every forward and backward step of a run; or what an error code means"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The shared flags live with the loaders, which import numpy: here only when the parser is built.
    from graphc.commands.common import add_dtype_argument, add_feed_arguments, add_json_argument, add_mode_argument

    parser.add_argument("target", metavar="TARGET", help="a .graph file, or an error code such as E012")
    parser.add_argument("--graph", metavar="NAME", help="which graph of the file (default: the first)")
    add_feed_arguments(parser)
    parser.add_argument(
        "--at",
        metavar="I,J",
        help="follow one element through the graph: an index into every value shaped like the first input "
        "(or param) with that many dims, e.g. `--at 0` for the first row of a batch",
    )
    add_dtype_argument(parser)
    add_mode_argument(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    if re.fullmatch(r"[EW]\d+", args.target.upper()) and not os.path.exists(args.target):
        if not re.fullmatch(r"[EW]\d{3}", args.target.upper()):
            raise GraphcError(
                f"`{args.target}` is not an error code",
                where="graphc explain",
                hint="give a code such as E012, as a message shows it: `error[E012]`",
                code="E501",
            )
        from graphc.codes import explain_code

        print(explain_code(args.target.upper()))
        return ExitCode.OK
    from graphc.commands.common import load_program, print_json
    from graphc.explain import at_problem, explain, explanation_json, explanation_text

    shown = _printable(args.at) if args.at is not None else ""
    at = _parse_at(shown) if args.at is not None else None
    args.file = args.target
    program, feeds = load_program(args, dtype=args.dtype)
    program.forward(**feeds)
    program.backward()
    problem = at_problem(program, at)
    if problem is not None:
        raise GraphcError(problem, _at_span(shown), code="E502")
    explanation = explain(program, at)
    if args.json:
        print_json(explanation_json(explanation))
    else:
        print(explanation_text(explanation), end="")
    return ExitCode.OK


def _parse_at(text: str) -> tuple[int, ...]:
    """`0,3` as (0, 3): whole numbers of at least 0, separated by commas."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isascii() and p.isdigit() for p in parts) or any(len(p) > 18 for p in parts):
        raise GraphcError(
            f"--at takes indices such as 0 or 0,3, got `{text}`",
            _at_span(text),
            "whole numbers of at least 0, one per dim, separated by commas",
            code="E502",
        )
    return tuple(int(p) for p in parts)


def _printable(text: str) -> str:
    """Command-line text on one line: control characters escaped, as Python spells them."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _at_span(text: str) -> Span:
    """Where --at's value is, shown as `--at TEXT` on the command line."""
    source = Source(f"--at {text}", "<command line>")
    return Span(source, 1, 6, 1, 6 + max(len(text), 1))

"""Draw a graph as the textbook does: left to right, each edge labelled with
its tensor's type, and with --values and --grads the forward value above it
and the gradient below it in red. The format follows the output's extension:
.svg, .png and .pdf render with Graphviz; .dot and .mmd (Mermaid) need
nothing but graphc; `-o -` prints DOT. --plan backward draws the backward
plan instead: gradients flowing through each step's local rules, and the
forward values those rules read. `-o steps.html` writes a page that steps
through forward and backward in the browser (graphc.stepper)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphc.commands.common import (
    add_feed_arguments,
    add_file_arguments,
    add_mode_argument,
    load_graphs,
    load_program,
    select_graph,
)
from graphc.errors import ExitCode, GraphcError

HELP = "draw the graph (SVG, PNG, PDF, DOT, Mermaid or a step-through HTML page), with values and gradients"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        default="-",
        help="OUT.svg, .png, .pdf, .dot, .mmd, or .html: a page stepping through forward and backward; "
        "`-` prints DOT (the default)",
    )
    parser.add_argument("--values", action="store_true", help="run forward and write each value above its edge")
    parser.add_argument(
        "--grads", action="store_true", help="run forward and backward and write each gradient below its edge, in red"
    )
    parser.add_argument(
        "--rankdir", choices=("LR", "TB"), default="LR", help="left to right (default) or top to bottom"
    )
    parser.add_argument(
        "--plan",
        choices=("forward", "backward"),
        default="forward",
        help="draw the graph (default) or its backward plan",
    )
    parser.add_argument(
        "--collapse", action="store_true", help="draw each use of a block as one box, not a cluster of its values"
    )
    add_feed_arguments(parser)
    add_mode_argument(parser)


def run(args: argparse.Namespace) -> int:
    from graphc.draw import backward_diagram, graph_diagram, output_format, program_diagram, to_dot, write_diagram
    from graphc.plan import make_plan

    if Path(args.output).suffix.lower() == ".html":
        return _steps_page(args)
    output_format(args.output)  # an unknown extension fails before any work
    if args.collapse and args.plan == "backward":
        raise GraphcError(
            "--collapse draws the graph's block uses as boxes; the backward plan has no blocks",
            hint="draw the graph (--plan forward), or the backward plan without --collapse",
            code="E505",
        )
    feeds_given = args.set or args.input or getattr(args, "weights", None)
    if args.values or args.grads or feeds_given:  # feeds are checked even when not shown
        program, feeds = load_program(args)
        if args.values or args.grads:
            program.forward(**feeds)
        if args.grads:
            program.backward()
        diagram = program_diagram(program, values=args.values, grads=args.grads, plan=args.plan, collapse=args.collapse)
    else:
        graph = select_graph(load_graphs(args), args)
        if args.plan == "backward":
            diagram = backward_diagram(make_plan(graph.checked, graph.types, mode=args.mode))
        else:
            diagram = graph_diagram(graph, collapse=args.collapse)
    if args.output == "-":
        sys.stdout.write(to_dot(diagram, args.rankdir))
        return ExitCode.OK
    write_diagram(diagram, args.output, args.rankdir)
    print(f"wrote {args.output}", file=sys.stderr)
    return ExitCode.OK


def _steps_page(args: argparse.Namespace) -> int:
    """`-o steps.html`: run forward and backward, and write the page that steps through them."""
    from graphc.stepper import write_steps_page

    for flag, given in (("--collapse", args.collapse), ("--plan backward", args.plan == "backward")):
        if given:
            raise GraphcError(
                f"{flag} does not apply to a step-through page",
                where="graphc draw",
                hint="the page draws every value of the graph and steps through forward, then backward",
                code="E505",
            )
    program, feeds = load_program(args)
    program.forward(**feeds)
    program.backward()
    write_steps_page(program, args.output, args.rankdir)
    print(f"wrote {args.output}", file=sys.stderr)
    return ExitCode.OK

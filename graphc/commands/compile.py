"""Compile a graph and print (or write with -o) what it compiles to: the
forward and backward plans as text, the plan as JSON, a standalone numpy
module, or a Graphviz DOT diagram."""

from __future__ import annotations

import argparse
import json
from typing import Callable

from graphc.commands.common import add_file_arguments, load_graphs, write_output
from graphc.compiler import CompiledGraph, select
from graphc.emit import plan_json, plan_text
from graphc.plan import make_plan

HELP = "print the forward and backward plans, or the graph as Python, JSON or DOT"


def _plan(graph: CompiledGraph, args: argparse.Namespace) -> str:
    return plan_text(make_plan(graph.checked, graph.types))


def _json(graph: CompiledGraph, args: argparse.Namespace) -> str:
    return json.dumps(plan_json(make_plan(graph.checked, graph.types)), indent=2) + "\n"


def _python(graph: CompiledGraph, args: argparse.Namespace) -> str:
    from graphc.codegen import python_module

    return python_module(graph)


def _dot(graph: CompiledGraph, args: argparse.Namespace) -> str:
    from graphc.draw import dot_source

    return dot_source(graph)


# What --emit can produce; each takes the checked, typed graph.
EMITTERS: dict[str, Callable[[CompiledGraph, argparse.Namespace], str]] = {
    "plan": _plan,
    "json": _json,
    "python": _python,
    "dot": _dot,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    parser.add_argument("--emit", choices=EMITTERS, default="plan", help="what to emit (default: plan)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of printing")


def run(args: argparse.Namespace) -> int:
    graph = select(load_graphs(args), args.graph)
    write_output(EMITTERS[args.emit](graph, args), args.output)
    return 0

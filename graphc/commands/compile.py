"""Compile a graph and print (or write with -o) what it compiles to: the
forward and backward plans as text, or the plan as JSON."""

from __future__ import annotations

import argparse
import json

from graphc.commands.common import add_file_arguments, load_graphs, write_output
from graphc.compiler import select
from graphc.emit import plan_json, plan_text
from graphc.plan import make_plan

HELP = "print the forward and backward plans (text or JSON)"
EMITTERS = ("plan", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    parser.add_argument("--emit", choices=EMITTERS, default="plan", help="what to emit (default: plan)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of printing")


def run(args: argparse.Namespace) -> int:
    graph = select(load_graphs(args), args.graph)
    plan = make_plan(graph.checked, graph.types)
    if args.emit == "json":
        text = json.dumps(plan_json(plan), indent=2) + "\n"
    else:
        text = plan_text(plan)
    write_output(text, args.output)
    return 0

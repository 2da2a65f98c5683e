"""Time one training step node by node: the forward and backward time of each
op, averaged over --iters iterations after a warm-up, in a table sorted by
cost; the total per iteration; and the share spent outside numpy's kernels
(the interpreter's own overhead). Inputs are made up at --batch rows: from
each input's initializer, else random values of its declared shape."""

from __future__ import annotations

import argparse

from graphc.commands.common import add_file_arguments, add_json_argument, load_graphs, print_json, select_graph
from graphc.errors import GraphcError

HELP = "time forward and backward per node; show where a training step's time goes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    parser.add_argument("--batch", type=int, default=100, metavar="B", help="rows per batch (default 100)")
    parser.add_argument("--iters", type=int, default=50, metavar="N", help="timed iterations (default 50)")
    parser.add_argument("--warmup", type=int, default=5, metavar="W", help="untimed iterations first (default 5)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="make every float value this dtype")
    parser.add_argument(
        "--wrt", metavar="WHAT",
        help="which gradients backward computes: `params` (default; the inputs if there are none), "
             "`inputs`, `all`, or names, comma-separated",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for params and made-up inputs (default 0)")
    parser.add_argument("--no-codegen", action="store_true", help="do not time the generated module as well")
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from graphc.commands.compile import wrt_names
    from graphc.profile import profile_graph, profile_json, profile_text

    for flag, value, least in (("--iters", args.iters, 1), ("--warmup", args.warmup, 0), ("--batch", args.batch, 1)):
        if value < least:
            raise GraphcError(f"{flag} must be at least {least}, got {value}")
    graph = select_graph(load_graphs(args), args)
    if args.wrt is None or args.wrt == "params":
        wrt = tuple(d.name for d in graph.ir.params()) or None
    else:
        wrt = wrt_names(graph, args.wrt) or tuple(d.name for d in graph.ir.inputs() + graph.ir.params())
    profile = profile_graph(graph, batch=args.batch, iters=args.iters, warmup=args.warmup, dtype=args.dtype,
                            seed=args.seed, wrt=wrt, codegen=not args.no_codegen)
    if args.json:
        print_json(profile_json(profile))
    else:
        print(profile_text(profile), end="")
    return 0

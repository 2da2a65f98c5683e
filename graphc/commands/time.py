"""Time one training step node by node: the forward and backward time of each
op, averaged over --iters iterations after a warm-up, in a table sorted by
cost; the total per iteration; and the share spent outside numpy's kernels
(the interpreter's own overhead). Inputs are made up at --batch rows: an
input with a value in the graph keeps it, the others come from their
initializers, else random values of their declared type."""

from __future__ import annotations

import argparse

from graphc.commands.common import (
    add_dtype_argument,
    add_file_arguments,
    add_json_argument,
    add_mode_argument,
    add_seed_argument,
    add_threads_argument,
    check_batch_size,
    load_graphs,
    print_json,
    select_graph,
    whole_number,
)
from graphc.errors import ExitCode

HELP = "time forward and backward per node; show where a training step's time goes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    parser.add_argument(
        "--batch",
        type=whole_number("--batch"),
        metavar="B",
        help="rows per batch (default 100, or the rows of the inputs' values in the graph)",
    )
    parser.add_argument(
        "--iters", type=whole_number("--iters"), default=50, metavar="N", help="timed iterations (default 50)"
    )
    parser.add_argument(
        "--warmup",
        type=whole_number("--warmup", least=0),
        default=5,
        metavar="W",
        help="untimed iterations first (default 5)",
    )
    add_dtype_argument(parser)
    parser.add_argument(
        "--wrt",
        metavar="WHAT",
        help="which gradients backward computes: `params` (default; the inputs if there are none), "
        "`inputs`, `all`, or names, comma-separated",
    )
    add_seed_argument(parser, what="params, made-up inputs and dropout's masks")
    add_mode_argument(parser)
    parser.add_argument("--no-codegen", action="store_true", help="do not time the generated module as well")
    add_threads_argument(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from graphc.commands.compile import wrt_names
    from graphc.profile import Profile, profile_graph, profile_json, profile_text
    from graphc.threads import AUTO, candidate_counts, choose_threads, fixed_threads

    graph = select_graph(load_graphs(args), args)
    if args.batch is not None:
        check_batch_size(graph, args.batch, f"--batch {args.batch}")
    wrt = None  # the params (the inputs, where there are none): profile_graph's default
    if args.wrt not in (None, "params"):
        wrt = wrt_names(graph, args.wrt) or tuple(d.name for d in graph.ir.inputs() + graph.ir.params())

    def timed(iters: int, warmup: int, codegen: bool) -> Profile:
        return profile_graph(
            graph,
            batch=args.batch,
            iters=iters,
            warmup=warmup,
            dtype=args.dtype,
            seed=args.seed,
            wrt=wrt,
            codegen=codegen,
            mode=args.mode,
        )

    with fixed_threads(args.threads) as blas:
        if args.threads == AUTO:  # a short profile at each count, the whole one at the fastest
            choose_threads(lambda: timed(max(1, args.iters // 10), 1, False), candidate_counts(), blas)
        profile = timed(args.iters, args.warmup, not args.no_codegen)
        # auto's choice, where one was made; the BLAS line says the count either way
        threads = {"threads": {"setting": AUTO, "used": blas.count}} if args.threads == AUTO else {}
    if args.json:
        print_json({**profile_json(profile), **threads})
    else:
        print(profile_text(profile), end="")
    return ExitCode.OK

"""Run a graph forward, then backward from its (first) output. Prints every
output and the gradient of every input and param, and checks the graph's
`expect` lines: status 1 when one fails."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from graphc._gc import gc_paused
from graphc.commands.common import (
    add_feed_arguments,
    add_file_arguments,
    add_json_argument,
    add_mode_argument,
    add_threads_argument,
    fmt_array,
    fmt_named,
    load_program,
    print_json,
)
from graphc.errors import ExitCode

if TYPE_CHECKING:
    import numpy as np

    from graphc.program import Program
    from graphc.threads import BlasThreads

HELP = "run forward and backward; print outputs and gradients; check expectations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    add_feed_arguments(parser)
    add_mode_argument(parser)
    add_threads_argument(parser)
    add_json_argument(parser)


@gc_paused  # as check: its imports, the compile, one forward and backward make no reference cycles
def run(args: argparse.Namespace) -> int:
    from graphc.threads import AUTO, fixed_threads

    program, feeds = load_program(args)
    with fixed_threads(args.threads) as blas:
        if args.threads == AUTO:
            _choose_threads(program, feeds, blas)
        outputs = program.forward(**feeds)
        grads = program.backward()
        chosen = blas.count
    results = program.expectations()
    failed = [r for r in results if not r.ok]
    if args.json:
        # auto's choice, where one was made; a fixed count is the flag's
        threads = {"threads": {"setting": AUTO, "used": chosen}} if args.threads == AUTO else {}
        print_json(
            {
                "graph": program.name,
                "outputs": outputs,
                "grads": grads,
                **threads,
                "expects": [
                    {
                        "line": r.expectation.span.line,
                        "expect": r.expectation.describe(),
                        "ok": r.ok,
                        "actual": r.actual,
                        "detail": r.detail,
                    }
                    for r in results
                ],
            }
        )
        return ExitCode.CHECK_FAILED if failed else ExitCode.OK

    print(f"graph {program.name}")
    print()
    print("outputs")
    print("\n".join(fmt_named(outputs)))
    print()
    print(f"gradients of {program.plan.seed}")
    shown: dict = dict(grads)
    for name in program.plan.wrt:
        if name not in grads:
            shown[name] = "none (read only as labels)"
    print("\n".join(fmt_named(shown)))
    if results:
        print()
        print("expectations")
        path = program.ir.source.path
        for r in results:
            mark = "ok  " if r.ok else "FAIL"
            line = f"  {mark}  {path}:{r.expectation.span.line}  {r.expectation.describe()}"
            if not r.ok:
                got = fmt_array(r.actual) if r.actual is not None else ""
                line += f"  (got {got}; {r.detail})" if got else f"  ({r.detail})"
            print(line)
        print(f"{len(results) - len(failed)} of {len(results)} expectations hold")
    return ExitCode.CHECK_FAILED if failed else ExitCode.OK


def _choose_threads(program: Program, feeds: dict[str, np.ndarray], blas: BlasThreads) -> None:
    """--threads auto: the count at which a forward pass in eval mode (which draws
    no masks and updates no statistics) runs fastest, on the inputs as checked."""
    import numpy as np

    from graphc.threads import candidate_counts, choose_threads

    env = program._environment(feeds)  # the checks forward makes, and their errors
    forward = program.inference(tuple(program.outputs)).forward
    with np.errstate(all="ignore"):  # NaN and inf are forward's to report
        choose_threads(lambda: forward(dict(env)), candidate_counts(), blas)

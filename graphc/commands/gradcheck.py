"""Check backpropagation against numerical differentiation: the float64
central-difference gradient of every input and param against backprop's.
Prints the largest absolute and relative error per tensor; status 1 when any
exceeds the tolerance."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from graphc.commands.common import (
    add_feed_arguments,
    add_file_arguments,
    add_json_argument,
    add_mode_argument,
    load_program,
    positive_number,
    print_json,
)
from graphc.errors import ExitCode

if TYPE_CHECKING:
    from graphc.testing import GradCheck

# graphc.testing's defaults, spelled here so that building the parser does not
# import it (tests/test_startup.py checks that they agree).
DEFAULT_EPS = 1e-5
DEFAULT_RTOL = 1e-6

HELP = "compare backprop with numerical gradients, per tensor"


def _errors(r: GradCheck) -> tuple[str, str]:
    """The error columns; a gradient of the wrong shape has none (its line below says why)."""
    if r.problem is not None:
        return ("-", "-")
    if r.zero:  # a relative error of rounding noise says nothing
        return (f"{r.max_abs_error:.2e}", "- (zero)")
    return (f"{r.max_abs_error:.2e}", f"{r.max_rel_error:.2e}")


def _tensor_json(r: GradCheck) -> dict:
    row = {
        "name": r.name,
        "shape": list(r.shape),
        "max_abs_error": r.max_abs_error,
        "max_rel_error": r.max_rel_error,
        "ok": r.ok,
    }
    if r.problem is not None:
        row["problem"] = r.problem  # a gradient of the wrong shape: its errors are "nan"
    if r.zero:
        row["zero"] = True  # both gradients zero up to the differences' rounding
    return row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    add_feed_arguments(parser)
    add_mode_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--rtol", type=positive_number, default=DEFAULT_RTOL, help=f"relative tolerance (default {DEFAULT_RTOL:g})"
    )
    parser.add_argument(
        "--eps", type=positive_number, default=DEFAULT_EPS, help=f"finite-difference step (default {DEFAULT_EPS:g})"
    )


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from graphc.testing import check_grads

    program, feeds = load_program(args, dtype="float64")
    rows = check_grads(program, feeds, eps=args.eps, rtol=args.rtol)
    failed = [r for r in rows if not r.ok]
    if args.json:
        print_json(
            {
                "graph": program.name,
                "rtol": args.rtol,
                "eps": args.eps,
                "ok": not failed,
                "tensors": [_tensor_json(r) for r in rows],
            }
        )
        return ExitCode.CHECK_FAILED if failed else ExitCode.OK
    table = tabulate(
        [(r.name, str(list(r.shape)), *_errors(r), "ok" if r.ok else "FAIL") for r in rows],
        headers=("tensor", "shape", "max abs error", "max rel error", ""),
    )
    print(f"graph {program.name}: backprop vs central differences (eps {args.eps:g}, float64)")
    print()
    print(table)
    print()
    for r in rows:
        if r.problem is not None:
            print(f"FAIL: {r.problem}")
    exceeded = [r for r in failed if r.problem is None]
    if exceeded:
        print(
            f"FAIL: {len(exceeded)} of {len(rows)} tensors exceed relative error {args.rtol:g}: "
            + ", ".join(r.name for r in exceeded)
        )
    if failed:
        return ExitCode.CHECK_FAILED
    print(f"ok: {len(rows)} tensor{'s' * (len(rows) != 1)} within relative error {args.rtol:g}")
    return ExitCode.OK

"""Parse, check and infer shapes; print a summary of each graph: its values,
their shapes and dtypes, and how many parameters each node holds."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from graphc._gc import gc_paused
from graphc.commands.common import add_json_argument, load_graphs, print_json
from graphc.errors import ExitCode, GraphcError

if TYPE_CHECKING:
    from graphc.compiler import CompiledGraph
    from graphc.ir import OpNode

HELP = "parse, check and infer shapes; print a summary table (--json: and every diagnostic, for editors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a .graph file")
    add_json_argument(parser)


@gc_paused  # the summary too, as the compiler's stages: a row per value, no reference cycles
def run(args: argparse.Namespace) -> int:
    if args.json:
        return _run_json(args)
    graphs = load_graphs(args)
    for graph in graphs:
        print(summary_text(graph))
        print()
    warnings = sum(len(g.warnings) for g in graphs)
    print(f"{args.file}: ok, {len(graphs)} graph{'s' * (len(graphs) != 1)}, {warnings} warning{'s' * (warnings != 1)}")
    return ExitCode.OK


def _run_json(args: argparse.Namespace) -> int:
    """One JSON document on stdout, with every diagnostic (code, place, message,
    hints): status 2 when there are errors, as without --json."""
    from graphc.compiler import front_end_file

    try:
        graphs = front_end_file(args.file)
    except GraphcError as err:
        diagnostics = [d.as_json() for d in err.diagnostics]
        print_json({"file": args.file, "ok": False, "diagnostics": diagnostics})
        return ExitCode.USER_ERROR
    warnings = [d for g in graphs for d in g.warnings]
    print_json(
        {
            "file": args.file,
            "ok": True,
            "diagnostics": [d.as_json() for d in warnings],
            "graphs": [summary(g) for g in graphs],
            "warnings": [d.render() for d in warnings],
        }
    )
    return ExitCode.OK


def _params_of(graph: CompiledGraph, node: OpNode) -> list[str]:
    from graphc.ir import ParamDecl

    return [a for a in node.args if isinstance(graph.ir.decls.get(a), ParamDecl)]


def _count(graph: CompiledGraph, name: str) -> int:
    size = graph.types[name].size()
    assert size is not None  # params have concrete shapes
    return size


def _nbytes(graph: CompiledGraph, name: str) -> int:
    from graphc.ir import DTYPES

    dtype = graph.types[name].dtype
    assert dtype is not None  # params have a dtype once elaborated
    return _count(graph, name) * DTYPES[dtype].itemsize


def value_rows(graph: CompiledGraph) -> list[dict]:
    """The values the summary lists, for the table and the JSON alike: inputs,
    declared consts and nodes in order. Params show as what each node holds;
    a literal argument is shown where it is written."""
    from graphc.ir import ConstDecl, InputDecl, OpNode, ParamDecl

    rows = []
    for name in graph.checked.order:
        decl = graph.ir.decls[name]
        if isinstance(decl, ParamDecl) or (isinstance(decl, ConstDecl) and decl.literal):
            continue
        params = _params_of(graph, decl) if isinstance(decl, OpNode) else []
        rows.append(
            {
                "name": name,
                "kind": decl.op.name
                if isinstance(decl, OpNode)
                else "input"
                if isinstance(decl, InputDecl)
                else "const",
                "shape": list(graph.types[name].shape),
                "dtype": graph.types[name].dtype or "f64",
                "params": params,
                "param_count": sum(_count(graph, p) for p in params),
            }
        )
    return rows


def summary(graph: CompiledGraph) -> dict:
    params = graph.ir.params()
    return {
        "graph": graph.name,
        "values": value_rows(graph),
        "params": {
            p.name: {
                "shape": list(graph.types[p.name].shape),
                "dtype": graph.types[p.name].dtype,
                "init": p.init.describe(),
            }
            for p in params
        },
        "param_count": sum(_count(graph, p.name) for p in params),
        "outputs": [n for n, _ in graph.ir.outputs],
        "inputs": {d.name: {"type": str(graph.types[d.name]), "role": d.role} for d in graph.ir.inputs()},
    } | _state_summary(graph)


def _state_summary(graph: CompiledGraph) -> dict:
    """The ops' state (batchnorm's running statistics), where a graph keeps any: not params, never trained."""
    from graphc.shapes import state_types

    state = state_types(graph.checked, graph.types)
    if not state:
        return {}
    return {"state": {name: {"shape": list(t.shape), "dtype": t.dtype} for name, t in state.items()}}


def summary_text(graph: CompiledGraph) -> str:
    from graphc.ir import DTYPES, InputDecl
    from graphc.shapes import state_types

    rows = []
    for row in value_rows(graph):
        decl = graph.ir.decls[row["name"]]
        kind = row["kind"] + (f" from {decl.role}" if isinstance(decl, InputDecl) and decl.role else "")
        held = f"{row['param_count']:,} ({', '.join(row['params'])})" if row["params"] else ""
        rows.append((row["name"], kind, graph.types[row["name"]].shape_text(), row["dtype"], held))
    table = text_table(rows, headers=("value", "op", "shape", "dtype", "params"))
    params = graph.ir.params()
    total = sum(_count(graph, p.name) for p in params)
    nbytes = sum(_nbytes(graph, p.name) for p in params)
    lines = [f"graph {graph.name}", "", table, ""]
    lines.append(f"params: {len(params)} tensor{'s' * (len(params) != 1)}, {total:,} numbers ({_bytes(nbytes)})")
    state = state_types(graph.checked, graph.types)
    if state:
        count = sum(t.size() or 0 for t in state.values())
        size = sum((t.size() or 0) * DTYPES[t.dtype or "f64"].itemsize for t in state.values())
        lines.append(
            f"state (not trained): {len(state)} tensor{'s' * (len(state) != 1)}, {count:,} numbers ({_bytes(size)}): "
            + ", ".join(f"{name} {t}" for name, t in state.items())
        )
    lines.append(f"outputs: {', '.join(n for n, _ in graph.ir.outputs)}")
    return "\n".join(lines)


def text_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """The table tabulate's "simple" format prints, byte for byte, in a fraction
    of its time: tabulate tries every cell as a number, which on a graph of
    100,000 values took longer than compiling it. A column of nothing but
    numbers (a value named `nan` or `inf`) is right-aligned, as tabulate does."""
    lines: list[list[str]] = [[] for _ in range(len(rows) + 2)]
    for header, *cells in zip(headers, *rows):
        numeric = bool(cells) and all(_is_number(cell) for cell in cells)
        if numeric:
            cells = [format(float(cell), "g") for cell in cells]
        width = max([len(header) + 2, *(len(cell) for cell in cells)])
        align = str.rjust if numeric else str.ljust
        lines[0].append(align(header, width))
        lines[1].append("-" * width)
        for line, cell in zip(lines[2:], cells):
            line.append(align(cell, width))
    return "\n".join("  ".join(line).rstrip() for line in lines)


def _is_number(text: str) -> bool:
    """As tabulate decides it: what float() reads, except spellings of inf and nan other than those."""
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) or text.lower() in ("inf", "-inf", "nan")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GiB"

"""Parse, check and infer shapes; print a summary of each graph: its values,
their shapes and dtypes, and how many parameters each node holds."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from graphc.commands.common import add_json_argument, load_graphs, print_json
from graphc.compiler import CompiledGraph
from graphc.ir import DTYPES, InputDecl, OpNode, ParamDecl

HELP = "parse, check and infer shapes; print a summary table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a .graph file")
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    graphs = load_graphs(args)
    if args.json:
        print_json({"file": args.file, "ok": True, "graphs": [summary(g) for g in graphs],
                    "warnings": [d.render() for g in graphs for d in g.warnings]})
        return 0
    for graph in graphs:
        print(summary_text(graph))
        print()
    warnings = sum(len(g.warnings) for g in graphs)
    print(f"{args.file}: ok, {len(graphs)} graph{'s' * (len(graphs) != 1)}, "
          f"{warnings} warning{'s' * (warnings != 1)}")
    return 0


def _params_of(graph: CompiledGraph, node: OpNode) -> list[str]:
    return [a for a in node.args if isinstance(graph.ir.decls.get(a), ParamDecl)]


def _count(graph: CompiledGraph, name: str) -> int:
    size = graph.types[name].size()
    assert size is not None  # params have concrete shapes
    return size


def summary(graph: CompiledGraph) -> dict:
    rows = []
    for name in graph.checked.order:
        decl = graph.ir.decls[name]
        if isinstance(decl, ParamDecl):
            continue
        kind = decl.op.name if isinstance(decl, OpNode) else type(decl).__name__.removesuffix("Decl").lower()
        params = _params_of(graph, decl) if isinstance(decl, OpNode) else []
        rows.append({
            "name": name, "kind": kind, "shape": list(graph.types[name].shape),
            "dtype": graph.types[name].dtype or "f64",
            "params": params, "param_count": sum(_count(graph, p) for p in params),
        })
    params = [d.name for d in graph.ir.params()]
    return {
        "graph": graph.name, "values": rows,
        "params": {p: {"shape": list(graph.types[p].shape), "dtype": graph.types[p].dtype, "init": graph.ir.decls[p].init.describe()} for p in params},
        "param_count": sum(_count(graph, p) for p in params),
        "outputs": [n for n, _ in graph.ir.outputs],
        "inputs": {d.name: {"type": str(graph.types[d.name]), "role": d.role} for d in graph.ir.inputs()},
    }


def summary_text(graph: CompiledGraph) -> str:
    rows = []
    for name in graph.checked.order:
        decl = graph.ir.decls[name]
        t = graph.types[name]
        if isinstance(decl, ParamDecl):
            continue
        if isinstance(decl, OpNode):
            params = _params_of(graph, decl)
            count = sum(_count(graph, p) for p in params)
            held = f"{count:,} ({', '.join(params)})" if params else ""
            rows.append((name, decl.op.name, t.shape_text(), t.dtype or "f64", held))
        elif isinstance(decl, InputDecl):
            role = f" from {decl.role}" if decl.role else ""
            rows.append((name, "input" + role, t.shape_text(), t.dtype, ""))
        elif decl.span is decl.stmt_span:
            continue  # a literal argument
        else:
            rows.append((name, "const", t.shape_text(), t.dtype or "f64", ""))
    table = tabulate(rows, headers=("value", "op", "shape", "dtype", "params"), tablefmt="simple")
    params = graph.ir.params()
    total = sum(_count(graph, p.name) for p in params)
    nbytes = sum(_count(graph, p.name) * DTYPES[graph.types[p.name].dtype].itemsize for p in params)
    lines = [f"graph {graph.name}", "", table, ""]
    lines.append(f"params: {len(params)} tensor{'s' * (len(params) != 1)}, {total:,} numbers ({_bytes(nbytes)})")
    lines.append(f"outputs: {', '.join(n for n, _ in graph.ir.outputs)}")
    return "\n".join(lines)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"

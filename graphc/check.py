"""Stage 4: the checks a graph must pass before shapes and plans.

Errors: undefined names, cycles, missing or undefined outputs, expectations
about undefined values, two inputs claiming the same data role. Warnings:
values nothing reads, and params that cannot reach the (first) output.
All errors are reported together, in source order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import networkx as nx

from graphc import limits
from graphc._gc import gc_paused
from graphc.errors import Diagnostic, GraphcError, did_you_mean
from graphc.graph import build_graph
from graphc.ir import ConstDecl, GraphIR, InputDecl, OpNode, ParamDecl


@dataclass(frozen=True, eq=False)
class CheckedGraph:
    """A graph that passed the checks: its networkx graph, a topological order and the warnings."""

    ir: GraphIR
    graph: nx.MultiDiGraph
    order: tuple[str, ...]  # topological, ties broken by source order
    warnings: tuple[Diagnostic, ...]

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def output(self) -> str:
        """The output backward is seeded at: the first one declared."""
        return self.ir.outputs[0][0]

    def ancestors(self, *names: str) -> set[str]:
        """Every value the `names` depend on (themselves not included)."""
        return ancestors(self.ir, self.order, names)

    def readers(self, name: str) -> list[tuple[str, int]]:
        """(node, argument position) for every read of `name`."""
        return [(node, position) for _, node, position in self.graph.out_edges(name, keys=True)]

    def read_as_labels(self, name: str) -> bool:
        """Whether every read of `name` is as a label operand (Op.labels): it never gets a gradient."""
        uses = self.readers(name)
        return bool(uses) and all(k in _op(self.ir, v).op.label_positions() for v, k in uses)

    @functools.cached_property
    def label_inputs(self) -> frozenset[str]:
        """Inputs read only as labels: class indices are welcome there."""
        return frozenset(decl.name for decl in self.ir.inputs() if self.read_as_labels(decl.name))

    def scores(self, loss: str) -> str | None:
        """The scores the loss `loss` reads (Op.scores), whose argmax is the prediction; None if it is no loss."""
        node = self.ir.decls.get(loss)
        if isinstance(node, OpNode) and node.op.scores is not None:
            return node.args[node.op.operands.index(node.op.scores)]
        return None


@gc_paused
def check(ir: GraphIR) -> CheckedGraph:
    graph = build_graph(ir)
    errors = _undefined_names(ir, graph) + _outputs(ir) + _roles(ir)
    order = _source_order_if_sorted(ir) if not errors else None
    if order is None:
        # The order, when there is one, doubles as the test for cycles; an
        # undefined name (no position of its own) sorts last.
        try:
            order = tuple(nx.lexicographical_topological_sort(graph, key=lambda n: ir.order.get(n, len(ir.order))))
        except nx.NetworkXUnfeasible:
            cycle = _cycle(ir, graph)
            if cycle:
                errors.append(cycle)
    if errors or order is None:
        raise GraphcError(code=None, diagnostics=sorted(errors, key=_position))
    return CheckedGraph(ir, graph, order, tuple(_warnings(ir, order)))


def _op(ir: GraphIR, name: str) -> OpNode:
    node = ir.decls[name]
    assert isinstance(node, OpNode), name  # only op nodes read values
    return node


def _source_order_if_sorted(ir: GraphIR) -> tuple[str, ...] | None:
    """The values in source order, when every node comes after all it reads
    (as files are usually written): then that order is the topological order,
    ties broken by source order, that sorting would give, and there is no
    cycle. None otherwise, for networkx to sort. One pass over the operands,
    a tenth of the sort's time on large graphs."""
    position = ir.order
    for node in ir.nodes():
        here = position[node.name]
        if any(position.get(arg, here) >= here for arg in node.args):
            return None
    return tuple(ir.decls)  # in source order


def _position(d: Diagnostic) -> tuple[int, int]:
    return (d.span.line, d.span.column) if d.span else (0, 0)


def _undefined_names(ir: GraphIR, graph: nx.MultiDiGraph) -> list[Diagnostic]:
    errors: list[Diagnostic] = []
    for name, decl in graph.nodes(data="decl"):
        if decl is not None:
            continue
        for _, _, span in graph.out_edges(name, data="span"):
            # A hint compares the name with every value: only for errors that are shown.
            hint = did_you_mean(name, ir.decls) if len(errors) < limits.MAX_ERRORS else None
            errors.append(Diagnostic(f"undefined name `{name}`", span, hint, code="E101"))
    for name, span in ir.outputs:
        if name not in ir.decls:
            errors.append(
                Diagnostic(f"output `{name}` is not defined", span, did_you_mean(name, ir.decls), code="E101")
            )
    for expect in ir.expects:
        if expect.target not in ir.decls:
            errors.append(
                Diagnostic(
                    f"undefined name `{expect.target}`",
                    expect.target_span,
                    did_you_mean(expect.target, ir.decls),
                    code="E101",
                )
            )
    return errors


def _outputs(ir: GraphIR) -> list[Diagnostic]:
    if ir.outputs:
        return []
    return [
        Diagnostic(
            f"graph `{ir.name}` has no output",
            ir.span,
            "add `output NAME` for the value to compute; backward starts from the first output",
            code="E302",
        )
    ]


def _roles(ir: GraphIR) -> list[Diagnostic]:
    errors: list[Diagnostic] = []
    seen: dict[str, str] = {}
    for decl in ir.inputs():
        if decl.role is None:
            continue
        if decl.role in seen:
            errors.append(
                Diagnostic(
                    f"two inputs are fed `from {decl.role}`: `{seen[decl.role]}` and `{decl.name}`",
                    decl.role_span,
                    code="E303",
                )
            )
        seen[decl.role] = decl.name
    return errors


def _cycle(ir: GraphIR, graph: nx.MultiDiGraph) -> Diagnostic | None:
    try:
        edges = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return None
    path = [u for u, *_ in edges]
    start = min(range(len(path)), key=lambda i: ir.order[path[i]])
    path = path[start:] + path[:start]
    lines = [ir.decls[name].stmt_span for name in path]
    text = " -> ".join(f"`{name}`" for name in path + path[:1])
    return Diagnostic(
        f"cycle: {text}",
        lines[0],
        "a value cannot depend on itself; break the loop by reading an input or param instead",
        related=tuple(lines[1:]),
        code="E301",
    )


def _warnings(ir: GraphIR, order: tuple[str, ...]) -> list[Diagnostic]:
    warnings = []
    outputs = {name for name, _ in ir.outputs}
    expected = {e.target for e in ir.expects}
    read = {arg for node in ir.nodes() for arg in node.args}
    reaching = ancestors(ir, order, (ir.outputs[0][0],)) | {ir.outputs[0][0]}
    for name, decl in ir.decls.items():
        if name not in read and name not in outputs and name not in expected:
            if isinstance(decl, ConstDecl) and decl.literal:
                continue  # a literal argument; it is read where it is written
            kind = _kind(decl)
            warnings.append(
                Diagnostic(
                    f"unused {kind} `{name}`",
                    decl.span,
                    "nothing reads it and it is not an output" if kind == "node" else None,
                    severity="warning",
                    code="W001",
                )
            )
        elif isinstance(decl, ParamDecl) and name not in reaching:
            output = ir.outputs[0][0]
            warnings.append(
                Diagnostic(
                    f"param `{name}` does not reach the output `{output}`; it gets no gradient",
                    decl.span,
                    severity="warning",
                    code="W002",
                )
            )
    return warnings


def ancestors(ir: GraphIR, order: tuple[str, ...], names: tuple[str, ...]) -> set[str]:
    """Every value the `names` depend on, themselves not included: one walk
    back through the topological `order`, in which every node comes after its
    operands (plain lists, not a networkx search: it runs on every compile)."""
    found: set[str] = set()
    wanted = set(names)
    for name in reversed(order):
        decl = ir.decls[name]
        if (name in wanted or name in found) and isinstance(decl, OpNode):
            found.update(decl.args)
    return found


def _kind(decl) -> str:
    if isinstance(decl, InputDecl):
        return "input"
    if isinstance(decl, ParamDecl):
        return "param"
    if isinstance(decl, ConstDecl):
        return "const"
    assert isinstance(decl, OpNode)
    return "node"

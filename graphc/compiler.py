"""The front end in one call: text -> parsed -> elaborated -> checked -> typed.

Each stage is its own module; this one only chains them and collects the
errors of every graph in a file, so a person sees them all at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graphc import ast
from graphc._gc import gc_paused
from graphc.check import CheckedGraph, check
from graphc.elaborate import elaborate
from graphc.errors import Diagnostic, GraphcError, did_you_mean
from graphc.ir import GraphIR, TensorType
from graphc.parse import parse, parse_file
from graphc.shapes import infer_shapes


@dataclass(frozen=True, eq=False)
class CompiledGraph:
    """A checked graph with the type of every value."""

    checked: CheckedGraph
    types: dict[str, TensorType]

    @property
    def name(self) -> str:
        return self.checked.name

    @property
    def ir(self) -> GraphIR:
        return self.checked.ir

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return self.checked.warnings


def compile_module(module: ast.Module) -> list[CompiledGraph]:
    graphs: list[CompiledGraph] = []
    errors: list[Diagnostic] = []
    for ir in elaborate(module):
        try:
            checked = check(ir)
            graphs.append(CompiledGraph(checked, infer_shapes(checked)))
        except GraphcError as err:
            errors.extend(err.diagnostics)
    if errors:
        raise GraphcError(code=None, diagnostics=errors)
    return graphs


@gc_paused
def front_end(text: str, path: str = "<string>") -> list[CompiledGraph]:
    return compile_module(parse(text, path))


@gc_paused
def front_end_file(path: str | Path) -> list[CompiledGraph]:
    return compile_module(parse_file(path))


# A file of blocks alone compiles (`graphc check` checks its blocks) but has nothing to run.
NO_GRAPH = "no graph to run: the file holds only blocks"
NO_GRAPH_HINT = (
    'a file of blocks is for `import "FILE"` in a file with a graph; `graphc check` checks how its blocks are defined'
)


def select(graphs: list[CompiledGraph], name: str | None) -> CompiledGraph:
    """The graph called `name`, or the file's first graph."""
    if not graphs:
        raise GraphcError(NO_GRAPH, hint=NO_GRAPH_HINT, code="E113")
    if name is None:
        return graphs[0]
    for graph in graphs:
        if graph.name == name:
            return graph
    names = [g.name for g in graphs]
    hint = did_you_mean(name, names) or "graphs in this file: " + ", ".join(f"`{n}`" for n in names)
    raise GraphcError(f"no graph named `{name}`", hint=hint, where=str(graphs[0].ir.source.path), code="E114")

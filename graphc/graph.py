"""Stage 3: flat IR -> networkx graph.

Nodes are keyed by value name and carry their declaration as `decl`; an edge
u -> v means v reads u, keyed by the argument position (operand order matters
for affine and softmax_loss, and mul(x, x) has two edges). A name that is read
but never defined becomes a node without `decl`, for the checker to report.
"""

from __future__ import annotations

import networkx as nx

from graphc.ir import GraphIR


def build_graph(ir: GraphIR) -> nx.MultiDiGraph:
    graph = nx.MultiDiGraph(name=ir.name)
    for name, decl in ir.decls.items():
        graph.add_node(name, decl=decl)
    for node in ir.nodes():
        for position, (arg, span) in enumerate(zip(node.args, node.arg_spans)):
            graph.add_edge(arg, node.name, key=position, position=position, span=span)
    return graph

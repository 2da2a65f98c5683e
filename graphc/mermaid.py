"""Diagrams as Mermaid flowcharts, which GitHub, GitLab and Jupyter draw from
text in Markdown with no Graphviz anywhere.

Every label is a quoted string with Mermaid's entity codes (`#quot;`) for the
characters it would otherwise read as syntax or HTML; node ids are the
diagram's own (n0, n1, ...), never names.
"""

from __future__ import annotations

from graphc.draw import Diagram, Edge, Node

# Characters a quoted Mermaid label cannot hold as they are: the quote, `#`
# (which starts an entity code), HTML's `<>&`, and the backtick (which starts
# a Markdown string).
_ENTITIES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "`": "#96;"}

# Node shapes: (open, close) around the quoted label.
_SHAPES = {
    "input": ('["', '"]'),
    "param": ('["', '"]'),
    "const": ('["', '"]'),
    "op": ('(("', '"))'),
    "output": ('>"', '"]'),
    "grad": ('("', '")'),
    "step": ('{{"', '"}}'),
    "read": ('["', '"]'),
    "block": ('[["', '"]]'),
}

_CLASSES = {
    "input": "fill:#ffffff,stroke:#333333",
    "param": "fill:#fcefc7,stroke:#a0781c",
    "const": "fill:#ffffff,stroke:#9a9a9a,stroke-dasharray:4 3,color:#6b6b6b",
    "op": "fill:#e8eff8,stroke:#3d5a80",
    "output": "fill:#ffffff,stroke:#ffffff,color:#6b6b6b",
    "grad": "fill:#ffffff,stroke:#c0392b,color:#c0392b",
    "step": "fill:#e8eff8,stroke:#3d5a80",
    "read": "fill:#ffffff,stroke:#9a9a9a,stroke-dasharray:4 3,color:#6b6b6b",
    "block": "fill:#e8eff8,stroke:#3d5a80",
}


def mermaid_text(text: str) -> str:
    """Text for inside a quoted Mermaid label."""
    text = "".join(_ENTITIES.get(c, c) for c in text)
    return " ".join(text.splitlines())


def _label(lines: list[str]) -> str:
    return "<br/>".join(mermaid_text(line) for line in lines if line)


def _node_lines(node: Node) -> list[str]:
    if node.kind == "output":
        lines = ["output"]
    elif node.kind in ("op", "step"):
        lines = [node.op, node.detail, node.name + (" backward" if node.kind == "step" else "")]
    elif node.kind == "grad":
        lines = [node.name]
    else:
        lines = [node.name, node.note]
    if node.value is not None:
        lines.append(node.value)
    if node.grad is not None:
        flag = "⚠ " if node.flagged else ""
        lines.append(f"{flag}{node.grad}" if node.kind == "grad" else f"{flag}grad {node.grad}")
    return lines


def _edge_lines(edge: Edge) -> list[str]:
    lines = [edge.type]
    if edge.value is not None:
        lines.append(edge.value)
    if edge.rule is not None:
        lines.append(edge.rule)
    if edge.grad is not None:
        lines.append(("⚠ " if edge.flagged else "") + "grad " + edge.grad)
    return lines


def _nodes(diagram: Diagram, cluster: str | None, indent: str) -> list[str]:
    """The nodes directly in `cluster` (None: outside every block use), then its clusters as subgraphs."""
    if cluster is None:
        inside = {node_id for c in diagram.clusters for node_id in c.nodes}
        members = {n.id for n in diagram.nodes} - inside
    else:
        members = set(next(c.nodes for c in diagram.clusters if c.id == cluster))
    lines = []
    for node in diagram.nodes:
        if node.id in members:
            open_, close = _SHAPES[node.kind]
            lines.append(f"{indent}{node.id}{open_}{_label(_node_lines(node))}{close}")
    for child in diagram.clusters:
        if child.parent == cluster:
            lines.append(f'{indent}subgraph {child.id} ["{mermaid_text(child.label)}"]')
            lines += _nodes(diagram, child.id, indent + "    ")
            lines.append(f"{indent}end")
    return lines


def to_mermaid(diagram: Diagram, rankdir: str = "LR") -> str:
    """The diagram as a Mermaid flowchart: nodes, then edges, then styles."""
    lines = [f"flowchart {rankdir}", f"    %% {mermaid_text(diagram.title)}"]
    lines += _nodes(diagram, None, "    ")
    for edge in diagram.edges:
        arrow = "-.->" if edge.dashed else "-->"
        label = _label(_edge_lines(edge))
        lines.append(
            f'    {edge.tail} {arrow}|"{label}"| {edge.head}' if label else f"    {edge.tail} {arrow} {edge.head}"
        )
    kinds = dict.fromkeys(node.kind for node in diagram.nodes)
    for kind in kinds:
        lines.append(f"    classDef {kind} {_CLASSES[kind]}")
    for kind in kinds:
        lines.append(f"    class {','.join(n.id for n in diagram.nodes if n.kind == kind)} {kind}")
    return "\n".join(lines) + "\n"

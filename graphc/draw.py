"""Diagrams of graphs and of their backward plans: DOT, Mermaid, SVG, PNG, PDF.

Two steps, like the compiler's: a builder turns a checked graph (or a backward
plan), with the values and gradients of a run if there are any, into a
`Diagram` -- plain nodes and edges holding the text to show -- and a renderer
writes the Diagram as DOT (here) or Mermaid (graphc.mermaid). Only SVG, PNG
and PDF need Graphviz, and it is imported only when one is asked for.

The drawing follows the textbook's figures: left to right, inputs as boxes,
params filled, consts dashed, each op an ellipse showing the op and the value
it computes. An edge carries its tensor's type (so a convolution's edges
show each feature map's shape), the value above it and the gradient below it
in red; a terminal after each output carries the output's value and the seed
gradient 1. A window op (conv2d, max_pool: any op declaring a `stride`) also
shows its window and stride, as the book describes its layers.
"""

from __future__ import annotations

import html
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.compiler import CompiledGraph
from graphc.errors import GraphcError
from graphc.figures import rounding_error, stable_number
from graphc.ir import ConstDecl, InputDecl, Instance, OpNode, ParamDecl, TensorType
from graphc.plan import Plan

if TYPE_CHECKING:
    from graphc.program import Program

# Output extension -> format. DOT and Mermaid are text graphc writes itself.
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".mmd": "mmd"}

# --- the diagram: what to show, before any syntax -----------------------------


@dataclass(frozen=True)
class Node:
    """A box or ellipse. kind is input, param, const, op or output (forward
    diagrams), or grad, step or read (backward-plan diagrams)."""

    id: str  # a safe identifier (n0, out0, g1); the name is only ever a label
    kind: str
    name: str
    op: str = ""  # op nodes and backward steps: the op's symbol or name
    note: str = ""  # a small second line: `input from images`, `param`
    detail: str = ""  # op nodes: what configures a window op (`30 filters 5×5, stride 1`)
    value: str | None = None  # backward diagrams: the value a node holds
    grad: str | None = None  # a gradient shown on the node (fan-out totals, gradient nodes)
    flagged: bool = False  # that gradient or value has NaN or inf


@dataclass(frozen=True)
class Edge:
    tail: str
    head: str
    type: str = ""  # the tensor's dtype and shape, "" for a scalar
    value: str | None = None  # written above the edge
    grad: str | None = None  # written below it, in red
    flagged: bool = False  # the gradient has NaN or inf
    rule: str | None = None  # backward diagrams: the local rule along this edge
    dashed: bool = False  # backward diagrams: a forward value a rule reads


@dataclass(frozen=True)
class Cluster:
    """A box around the nodes of one block instance (`h1: dense`), nested as the uses are."""

    id: str  # cluster0, cluster1, ...: DOT draws subgraphs named cluster* as boxes
    label: str
    parent: str | None
    nodes: tuple[str, ...]  # the ids of the nodes directly inside


@dataclass(frozen=True)
class Diagram:
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...] = ()


# --- numbers as short text ----------------------------------------------------


def number_text(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"


def value_text(value: Any, shape: bool = True) -> tuple[str, bool]:
    """(text, flagged): a scalar as a number, up to 4 numbers in full, a larger
    array as its shape (unless shape is False: a gradient has its value's),
    mean and norm; flagged when any entry is NaN or inf. Every figure to the
    digits rounding leaves alone (graphc.figures), so a diagram is the same
    whatever BLAS computed its values."""
    array = np.asarray(value)
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    error = rounding_error(array.dtype)
    if array.ndim == 0:
        x = float(array)
        return _figure(x, error * abs(x), LABEL_DIGITS), not math.isfinite(x)
    finite = np.isfinite(array) if array.dtype.kind in "fc" else np.ones(array.shape, bool)
    flagged = not bool(finite.all())
    good = array[finite].astype(np.float64)
    largest = float(np.max(np.abs(good))) if good.size else 0.0
    if array.size <= 4:
        every: Any = {
            "all": lambda v: _figure(float(v), error * largest, LABEL_DIGITS)
        }  # numpy's stubs want a TypedDict
        text = np.array2string(array, separator=", ", max_line_width=1 << 16, formatter=every)
        return " ".join(text.split()), flagged
    mean = _figure(float(good.mean()), error * largest, SUMMARY_DIGITS) if good.size else "NaN"
    norm_value = float(np.linalg.norm(good)) if good.size else math.nan
    norm = _figure(norm_value, error * norm_value, SUMMARY_DIGITS)
    text = (f"{list(array.shape)} " if shape else "") + f"mean {mean}, norm {norm}"
    if flagged:
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        text += "".join(f", {n} {what}" for n, what in ((nan, "NaN"), (inf, "inf")) if n)
    return text, flagged


LABEL_DIGITS = 6  # a number on an edge
SUMMARY_DIGITS = 3  # the mean and norm of a large array on an edge


def _figure(x: float, uncertainty: float, digits: int) -> str:
    return number_text(x) if not math.isfinite(x) else stable_number(x, uncertainty, digits)


def _type_text(t: TensorType | None) -> str:
    return str(t) if t is not None and t.shape else ""


# --- builders -----------------------------------------------------------------


def graph_diagram(
    compiled: CompiledGraph,
    *,
    types: Mapping[str, TensorType] | None = None,
    values: Mapping[str, Any] | None = None,
    gradients: Mapping[str, Any] | None = None,
    edge_gradients: Mapping[tuple[str, int], Any] | None = None,
    collapse: bool = False,
) -> Diagram:
    """The graph as the book draws it.

    values and gradients are by value name (Program.values, Program.gradients);
    edge_gradients by (reader, argument position), each read's own share of its
    value's gradient. A value read more than once shows its total gradient on
    its node as well, so the sum over its edges is visible.

    Each use of a block is a cluster around its values, labelled `h1: dense`;
    with collapse, each outermost use is one box instead, and only the edges
    into and out of it are drawn.
    """
    types = compiled.types if types is None else types
    values = values or {}
    gradients = gradients or {}
    edge_gradients = edge_gradients or {}
    decls = compiled.ir.decls
    order = compiled.checked.order
    ids = {name: f"n{i}" for i, name in enumerate(order)}
    boxes = _collapsed(compiled) if collapse else {}
    ids.update({name: box for name, (box, _) in boxes.items()})
    reads: dict[str, int] = {}
    for name in order:
        decl = decls[name]
        if isinstance(decl, OpNode):
            for arg in decl.args:
                reads[arg] = reads.get(arg, 0) + 1

    nodes: list[Node] = []
    placed: set[str] = set()
    for name in order:
        decl = decls[name]
        if name in boxes:
            box, instance = boxes[name]
            if box not in placed:  # where its first value would be
                placed.add(box)
                nodes.append(Node(box, "block", instance.name, note=instance.block))
            continue
        grad, flagged = None, False
        if reads.get(name, 0) > 1 and name in gradients:
            grad, flagged = value_text(gradients[name], shape=False)
        if isinstance(decl, OpNode):
            symbol = decl.op.symbol or decl.op.name
            detail = window_text(decl, [types.get(arg) for arg in decl.args])
            nodes.append(Node(ids[name], "op", name, op=symbol, detail=detail, grad=grad, flagged=flagged))
        else:
            kind, note = _leaf_kind(decl)
            nodes.append(Node(ids[name], kind, name, note=note, grad=grad, flagged=flagged))

    edges: list[Edge] = []
    drawn: set[tuple[str, str]] = set()  # a box's inner edges are not drawn, nor one read twice
    for name in order:
        decl = decls[name]
        if isinstance(decl, OpNode):
            for position, arg in enumerate(decl.args):
                tail, head = ids[arg], ids[name]
                if (arg in boxes or name in boxes) and (tail == head or (tail, head) in drawn):
                    continue
                drawn.add((tail, head))
                share = edge_gradients.get((name, position))
                edges.append(_edge(tail, head, types.get(arg), values.get(arg), share))
    outputs = [name for name, _ in compiled.ir.outputs]
    for k, name in enumerate(outputs):
        nodes.append(Node(f"out{k}", "output", name))
        # Only the first output seeds backward; its terminal shows the seed 1.
        grad = gradients.get(name) if k == 0 else None
        edges.append(_edge(ids[name], f"out{k}", types.get(name), values.get(name), grad))
    clusters = () if collapse else _clusters(compiled, ids)
    return Diagram(compiled.name, tuple(nodes), tuple(edges), clusters)


def window_text(node: OpNode, operand_types: Sequence[TensorType | None]) -> str:
    """What configures a window op, from its declared attributes and operand
    shapes: the window -- `30 filters 5×5` from filters [FN, C, FH, FW] it
    reads as weights, else `2×2` from its `size` -- then each other attribute
    as `stride 1`, leaving out a padding of 0, which adds nothing. "" for an
    op without a `stride` (it slides no window)."""
    op = node.op
    if "stride" not in op.attributes:
        return ""
    filters = [
        t.shape
        for operand, t in zip(op.operands, operand_types)
        if operand in op.weights and t is not None and t.ndim == 4
    ]
    parts = []
    if filters:
        fn, _, fh, fw = filters[0]
        parts.append(f"{fn} filter{'s' * (fn != 1)} {fh}×{fw}")
    elif "size" in op.attributes:
        parts.append(f"{node.attrs['size']}×{node.attrs['size']}")
    for key in op.attributes:
        value = node.attrs.get(key)
        if key != "size" and value is not None and not (key == "pad" and value == 0):
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def _outermost(compiled: CompiledGraph, name: str) -> Instance | None:
    """The outermost block use the value `name` was made in, if any."""
    instances = compiled.ir.instances
    owner = compiled.ir.owners.get(name)
    if owner is None:
        return None
    instance = instances[owner]
    while instance.parent is not None:
        instance = instances[instance.parent]
    return instance


def _collapsed(compiled: CompiledGraph) -> dict[str, tuple[str, Instance]]:
    """Each value made in a block use -> the box of its outermost use (id b0, b1, ...) and that use."""
    boxes: dict[str, str] = {}
    found: dict[str, tuple[str, Instance]] = {}
    for name in compiled.checked.order:
        instance = _outermost(compiled, name)
        if instance is not None:
            box = boxes.setdefault(instance.name, f"b{len(boxes)}")
            found[name] = (box, instance)
    return found


def _clusters(compiled: CompiledGraph, ids: Mapping[str, str]) -> tuple[Cluster, ...]:
    """A cluster for each block use, holding the values made directly in it."""
    instances = compiled.ir.instances
    cluster_ids = {name: f"cluster{i}" for i, name in enumerate(instances)}
    members: dict[str, list[str]] = {name: [] for name in instances}
    for name in compiled.checked.order:
        owner = compiled.ir.owners.get(name)
        if owner is not None:
            members[owner].append(ids[name])
    return tuple(
        Cluster(
            cluster_ids[name],
            f"{name}: {instance.block}",
            cluster_ids[instance.parent] if instance.parent is not None else None,
            tuple(members[name]),
        )
        for name, instance in instances.items()
    )


def _leaf_kind(decl: Any) -> tuple[str, str]:
    if isinstance(decl, InputDecl):
        return "input", f"input from {decl.role}" if decl.role else "input"
    if isinstance(decl, ParamDecl):
        return "param", "param"
    if isinstance(decl, ConstDecl):
        return "const", "const"
    raise AssertionError(f"unexpected declaration {decl!r}")


def _edge(tail: str, head: str, t: TensorType | None, value: Any, grad: Any) -> Edge:
    value_label = value_text(value)[0] if value is not None else None
    grad_label, flagged = value_text(grad, shape=False) if grad is not None else (None, False)
    return Edge(tail, head, _type_text(t), value_label, grad_label, flagged)


def backward_diagram(
    plan: Plan, *, values: Mapping[str, Any] | None = None, gradients: Mapping[str, Any] | None = None
) -> Diagram:
    """The backward plan as a graph of its own.

    Gradient nodes (d_price, d_apple, ...) and one node per backward step;
    each incoming gradient flows into its step, and from the step to each
    operand's gradient along an edge labelled with the local rule (`+=` where
    fan-out adds into a gradient). Dashed edges bring in the forward values and
    saved tensors each step reads.
    """
    values = values or {}
    gradients = gradients or {}
    nodes: list[Node] = []
    edges: list[Edge] = []
    grad_ids: dict[str, str] = {}
    read_ids: dict[str, str] = {}

    def grad_node(value_name: str) -> str:
        if value_name not in grad_ids:
            grad_ids[value_name] = f"g{len(grad_ids)}"
            text, flagged = value_text(gradients[value_name]) if value_name in gradients else (None, False)
            nodes.append(Node(grad_ids[value_name], "grad", f"d_{value_name}", grad=text, flagged=flagged))
        return grad_ids[value_name]

    def read_node(name: str) -> str:
        if name not in read_ids:
            read_ids[name] = f"r{len(read_ids)}"
            text, flagged = value_text(values[name]) if name in values else (None, False)
            nodes.append(
                Node(
                    read_ids[name],
                    "read",
                    name,
                    note="saved" if "." in name else "forward value",
                    value=text,
                    flagged=flagged,
                )
            )
        return read_ids[name]

    if plan.seed is not None:
        grad_node(plan.seed)
    for s, step in enumerate(plan.backward):
        step_id = f"s{s}"
        nodes.append(Node(step_id, "step", step.node, op=step.op.symbol or step.op.name, note="backward"))
        edges.append(Edge(grad_node(step.node), step_id))
        for name in dict.fromkeys(r for w in step.writes for r in w.reads):
            edges.append(Edge(read_node(name), step_id, dashed=True))
        args = plan.forward[step.forward_index].args
        for write in step.writes:
            rule = ("+= " if write.accumulate else "") + write.rule
            edges.append(Edge(step_id, grad_node(args[write.operand]), rule=rule))
    return Diagram(f"{plan.graph} backward", tuple(nodes), tuple(edges))


def edge_gradients(program: Program) -> dict[tuple[str, int], np.ndarray]:
    """Each read's share of its value's gradient, by (reader, argument position).

    The interpreter sums fan-out contributions as it goes; to draw them one per
    edge, the program's last run is replayed (graphc.run.replay).
    """
    from graphc.run import replay

    if not program.gradients or program.plan.seed not in program.gradients:
        return {}
    return replay(program).shares


def program_diagram(
    program: Program, *, values: bool = True, grads: bool = True, plan: str = "forward", collapse: bool = False
) -> Diagram:
    """A Program drawn with what its last run computed (if anything, and if asked)."""
    shown_values = program.values if values else None
    shown_grads = program.gradients if grads else None
    if plan == "backward":
        return backward_diagram(program.plan, values=shown_values, gradients=shown_grads)
    return graph_diagram(
        program.compiled,
        types=program.types,
        values=shown_values,
        gradients=shown_grads,
        edge_gradients=edge_gradients(program) if grads else None,
        collapse=collapse,
    )


# --- DOT ----------------------------------------------------------------------

FONT = "Helvetica,Arial,sans-serif"
RED = "#c0392b"
GREY = "#6b6b6b"
SHORT = 12  # characters: the longest gradient written below its edge

_NODE_STYLES = {
    "input": {"shape": "box", "style": "rounded", "color": "#333333"},
    "param": {"shape": "box", "style": "rounded,filled", "color": "#a0781c", "fillcolor": "#fcefc7"},
    "const": {"shape": "box", "style": "rounded,dashed", "color": "#9a9a9a", "fontcolor": GREY},
    "op": {"shape": "ellipse", "style": "filled", "color": "#3d5a80", "fillcolor": "#e8eff8", "margin": "0.05,0.02"},
    "output": {"shape": "none", "fontcolor": GREY},
    "grad": {"shape": "box", "style": "rounded", "color": RED},
    "step": {"shape": "ellipse", "style": "filled", "color": "#3d5a80", "fillcolor": "#e8eff8"},
    "read": {"shape": "box", "style": "rounded,dashed", "color": "#9a9a9a", "fontcolor": GREY},
    # A block use drawn as one box (graphc draw --collapse).
    "block": {
        "shape": "box",
        "style": "rounded,filled",
        "color": "#3d5a80",
        "fillcolor": "#e8eff8",
        "peripheries": "2",
    },
}
_CLUSTER_STYLE = {"style": "rounded,dashed", "color": "#9a9a9a", "fontcolor": GREY, "labeljust": "l"}


class _Html(str):
    """A DOT HTML-like label, already in its <...> brackets and escaped."""


def dot_string(text: str) -> str:
    """A DOT quoted string: only `"` and `\\` need escaping (and newlines are kept out)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")
    return f'"{escaped}"'


def html_text(text: str) -> str:
    """Text inside a DOT HTML-like label: `&<>"` as entities."""
    return html.escape(text, quote=True).replace("\n", "<BR/>")


def _font(text: str, size: int | None = None, color: str | None = None, bold: bool = False) -> str:
    inner = f"<B>{html_text(text)}</B>" if bold else html_text(text)
    attrs = (f' POINT-SIZE="{size}"' if size else "") + (f' COLOR="{color}"' if color else "")
    return f"<FONT{attrs}>{inner}</FONT>" if attrs else inner


def _grad_label(text: str, flagged: bool, prefix: str = "") -> str:
    return _font(("⚠ " if flagged else "") + prefix + text, color=RED, bold=flagged)


def _node_label(node: Node) -> str:
    lines: list[str] = []
    if node.kind == "output":
        lines.append(_font("output", 10, GREY))
    elif node.kind in ("op", "step"):
        lines.append(_font(node.op, 18) if len(node.op) <= 2 else _font(node.op, 12, bold=True))
        if node.detail:
            lines.append(_font(node.detail, 10))
        lines.append(_font(node.name + (" backward" if node.kind == "step" else ""), 9, GREY))
    elif node.kind == "grad":
        lines.append(_font(node.name, 12, RED, bold=True))
    else:
        lines.append(_font(node.name, 12, bold=True))
        lines.append(_font(node.note, 9, GREY))
    if node.value is not None:
        lines.append(_font(node.value, 10))
    if node.grad is not None:
        lines.append(_grad_label(node.grad, node.flagged, "" if node.kind == "grad" else "grad "))
    return _Html("<" + "<BR/>".join(lines) + ">")


def _edge_attrs(edge: Edge, below: bool) -> dict[str, str]:
    attrs: dict[str, str] = {}
    above = []
    if edge.type:
        above.append(_font(edge.type, 9, GREY))
    if edge.value is not None:
        above.append(_font(edge.value, 11))
    if edge.rule is not None:
        above.append(_font(edge.rule, 10))
    if edge.grad is not None and not below:
        above.append(_grad_label(edge.grad, edge.flagged))
    if above:
        attrs["label"] = _Html("<" + "<BR/>".join(above) + ">")
    if edge.grad is not None and below:
        # The label sits above an edge drawn left to right; the gradient goes
        # below the line at its tail, where it arrives flowing backward (and
        # where an op's operands, which crowd together at its head, are apart).
        attrs["taillabel"] = _Html("<" + _grad_label(edge.grad, edge.flagged) + ">")
        attrs.update(_below_tail(len(edge.grad) + 2 * edge.flagged))
    if edge.dashed:
        attrs["style"] = "dashed"
        attrs["color"] = "#9a9a9a"
        attrs["arrowhead"] = "vee"
    return attrs


def _below_tail(chars: int) -> dict[str, str]:
    """labelangle and labeldistance that put a tail label of `chars` characters
    just below the edge, its near end clear of the tail node.

    Graphviz centres a tail label at labeldistance * 10 points from the tail,
    labelangle degrees off the edge; a wider label must sit further along the
    edge, at a shallower angle, to stay the same height below it.
    """
    along = 3.3 * chars + 9  # half the width (11-point digits), plus a gap
    below = 13
    return {
        "labelangle": f"{-math.degrees(math.atan2(below, along)):.1f}",
        "labeldistance": f"{math.hypot(along, below) / 10:.2f}",
    }


def _attr_list(attrs: Mapping[str, str]) -> str:
    parts = []
    for key, value in attrs.items():
        parts.append(f"{key}={value if isinstance(value, _Html) else dot_string(value)}")
    return ", ".join(parts)


def to_dot(diagram: Diagram, rankdir: str = "LR") -> str:
    """The diagram in Graphviz's DOT language; node ids are n0, n1, ... and
    every name, value and rule appears only inside an escaped label."""
    # Short gradients go below their edges, at the tail, as in the book. The
    # layout leaves no room for labels there, so long ones (arrays' summaries)
    # would collide with their neighbours, and a fan-out's would crowd its
    # tail: then every gradient goes under its value instead.
    graded = [e for e in diagram.edges if e.grad is not None]
    tails = [e.tail for e in graded]
    below = all(len(e.grad or "") <= SHORT for e in graded) and len(set(tails)) == len(tails)
    graph = {
        "rankdir": rankdir,
        "fontname": FONT,
        "fontsize": "12",
        "fontcolor": GREY,
        "label": diagram.title,
        "labelloc": "t",
        "labeljust": "l",
        "ranksep": "0.9",
        "pad": "0.2",
        "bgcolor": "white",
        # Room between edges for the gradients below them.
        "nodesep": "0.6" if below and graded else "0.35",
    }
    lines = [
        f"digraph {dot_string(diagram.title)} {{",
        f"  graph [{_attr_list(graph)}];",
        f"  node [{_attr_list({'fontname': FONT, 'fontsize': '12', 'penwidth': '1.2'})}];",
        f"  edge [{_attr_list({'fontname': FONT, 'fontsize': '11', 'color': '#444444', 'arrowsize': '0.7'})}];",
    ]
    lines += _dot_nodes(diagram)
    for edge in diagram.edges:
        attrs = _edge_attrs(edge, below)
        lines.append(f"  {edge.tail} -> {edge.head}" + (f" [{_attr_list(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_nodes(diagram: Diagram) -> list[str]:
    """Every node, then the clusters of block uses as subgraphs that name the nodes
    directly inside them (Graphviz draws a node in the innermost cluster naming it)."""
    lines = []
    for node in diagram.nodes:
        attrs = dict(_NODE_STYLES[node.kind])
        attrs["label"] = _node_label(node)
        attrs["tooltip"] = node.name if node.kind != "output" else f"output {node.name}"
        lines.append(f"  {node.id} [{_attr_list(attrs)}];")
    return lines + _dot_clusters(diagram, None, "  ")


def _dot_clusters(diagram: Diagram, parent: str | None, indent: str) -> list[str]:
    lines = []
    for cluster in diagram.clusters:
        if cluster.parent == parent:
            lines.append(f"{indent}subgraph {cluster.id} {{")
            lines.append(f"{indent}  graph [{_attr_list({'label': cluster.label, **_CLUSTER_STYLE})}];")
            lines += [f"{indent}  {node_id};" for node_id in cluster.nodes]
            lines += _dot_clusters(diagram, cluster.id, indent + "  ")
            lines.append(f"{indent}}}")
    return lines


def dot_source(compiled: CompiledGraph, rankdir: str = "LR") -> str:
    """The graph's structure as DOT (`graphc compile --emit dot`)."""
    return to_dot(graph_diagram(compiled), rankdir)


# --- rendering and files ------------------------------------------------------


def find_dot() -> str | None:
    """Where Graphviz's `dot` program is, or None."""
    return shutil.which("dot")


def missing_dot(target: str) -> GraphcError:
    return GraphcError(
        f"cannot render {target}: Graphviz's `dot` program is not installed (or not on PATH)",
        where="graphc draw",
        hint="install Graphviz (Debian/Ubuntu: `apt-get install graphviz`; macOS: `brew install graphviz`), "
        "or write .dot or .mmd, which need nothing but graphc",
        code="E509",
    )


def render(dot: str, fmt: str, target: str | None = None) -> bytes:
    """DOT -> SVG, PNG or PDF bytes, through Graphviz."""
    target = target or fmt.upper()
    if find_dot() is None:
        raise missing_dot(target)
    try:
        import graphviz
    except ImportError:
        raise GraphcError(
            f"cannot render {target}: the `graphviz` Python package is not installed",
            where="graphc draw",
            hint="`pip install graphviz`, or write .dot or .mmd, which need nothing but graphc",
            code="E509",
        ) from None
    try:
        # quiet: dot's complaints reach the person once, in the error below.
        data = graphviz.Source(dot).pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound:
        raise missing_dot(target) from None
    except graphviz.CalledProcessError as err:
        stderr = err.stderr.decode("utf-8", "replace") if isinstance(err.stderr, bytes) else str(err.stderr or "")
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {err.returncode}"
        raise GraphcError(
            f"cannot render {target}: Graphviz failed: {detail}", where="graphc draw", code="E510"
        ) from None
    if not data:
        raise GraphcError(
            f"cannot render {target}: Graphviz's `dot` wrote nothing",
            where="graphc draw",
            hint="check the Graphviz installation (`dot -V`), or write .dot or .mmd",
            code="E510",
        )
    return data


def output_format(path: str) -> str:
    """The format an output file's extension asks for; `-` is DOT on stdout."""
    if path == "-":
        return "dot"
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        supported = ", ".join(FORMATS)
        raise GraphcError(
            f"cannot tell what to draw from the extension of `{path}`",
            where="graphc draw",
            hint=f"supported extensions: {supported} (`-o -` writes DOT to stdout)",
            code="E507",
        )
    return FORMATS[suffix]


def diagram_bytes(diagram: Diagram, fmt: str, rankdir: str = "LR", target: str | None = None) -> bytes:
    if fmt == "dot":
        return to_dot(diagram, rankdir).encode("utf-8")
    if fmt == "mmd":
        from graphc.mermaid import to_mermaid

        return to_mermaid(diagram, rankdir).encode("utf-8")
    return render(to_dot(diagram, rankdir), fmt, target)


def write_diagram(diagram: Diagram, path: str | Path, rankdir: str = "LR") -> str:
    """Write the diagram in the format the extension names, atomically; returns the format."""
    from graphc.fileio import write_bytes

    fmt = output_format(str(path))
    write_bytes(path, diagram_bytes(diagram, fmt, rankdir, str(path)))
    return fmt


# --- Jupyter --------------------------------------------------------------------


def program_svg(program: Program) -> str | None:
    """The program as SVG, with its last run's values and gradients; None without Graphviz."""
    if find_dot() is None:
        return None
    try:
        return render(to_dot(program_diagram(program)), "svg").decode("utf-8")
    except GraphcError:
        return None


def program_mimebundle(program: Program) -> dict[str, str]:
    """SVG when Graphviz can draw it, else a Mermaid block (Jupyter renders those in Markdown)."""
    svg = program_svg(program)
    if svg is not None:
        return {"image/svg+xml": svg, "text/plain": repr(program)}
    from graphc.mermaid import to_mermaid

    mermaid = to_mermaid(program_diagram(program))
    return {"text/markdown": f"```mermaid\n{mermaid}```\n", "text/plain": repr(program)}

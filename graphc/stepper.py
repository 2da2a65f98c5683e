"""A page that steps through a run: `graphc draw FILE -o steps.html`.

One self-contained HTML file: the graph drawn by Graphviz as graphc's other
diagrams are (graphc.draw), inline as SVG, and a short script with no library.
Buttons and the arrow keys step through the forward plan and then the backward
plan. Each step highlights its node, writes the values it produced above their
edges (or the gradients below them), and shows its rule -- the plan's own text,
which the op's single definition in graphc.ops renders -- with the numbers of
the interpreter's arrays.

Three parts, as the other emitters have: `walk` turns a run program into data
(`Walk`: the steps and, for each label of the diagram, the step that reveals
it); `steps_svg` renders the diagram and marks its labels; `page` writes HTML.
Every name, number and rule reaches the page only as escaped text: the SVG is
serialized by ElementTree, the step data is JSON with `<>&` escaped in a
script block the browser does not run, and the script writes with
textContent. A Content-Security-Policy lets only this script run, and loads
nothing from anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.draw import Diagram, graph_diagram, number_text, render, to_dot, value_text
from graphc.figures import rounding_error, stable_number
from graphc.ir import OpNode
from graphc.plan import BackwardStep, ForwardStep, grad_name
from graphc.run import Replay
from graphc.run import replay as replay_run

if TYPE_CHECKING:
    from graphc.program import Program

# --- the walk: what each step shows -------------------------------------------


@dataclass(frozen=True)
class Step:
    kind: str  # start, forward, seed or backward
    title: str
    node: str | None  # the diagram id of the node it highlights (n3)
    rules: tuple[str, ...]  # the plan's rules, with the numbers where every one is a scalar
    numbers: tuple[str, ...]  # each value the step reads or writes: `tax = 1.1`


@dataclass(frozen=True)
class Label:
    """A value or gradient drawn in the diagram, revealed by one step."""

    element: str  # the id of the edge or node it is drawn on (e3, n4)
    kind: str  # value or grad
    text: str  # as the diagram writes it
    step: int


@dataclass(frozen=True)
class Walk:
    title: str
    diagram: Diagram
    steps: tuple[Step, ...]
    labels: tuple[Label, ...]


@dataclass(frozen=True)
class _Reveals:
    """Which step reveals what: by step index into the walk."""

    made: dict[str, int]  # value -> the forward step computing it (none: a leaf, shown from the start)
    seed: int  # the step seeding backward
    applied: dict[str, int]  # node -> the backward step applying its local rules
    complete: dict[str, int]  # value -> the backward step adding the last share of its gradient


def walk(program: Program, title: str | None = None) -> Walk:
    """The steps of the program's last run (forward and backward must have run)."""
    assert program.gradients, "walk() needs a forward() and a backward() first"
    plan = program.plan
    assert plan.seed is not None
    replay = replay_run(program)
    known: dict[str, Any] = {**program.values, **replay.own(program.plan)}
    ids = {name: f"n{i}" for i, name in enumerate(program.checked.order)}

    steps = [_start(program)]
    made: dict[str, int] = {}
    for i, forward_step in enumerate(plan.forward, 1):
        made[forward_step.out] = len(steps)
        steps.append(_forward(forward_step, i, len(plan.forward), ids, known))
    seed = len(steps)
    seed_grad = grad_name(plan.seed)
    rule = f"{seed_grad} = {brief(program.gradients[plan.seed])}"
    steps.append(Step("seed", f"Backward starts at the output: {seed_grad} = 1", ids[plan.seed], (rule,), ()))
    applied: dict[str, int] = {}
    complete: dict[str, int] = {plan.seed: seed}
    totals: dict[str, np.ndarray] = {}
    for j, backward_step in enumerate(plan.backward):
        applied[backward_step.node] = len(steps)
        complete.update((write.target[2:], len(steps)) for write in backward_step.writes)
        steps.append(_backward(backward_step, j, len(plan.backward), plan.forward, ids, known, replay, totals))

    diagram = graph_diagram(
        program.compiled,
        types=program.types,
        values=program.values,
        gradients=program.gradients,
        edge_gradients=replay.shares,
    )
    labels = _labels(program, diagram, ids, _Reveals(made, seed, applied, complete))
    return Walk(title or program.name, diagram, tuple(steps), labels)


def _labels(program: Program, diagram: Diagram, ids: Mapping[str, str], at: _Reveals) -> tuple[Label, ...]:
    """Each value and gradient the diagram draws, with the step that reveals it.
    The diagram's edges are graph_diagram's: each op's operands in order, then
    each output's terminal."""
    labels: list[Label] = []
    edges = iter(enumerate(diagram.edges))
    for name in program.checked.order:
        decl = program.ir.decls[name]
        if not isinstance(decl, OpNode):
            continue
        for arg in decl.args:
            k, edge = next(edges)
            assert (edge.tail, edge.head) == (ids[arg], ids[name]), (edge, arg, name)
            if edge.value is not None:
                labels.append(Label(f"e{k}", "value", edge.value, at.made.get(arg, 0)))
            if edge.grad is not None:
                labels.append(Label(f"e{k}", "grad", _flag(edge.grad, edge.flagged), at.applied[name]))
    for name, _ in program.ir.outputs:
        k, edge = next(edges)
        if edge.value is not None:
            labels.append(Label(f"e{k}", "value", edge.value, at.made.get(name, 0)))
        if edge.grad is not None:  # the seed
            labels.append(Label(f"e{k}", "grad", _flag(edge.grad, edge.flagged), at.seed))
    for node in diagram.nodes:
        if node.grad is not None:  # a fan-out's total, complete once its last share is in
            text = _flag("grad " + node.grad, node.flagged)
            labels.append(Label(node.id, "grad", text, at.complete.get(node.name, at.seed)))
    return tuple(labels)


def _flag(text: str, flagged: bool) -> str:
    """A label as the diagram writes it: NaN and inf flagged with ⚠."""
    return ("⚠ " if flagged else "") + text


def _start(program: Program) -> Step:
    leaves = [n for n in program.checked.order if not isinstance(program.ir.decls[n], OpNode)]
    numbers = tuple(f"{name} = {brief(program.values[name])}" for name in leaves if name in program.values)
    return Step(
        "start",
        "Start: the inputs, params and consts",
        None,
        ("Press → (or Next) to run the forward plan one step at a time.",),
        numbers,
    )


def _forward(step: ForwardStep, i: int, count: int, ids: Mapping[str, str], known: Mapping[str, Any]) -> Step:
    text = step.text()
    numbers = [f"{arg} = {brief(known[arg])}" for arg in dict.fromkeys(step.args) if arg in known]
    numbers.append(f"{step.out} = {brief(known[step.out])}")
    rhs = text.split(" = ", 1)[1]
    return Step(
        "forward",
        f"Forward step {i} of {count}: {step.op.name} computes {step.out}",
        ids[step.out],
        (_with_numbers(text, rhs, known, known[step.out]),),
        tuple(numbers),
    )


def _backward(
    step: BackwardStep,
    j: int,
    count: int,
    forward: tuple[ForwardStep, ...],
    ids: Mapping[str, str],
    known: Mapping[str, Any],
    replay: Replay,
    totals: dict[str, np.ndarray],
) -> Step:
    """A backward step: each operand's gradient by its local rule, upstream
    gradient times local derivative; where fan-out adds into a gradient, its
    running total too."""
    dout = replay.douts[j]
    scope = {**known, step.dout: dout}
    rules = []
    numbers = [f"{step.dout} = {brief(dout)}"]
    reads = dict.fromkeys(r for w in step.writes for r in w.reads)
    numbers += [f"{name} = {brief(known[name])}" for name in reads if name in known]
    for write in step.writes:
        share = replay.shares[(step.node, write.operand)]
        assign = "+=" if write.accumulate else "="
        rules.append(_with_numbers(f"{write.target} {assign} {write.rule}", write.rule, scope, share))
        target = write.target[2:]
        if write.accumulate and target in totals:
            totals[target] = totals[target] + share
            numbers.append(f"{write.target} += {brief(share)}, so {write.target} = {brief(totals[target])}")
        else:
            totals[target] = share
            numbers.append(f"{write.target} = {brief(share)}")
    forward_step = forward[step.forward_index]
    return Step(
        "backward",
        f"Backward step {j + 1} of {count}: {step.op.name} at {forward_step.out}, local gradients",
        ids[step.node],
        tuple(rules),
        tuple(numbers),
    )


# A name the rule reads: not a function called, nor an attribute named (axis=0),
# nor part of a longer name or of a method (W2.T).
_NAME = re.compile(r"(?<![\w.])[A-Za-z_][\w.]*(?![\w.]|\s*\(|\s*=(?!=))")


def _with_numbers(rule: str, rhs: str, scope: Mapping[str, Any], result: Any) -> str:
    """`rule = its right side with numbers = result` when everything it reads is
    a scalar (`d_apple_price = d_price * tax = 1 * 1.1 = 1.1`), else the rule."""
    names = _NAME.findall(rhs)
    if not names or any(name not in scope or np.ndim(scope[name]) != 0 for name in names):
        return rule
    if np.ndim(result) != 0:
        return rule
    filled = _NAME.sub(lambda m: brief(scope[m.group(0)]), rhs)
    answer = brief(result)
    return f"{rule} = {filled}" if filled == answer else f"{rule} = {filled} = {answer}"


ENTRIES = 3  # the entries of a large tensor shown, flattened


def brief(value: Any) -> str:
    """A value for the step's text: a scalar or up to 4 numbers in full (as the
    diagram writes them), else its shape, its first entries and its mean and norm."""
    array = np.asarray(value)
    if array.size <= 4:
        return value_text(array)[0]
    flat = array.reshape(-1)
    if flat.dtype.kind == "b":
        flat = flat.astype(np.int64)
    finite = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    uncertainty = rounding_error(flat.dtype) * (float(np.max(np.abs(finite))) if finite.size else 0.0)
    entries = [
        stable_number(float(x), uncertainty, 6) if np.isfinite(x) else number_text(float(x)) for x in flat[:ENTRIES]
    ]
    return f"{list(array.shape)}: {', '.join(entries)}, … ({value_text(array, shape=False)[0]})"


# --- the SVG: the diagram with its labels marked -------------------------------

SVG = "http://www.w3.org/2000/svg"
XLINK = "http://www.w3.org/1999/xlink"


def tagged_dot(diagram: Diagram, rankdir: str = "LR") -> str:
    """The diagram's DOT with an id on every node (its own: n3) and edge (e0,
    e1, ... in the diagram's order), which Graphviz gives their SVG groups."""
    lines = to_dot(diagram, rankdir).split("\n")
    node_lines = {f"  {node.id} [": node.id for node in diagram.nodes}
    count = len(diagram.edges)
    first_edge = len(lines) - 2 - count  # the edges come last, before `}` and the final newline
    for i, line in enumerate(lines):
        if i >= first_edge and i < first_edge + count:
            edge = diagram.edges[i - first_edge]
            start = f"  {edge.tail} -> {edge.head}"
            assert line.startswith(start), (line, edge)
            rest = line[len(start) :]
            attrs = f' [id="e{i - first_edge}"' + (", " + rest[2:] if rest.startswith(" [") else "];")
            lines[i] = start + attrs
        else:
            for prefix, node_id in node_lines.items():
                if line.startswith(prefix):
                    lines[i] = f'{prefix}id="{node_id}", {line[len(prefix) :]}'
                    break
    return "\n".join(lines)


def steps_svg(found: Walk, rankdir: str = "LR") -> str:
    """The diagram as inline SVG, every label a step reveals marked with
    class `stepped value|grad` and `data-step`."""
    svg = render(tagged_dot(found.diagram, rankdir), "svg", "the step-through page").decode("utf-8")
    return mark_labels(svg, found.labels)


def mark_labels(svg: str, labels: tuple[Label, ...]) -> str:
    ET.register_namespace("", SVG)
    ET.register_namespace("xlink", XLINK)
    root = ET.fromstring(svg)
    groups = {g.get("id"): g for g in root.iter(f"{{{SVG}}}g") if g.get("id")}
    claimed: set[int] = set()
    for label in labels:
        group = groups.get(label.element)
        if group is None:
            continue
        for text in group.iter(f"{{{SVG}}}text"):
            if id(text) not in claimed and (text.text or "") == label.text:
                claimed.add(id(text))
                text.set("class", f"stepped {label.kind}")
                text.set("data-step", str(label.step))
                break
    root.set("id", "diagram")
    root.set("role", "img")
    return ET.tostring(root, encoding="unicode")


# --- the page -----------------------------------------------------------------

STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.2em; font-weight: normal; color: #555; }
#controls button { font-size: 1em; min-width: 6em; margin-right: 0.3em; }
#counter { margin-left: 1em; color: #555; }
#panel { border-left: 4px solid #3d5a80; padding: 0.3em 1em; margin: 1em 0; min-height: 7em; }
#panel.backward { border-color: #c0392b; }
#title { font-weight: bold; margin: 0.3em 0; }
#rule { font-family: Menlo, Consolas, monospace; font-size: 1.05em; white-space: pre-wrap; margin: 0.4em 0; }
#numbers { font-family: Menlo, Consolas, monospace; color: #444; white-space: pre-wrap; margin: 0.4em 0; }
#top { position: sticky; top: 0; background: white; padding-top: 0.5em; z-index: 1; }
#scroll { overflow: auto; max-width: 100%; }
.stepped.hidden { visibility: hidden; }
.stepped.fresh { font-weight: bold; }
.value.fresh { fill: #1f6f3f; }
g.current ellipse, g.current path, g.current polygon { stroke: #e67e22; stroke-width: 4; }
p.keys { color: #777; font-size: 0.9em; }
"""

SCRIPT = """
(function () {
  "use strict";
  var steps = JSON.parse(document.getElementById("steps-data").textContent);
  var labels = Array.prototype.slice.call(document.querySelectorAll("#diagram .stepped"));
  var position = 0;
  function put(id, text) { document.getElementById(id).textContent = text; }
  function reveal(node) {
    // Bring the node into view: across within the diagram's box, down or up the
    // page below the controls, which stay at the top.
    var scroller = document.getElementById("scroll");
    var box = node.getBoundingClientRect(), view = scroller.getBoundingClientRect();
    if (box.left < view.left || box.right > view.right) {
      scroller.scrollLeft += box.left - view.left - (view.width - box.width) / 2;
    }
    var top = document.getElementById("top").getBoundingClientRect().bottom;
    if (box.top < top || box.bottom > window.innerHeight) {
      window.scrollBy(0, box.top - top - (window.innerHeight - top - box.height) / 2);
    }
  }
  function show(p) {
    position = Math.max(0, Math.min(steps.length - 1, p));
    var step = steps[position];
    labels.forEach(function (label) {
      var at = Number(label.getAttribute("data-step"));
      label.classList.toggle("hidden", at > position);
      label.classList.toggle("fresh", at === position);
    });
    Array.prototype.forEach.call(document.querySelectorAll("#diagram .current"), function (node) {
      node.classList.remove("current");
    });
    var node = step.node === null ? null : document.getElementById(step.node);
    if (node) {
      node.classList.add("current");
      reveal(node);
    }
    document.getElementById("panel").className = step.kind;
    put("title", step.title);
    put("rule", step.rules.join("\\n"));
    put("numbers", step.numbers.join("\\n"));
    put("counter", "step " + position + " of " + (steps.length - 1));
    document.getElementById("first").disabled = document.getElementById("back").disabled = position === 0;
    document.getElementById("next").disabled = document.getElementById("last").disabled =
      position === steps.length - 1;
  }
  document.getElementById("first").addEventListener("click", function () { show(0); });
  document.getElementById("back").addEventListener("click", function () { show(position - 1); });
  document.getElementById("next").addEventListener("click", function () { show(position + 1); });
  document.getElementById("last").addEventListener("click", function () { show(steps.length - 1); });
  document.addEventListener("keydown", function (event) {
    var moves = { ArrowRight: position + 1, ArrowLeft: position - 1, Home: 0, End: steps.length - 1 };
    if (event.altKey || event.ctrlKey || event.metaKey || !(event.key in moves)) { return; }
    event.preventDefault();
    show(moves[event.key]);
  });
  show(0);
})();
"""


def step_json(found: Walk) -> str:
    """The steps as JSON safe inside a <script> block: no `<`, `>` or `&`
    (so no `</script>`), and only ASCII (so no line separators either)."""
    steps = [
        {"kind": s.kind, "title": s.title, "node": s.node, "rules": list(s.rules), "numbers": list(s.numbers)}
        for s in found.steps
    ]
    text = json.dumps(steps, ensure_ascii=True, indent=1)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(found: Walk, svg: str) -> str:
    """The whole HTML page."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    policy = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    title = html.escape(f"{found.title}: forward and backward, step by step", quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="generator" content="graphc">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<div id="top">
<div id="controls">
<button id="first" type="button" title="Home">« Start</button>
<button id="back" type="button" title="←">◀ Back</button>
<button id="next" type="button" title="→">Next ▶</button>
<button id="last" type="button" title="End">End »</button>
<span id="counter"></span>
</div>
<div id="panel">
<div id="title"></div>
<div id="rule"></div>
<div id="numbers"></div>
</div>
</div>
<div id="scroll">
{svg}
</div>
<p class="keys">Keys: → next step, ← back, Home the start, End the last step.
Forward writes each value above its edge; backward writes each gradient, in red, below it.</p>
<script type="application/json" id="steps-data">{step_json(found)}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""


def steps_page(program: Program, rankdir: str = "LR", title: str | None = None) -> str:
    """The page for a program that has run forward and backward."""
    found = walk(program, title)
    return page(found, steps_svg(found, rankdir))


def write_steps_page(program: Program, path: str | Path, rankdir: str = "LR", title: str | None = None) -> None:
    """Write the page atomically."""
    from graphc.fileio import write_text

    write_text(path, steps_page(program, rankdir, title))

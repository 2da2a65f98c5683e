"""The chain rule with numbers: a run's every step, as the book's figures show it.

explain(program) replays the program's last run through the interpreter,
keeping what each forward step saves and what each backward step hands each
operand, and returns the run as steps: each forward step with its inputs and
output; each backward edge as upstream gradient · local derivative =
downstream gradient; each value read more than once with its gradient as the
sum of its shares (d_x = d_x@1 + d_x@2). The rules' text comes from the ops'
formulas (Op.render, Op.local_derivative), the numbers from the interpreter's
arrays: nothing here knows any op's derivative.

A rule that is no product of numbers (a matrix product, softmax's, a sum that
undoes broadcasting) is shown as the op writes it, with the tensors it reads.
`at` follows one element (a batch row, an entry) through the graph: it
indexes every value whose leading dims are those of the first input (or
param) with as many dims as the index.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import GraphcError
from graphc.figures import rounding_error, stable_number
from graphc.ir import Dim, TensorType
from graphc.ops import Op
from graphc.plan import BackwardStep, ForwardStep, Plan, grad_name
from graphc.program import Program
from graphc.run import replay

SCALAR_DIGITS = 10  # a number on its own, as `graphc run` prints it
ENTRY_DIGITS = 6  # each entry shown of a tensor
ENTRIES = 3  # entries shown of a tensor of more than FULL
FULL = 4  # a tensor of at most this many numbers is shown whole
DOT = "·"  # the chain rule's product: upstream · local derivative


@dataclass(frozen=True)
class Quantity:
    """A named value of the run: a forward value, a gradient or a share of one,
    a local derivative (named by its formula); `index` is the element `at`
    picks of it, where the index applies."""

    name: str
    value: Any
    index: tuple[int, ...] | None = None

    @property
    def shown(self) -> np.ndarray:
        array = np.asarray(self.value)
        return array[self.index] if self.index is not None else array

    @property
    def label(self) -> str:
        """Its name, with the element shown: `d_x[0, 2]`."""
        if self.index is None:
            return self.name
        name = self.name if _atomic(self.name) else f"({self.name})"
        return f"{name}[{', '.join(map(str, self.index))}]"


@dataclass(frozen=True)
class Step:
    """One line of the story.

    phase "forward": `rule` is the op's forward, `inputs` its operands.
    phase "seed": the gradient backward starts from.
    phase "backward": one edge; `rule` the op's local rule for the operand
    (`d_price * tax`), `product` the same as upstream · local derivative
    (`d_price · tax`), None where the rule is no such product; `inputs` the
    upstream gradient, then the local derivative (a product) or what the
    rule reads; `output` the operand's gradient, or its share of it.
    phase "sum": a gradient as the sum of its shares.
    """

    phase: str
    node: str
    op: str | None
    rule: str
    inputs: tuple[Quantity, ...]
    output: Quantity
    product: str | None = None


@dataclass(frozen=True)
class Explanation:
    graph: str
    seed: str
    at: tuple[int, ...] | None
    steps: tuple[Step, ...]


# --- building -------------------------------------------------------------------


def explain(program: Program, at: tuple[int, ...] | None = None) -> Explanation:
    """The last run of `program` (forward and backward) as steps."""
    if not program.gradients:
        raise GraphcError("explain needs a run: call program.forward(...) and program.backward() first", code="E407")
    problem = at_problem(program, at)
    if problem is not None:
        raise GraphcError(problem, code="E502")
    plan = program.plan
    assert plan.seed is not None  # a Program's plan goes backward from its output
    replayed = replay(program)
    saved, shares = replayed.saved, replayed.shares
    index = _indexer(program, at)
    steps = [_forward_step(plan, step, program.values, index) for step in plan.forward]
    seed = grad_name(plan.seed)
    steps.append(
        Step("seed", plan.seed, None, f"{seed} = 1", (), Quantity(seed, program.gradients[plan.seed], index(plan.seed)))
    )
    steps += _backward_steps(program, saved, shares, index)
    return Explanation(program.name, plan.seed, at, tuple(steps))


def at_problem(program: Program, at: tuple[int, ...] | None) -> str | None:
    """What is wrong with following element `at` in this program's values, or None."""
    if at is None:
        return None
    reference = _reference(program, len(at))
    if reference is None:
        most = max((np.ndim(program.values[n]) for n in (*program.plan.inputs, *program.plan.params)), default=0)
        dims = "1 dim" if len(at) == 1 else f"{len(at)} dims"
        have = "every input and param is a scalar" if most == 0 else f"no input or param has more than {most}"
        return f"--at {_index_text(at)} indexes {dims}, but in graph `{program.name}` {have}"
    shape = np.shape(program.values[reference])
    for axis, (i, size) in enumerate(zip(at, shape)):
        if not 0 <= i < size:
            shape_text = f"[{', '.join(map(str, shape))}]"
            return (
                f"--at {_index_text(at)}: index {i} is out of range for dim {axis} of `{reference}`, shape {shape_text}"
            )
    return None


def _index_text(at: tuple[int, ...]) -> str:
    return ",".join(map(str, at))


def _reference(program: Program, count: int) -> str | None:
    """The first input, else param, with at least `count` dims: whose leading dims `at` indexes."""
    plan = program.plan
    return next((n for n in (*plan.inputs, *plan.params) if np.ndim(program.values[n]) >= count), None)


Indexer = Callable[[str], "tuple[int, ...] | None"]


def _indexer(program: Program, at: tuple[int, ...] | None) -> Indexer:
    """value name -> the index `at` gives it, or None where it does not apply:
    values whose declared leading dims are the reference's (`N`, by name)."""
    if at is None:
        return lambda name: None
    reference = _reference(program, len(at))
    assert reference is not None  # at_problem has said so
    lead: tuple[Dim, ...] = program.types[reference].shape[: len(at)]
    types: Mapping[str, TensorType] = program.types

    def index(name: str) -> tuple[int, ...] | None:
        t = types.get(name)
        return at if t is not None and t.shape[: len(at)] == lead else None

    return index


def _local_types(plan: Plan, step: ForwardStep) -> dict[str, TensorType]:
    types = {operand: plan.types[arg] for operand, arg in zip(step.op.operands, step.args)}
    types["out"] = plan.types[step.out]
    return types


def _names(step: ForwardStep) -> dict[str, str]:
    """The op's names for this step's values: operands, out, its own tensors (relu1.mask)."""
    names = {item: f"{step.out}.{item}" for item in step.op.own}
    names.update(zip(step.op.operands, step.args))
    names["out"] = step.out
    return names


def _forward_step(plan: Plan, step: ForwardStep, values: Mapping[str, Any], index: Indexer) -> Step:
    names = _names(step)
    types = _local_types(plan, step)
    rule = "; ".join(step.op.render(f, names, types) for f in step.op.forward_in(plan.mode, step.attrs))
    inputs = tuple(Quantity(arg, values[arg], index(arg)) for arg in step.args)
    return Step("forward", step.out, step.op.name, rule, inputs, Quantity(step.out, values[step.out], index(step.out)))


def _backward_steps(
    program: Program, saved: Mapping[int, Mapping[str, Any]], shares: Mapping[tuple[str, int], Any], index: Indexer
) -> list[Step]:
    """Each backward step's edges; a gradient with several shares as their sum,
    after the step that adds its last."""
    plan = program.plan
    counts: dict[str, int] = {}
    for back in plan.backward:
        for write in back.writes:
            counts[write.target] = counts.get(write.target, 0) + 1
    parts: dict[str, list[Quantity]] = {}
    steps: list[Step] = []
    for back in plan.backward:
        forward = plan.forward[back.forward_index]
        complete = []
        for write in back.writes:
            arg = forward.args[write.operand]
            name = write.target
            if counts[write.target] > 1:
                name = f"{write.target}@{len(parts.setdefault(arg, [])) + 1}"
            output = Quantity(name, shares[(back.node, write.operand)], index(arg))
            steps.append(_edge(program, back, forward, write.operand, write.rule, write.reads, output, saved, index))
            if counts[write.target] > 1:
                parts[arg].append(output)
                if len(parts[arg]) == counts[write.target]:
                    complete.append(arg)
        for arg in complete:
            target = grad_name(arg)
            rule = f"{target} = " + " + ".join(p.name for p in parts[arg])
            total = Quantity(target, program.gradients[arg], index(arg))
            steps.append(Step("sum", arg, None, rule, tuple(parts[arg]), total))
    return steps


def _edge(
    program: Program,
    back: BackwardStep,
    forward: ForwardStep,
    operand: int,
    rule: str,
    reads: tuple[str, ...],
    output: Quantity,
    saved: Mapping[int, Mapping[str, Any]],
    index: Indexer,
) -> Step:
    """One backward edge: the local rule with its numbers."""
    plan = program.plan
    upstream = Quantity(back.dout, program.gradients[back.node], index(back.node))
    text = f"{output.name} = {rule}"
    types = _local_types(plan, forward)
    local = forward.op.local_derivative(operand, forward.attrs, types, plan.mode)
    if local is None:
        own = saved.get(back.forward_index, {})
        read = tuple(Quantity(r, _read_value(program, forward, r, own), index(_shaped_like(forward, r))) for r in reads)
        return Step("backward", back.node, back.op.name, text, (upstream, *read), output)
    shown = forward.op.render(local, _names(forward), types)
    values = dict(zip(forward.op.operands, (program.values[a] for a in forward.args)))
    values["out"] = program.values[forward.out]
    values.update(saved.get(back.forward_index, {}))
    value = local_value(forward.op, local, forward.attrs, types, plan.mode, values)
    if upstream.index is not None:  # the derivative at the element followed
        value = np.broadcast_to(value, np.shape(upstream.value))
    derivative = Quantity(shown, value, upstream.index)
    product = f"{upstream.name} {DOT} {shown if _atomic(shown) else f'({shown})'}"
    return Step("backward", back.node, back.op.name, text, (upstream, derivative), output, product)


def _shaped_like(forward: ForwardStep, name: str) -> str:
    """The value an op's own tensor is shaped like (loss.probs: y), so `at` indexes it as that; else `name`."""
    item = name.removeprefix(forward.out + ".")
    if item == name or item not in forward.op.own:
        return name
    like = forward.op.own[item].like
    return forward.out if like == "out" else forward.args[forward.op.operands.index(like)]


def _read_value(program: Program, forward: ForwardStep, name: str, own: Mapping[str, Any]) -> Any:
    """A value a rule reads: a forward value, or one of the op's own tensors (loss.probs)."""
    prefix = forward.out + "."
    if name.startswith(prefix) and name[len(prefix) :] in own:
        return own[name[len(prefix) :]]
    return program.values[name]


def local_value(
    op: Op,
    formula: str,
    attrs: Mapping[str, Any],
    types: Mapping[str, TensorType],
    mode: str,
    values: Mapping[str, Any],
) -> Any:
    """A local derivative's value: its formula (Op.local_derivative's) as the
    interpreter's code, over `values` by the op's names (operands, out, own tensors)."""
    local = {n: n for n in (*op.operands, *op.own, *op.state, "out", "dout")}
    source = op.render(formula, local, types, people=False)
    scope: dict[str, Any] = {"np": np}
    scope.update((f.__name__, f) for f in op.helpers(attrs, mode))
    scope.update(values)
    with np.errstate(all="ignore"):
        return eval(compile(source, "<local derivative>", "eval"), scope)  # noqa: S307 (the op's own formula)


def _atomic(text: str) -> bool:
    """A name or a number: needs no parentheses beside an operator."""
    return text.replace(".", "").replace("_", "").replace("@", "").isalnum()


# --- text -------------------------------------------------------------------------


def explanation_text(explanation: Explanation) -> str:
    lines = [f"graph {explanation.graph}"]
    if explanation.at is not None:
        lines.append(f"following element [{', '.join(map(str, explanation.at))}] of each value it indexes")
    forward = [s for s in explanation.steps if s.phase == "forward"]
    backward = [s for s in explanation.steps if s.phase != "forward"]
    width = max((len(s.op) for s in explanation.steps if s.op is not None), default=0)
    lines += ["", "forward: each node's output from its inputs"]
    for step in forward:
        lines += _step_lines(step, width)
    lines += ["", f"backward from {explanation.seed}: upstream gradient {DOT} local derivative = downstream gradient"]
    previous = None
    for step in backward:
        op = step.op if step.phase == "backward" and step.node != previous else None
        previous = step.node if step.phase == "backward" else None
        lines += _step_lines(step, width, op)
    return "\n".join(lines) + "\n"


def _step_lines(step: Step, width: int, op: str | None = "") -> list[str]:
    """A step on one line where every number it shows is a scalar; else its
    rule, then one line per tensor."""
    head = f"  {(step.op if op == '' else op) or '':<{width}}  "
    one = _one_line(step)
    if one is not None:
        return [head + one]
    indent = " " * len(head) + "  "
    rule = step.rule if step.phase != "backward" or step.product is None else f"{step.output.name} = {step.product}"
    lines = [head + rule]
    shown = (*step.inputs, step.output)
    label = max(len(q.label) for q in shown)
    lines += [f"{indent}{q.label:<{label}}  {number_text(q.shown)}" for q in shown]
    return lines


def _one_line(step: Step) -> str | None:
    """`out = rule = numbers = result`, where every quantity shown is a number."""
    if not all(np.ndim(q.shown) == 0 for q in (*step.inputs, step.output)):
        return None
    result = f"{step.output.label} = "
    if step.phase == "seed":
        return result + number_text(step.output.shown)
    story = _story(step)
    if story is None:
        return None
    symbols, numbers = story
    return f"{result}{symbols} = {numbers} = {number_text(step.output.shown)}"


def _story(step: Step) -> tuple[str, str] | None:
    """A step's right-hand side in symbols and in numbers (`d_price · tax`,
    `1 · 1.1`), or None where its numbers alone do not tell it."""
    if step.phase == "backward":
        if step.product is None:
            return None
        upstream, derivative = step.inputs
        product = step.product if upstream.index is None else f"{upstream.label} {DOT} {derivative.label}"
        return product, f"{_operand(upstream.shown)} {DOT} {_operand(derivative.shown)}"
    if step.phase == "sum":
        return " + ".join(q.label for q in step.inputs), " + ".join(_operand(q.shown) for q in step.inputs)
    tensors = [q for q in step.inputs if np.ndim(q.value) > 0]
    if any(q.index is None for q in tensors) or (tensors and step.output.index is None) or ";" in step.rule:
        return None  # a tensor read whole (a reduction, a broadcast): no element-wise story
    target, _, expression = step.rule.partition(" = ")
    if target != step.output.name or f"{target}." in expression:
        return None  # `loss, probs = ...`, or an own tensor (dropout's mask), not an input
    names = {q.name: q.label for q in step.inputs}
    numbers = {q.name: _operand(q.shown) for q in step.inputs}
    return _substitute(expression, names), _substitute(expression, numbers)


def _substitute(expression: str, names: Mapping[str, str]) -> str:
    """`expression` with whole names replaced (as tokens, not inside other names)."""
    pattern = re.compile(
        r"(?<![\w.@])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?![\w.@])"
    )
    return pattern.sub(lambda m: names[m.group(1)], expression) if names else expression


def _operand(value: Any) -> str:
    """A number as an operand in a product: negative ones in parentheses."""
    text = number_text(value)
    return f"({text})" if text.startswith("-") else text


def number_text(value: Any) -> str:
    """A scalar in full (to the digits rounding leaves alone, as `graphc run`
    prints it); a tensor by its shape and its first few entries."""
    array = np.asarray(value)
    dtype = _dtype(array)
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.ndim == 0:
        return _figure(array.item(), array.dtype, abs(float(array)), SCALAR_DIGITS)
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    flat = array.ravel()
    entries = [
        _figure(x.item(), array.dtype, scale, ENTRY_DIGITS) for x in flat[: FULL if flat.size <= FULL else ENTRIES]
    ]
    if flat.size > FULL:
        entries.append("...")
    return f"{dtype}{list(array.shape)} [{', '.join(entries)}]"


def _figure(x: Any, dtype: Any, scale: float, digits: int) -> str:
    if np.dtype(dtype).kind in "iub":
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return stable_number(x, rounding_error(dtype) * scale, digits)


def _dtype(array: np.ndarray) -> str:
    return {"float32": "f32", "float64": "f64", "int64": "i64", "bool": "bool"}.get(array.dtype.name, array.dtype.name)


# --- JSON -------------------------------------------------------------------------


def explanation_json(explanation: Explanation) -> dict[str, Any]:
    """The steps as data; each quantity's value as shown (the element `at` picks)."""
    return {
        "graph": explanation.graph,
        "seed": explanation.seed,
        "at": list(explanation.at) if explanation.at is not None else None,
        "steps": [
            {
                "phase": s.phase,
                "node": s.node,
                "op": s.op,
                "rule": s.rule,
                **({"product": s.product} if s.phase == "backward" else {}),
                "inputs": [q.name for q in s.inputs],
                "output": s.output.name,
                "values": {q.name: q.shown for q in (*s.inputs, s.output)},
            }
            for s in explanation.steps
        ],
    }

"""Stage 6: checked, typed graph -> forward and backward plans.

A plan is data: a list of forward steps in topological order (ties broken
by source order) and a list of backward steps in reverse, each naming its
local rule, which gradients it writes or adds into (fan-out), and what it
reads from the forward pass. Backward is pruned to the steps that lie between
the seed output and a value whose gradient is wanted.

The plan also records liveness: after which step each forward value is dead,
so the interpreter can let go of it; and which steps' saved tensors backward
uses at all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from graphc._gc import gc_paused
from graphc.check import CheckedGraph
from graphc.ir import ConstDecl, InputDecl, OpNode, ParamDecl, TensorType
from graphc.ops import MODES, Op

# Where a run's random generator sits in the interpreter's environment: a
# name no value can have. Ops that draw (dropout) read it after their state.
RNG = "<rng>"


def grad_name(value: str) -> str:
    return f"d_{value}"


@dataclass(frozen=True, eq=False)
class ForwardStep:
    out: str
    op: Op
    args: tuple[str, ...]
    attrs: dict[str, Any]
    taped: bool  # backward uses this step: keep what its forward saves
    saves: tuple[str, ...]  # what backward reads from this step, by name
    frees: tuple[str, ...]  # forward values no later step reads
    state: tuple[str, ...] = ()  # its op's state by plan name (bn1.running_mean), read and, training, updated

    @property
    def arguments(self) -> tuple[str, ...]:
        """What its compiled forward takes from the environment: operands, state, the generator."""
        return self.args + self.state + ((RNG,) if self.op.random else ())

    def text(self) -> str:
        attrs = "".join(f", {k}={v}" for k, v in self.attrs.items() if v != self.op.attributes[k].default)
        return f"{self.out} = {self.op.name}({', '.join(self.args)}{attrs})"

    def own_saves(self) -> tuple[tuple[str, str], ...]:
        """The op's own tensors this step saves (relu's mask), as
        (plan name, the op's name for it): ("relu1.mask", "mask")."""
        prefix = self.out + "."
        # Not an operand named inside the block instance this step's value names (y.square1 for y).
        return tuple(
            (item, item[len(prefix) :])
            for item in self.saves
            if item.startswith(prefix) and item[len(prefix) :] in self.op.own
        )


@dataclass(frozen=True, eq=False)
class GradWrite:
    """One operand's gradient from one backward step."""

    operand: int
    target: str  # the gradient written, e.g. d_apple
    accumulate: bool  # add into a gradient a later consumer already wrote
    in_place: bool  # ... and that gradient is a buffer of the plan's own, safe to add into
    reads: tuple[str, ...]  # forward values and saved tensors it reads
    render_rule: Callable[[], str] = field(repr=False)

    @functools.cached_property
    def rule(self) -> str:
        """The local rule as people read it, e.g. d_price * tax. Rendered when first read:
        most plans are run and never printed (a quarter of planning a large graph)."""
        return self.render_rule()


@dataclass(frozen=True, eq=False)
class BackwardStep:
    node: str  # the forward node whose local rules this applies
    forward_index: int  # its step in the forward plan, whose saved tensors (and attributes) it reads
    op: Op
    dout: str  # the incoming gradient, e.g. d_price
    needs: tuple[bool, ...]  # which operands get a gradient
    writes: tuple[GradWrite, ...]
    frees: tuple[str, ...]  # gradients dead after this step


@dataclass(frozen=True, eq=False)
class Plan:
    graph: str
    types: dict[str, TensorType]
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    consts: tuple[str, ...]
    outputs: tuple[str, ...]
    forward: tuple[ForwardStep, ...]
    seed: str | None  # the output backward starts from; None for a forward-only plan
    backward: tuple[BackwardStep, ...] = ()
    wrt: tuple[str, ...] = ()  # values whose gradients the plan returns
    # Values wanted gradients that nothing differentiable connects to the seed.
    disconnected: tuple[str, ...] = ()
    mode: str = "train"  # "train" or "eval": how dropout and batchnorm behave (see graphc.ops.MODES)

    @functools.cached_property
    def gradients(self) -> tuple[str, ...]:
        """The gradients backward computes of the values in `wrt` (d_x), in order."""
        written = {w.target for step in self.backward for w in step.writes}
        if self.seed is not None:
            written.add(grad_name(self.seed))
        return tuple(grad_name(w) for w in self.wrt if w not in self.disconnected and grad_name(w) in written)

    def text(self) -> str:
        from graphc.emit import plan_text  # the printer lives with the other emitters

        return plan_text(self)


@gc_paused
def make_plan(
    checked: CheckedGraph,
    types: dict[str, TensorType],
    wrt: Iterable[str] | None = None,
    seed: str | None = None,
    keep: Iterable[str] = (),
    mode: str = "train",
) -> Plan:
    """Forward everything, backward from `seed` to `wrt`: the training plan,
    or in mode "eval" the same pass as a prediction makes it.

    wrt defaults to every input and param; seed to the first output. `keep`
    names forward values the caller wants after the pass (outputs always are).
    """
    assert mode in MODES, mode
    ir = checked.ir
    seed = seed or checked.output
    keep = tuple(keep)  # read twice below
    inputs, params = _declared(checked, InputDecl), _declared(checked, ParamDecl)
    wanted = tuple(wrt) if wrt is not None else inputs + params
    nodes = [n for n in checked.order if isinstance(ir.decls[n], OpNode)]
    # A gradient the caller gets back stays; any other dies with the step that reads it.
    kept_grads = {grad_name(w) for w in wanted} | {grad_name(k) for k in keep}
    backward = _backward_steps(ir.decls, nodes, _live(ir.decls, nodes, seed, wanted), types, kept_grads, mode)
    outputs = tuple(n for n, _ in ir.outputs)
    forward = _forward_steps(checked, nodes, {step.forward_index for step in backward}, set(outputs) | set(keep), mode)
    return Plan(
        ir.name,
        types,
        inputs,
        params,
        _declared(checked, ConstDecl),
        outputs,
        forward,
        seed,
        backward,
        wanted,
        _disconnected(checked, seed, wanted),
        mode,
    )


def _declared(checked: CheckedGraph, kind: type) -> tuple[str, ...]:
    """The inputs, params or consts, in the graph's order."""
    return tuple(n for n in checked.order if isinstance(checked.ir.decls[n], kind))


@functools.cache
def _flows(op: Op) -> tuple[bool, ...]:
    """Which operands a gradient flows into: those with a rule (not labels)."""
    return tuple(map(op.differentiable, range(len(op.operands))))


def _live(decls: dict[str, Any], nodes: list[str], seed: str, wanted: tuple[str, ...]) -> set[str]:
    """The values backward goes through: those that carry a gradient to the
    seed and depend on a wanted value."""
    reaches: set[str] = {seed}
    for name in reversed(nodes):  # every reader of a value comes after it
        if name in reaches:
            node = decls[name]
            reaches.update(arg for arg, f in zip(node.args, _flows(node.op)) if f)
    depends: set[str] = set(wanted)
    for name in nodes:
        node = decls[name]
        if any(f and arg in depends for arg, f in zip(node.args, _flows(node.op))):
            depends.add(name)
    return reaches & depends


def _backward_steps(
    decls: dict[str, Any],
    nodes: list[str],
    live: set[str],
    types: dict[str, TensorType],
    kept_grads: set[str],
    mode: str,
) -> tuple[BackwardStep, ...]:
    """One step per live node, in reverse order, writing the gradients its live operands need."""
    steps: list[BackwardStep] = []
    # Gradient -> whether its buffer is the plan's own (a fresh array no one
    # else holds), so that fan-out contributions can be added into it in place.
    written: dict[str, bool] = {}
    for index in reversed(range(len(nodes))):
        name = nodes[index]
        if name not in live:
            continue
        node = decls[name]
        needs = tuple(f and arg in live for arg, f in zip(node.args, _flows(node.op)))
        if not any(needs):
            continue
        writes = _writes(node, name, needs, types, written, mode)
        dout = grad_name(name)
        frees = () if dout in kept_grads else (dout,)
        steps.append(BackwardStep(name, index, node.op, dout, needs, writes, frees))
    return tuple(steps)


def _writes(
    node: OpNode,
    name: str,
    needs: tuple[bool, ...],
    types: dict[str, TensorType],
    written: dict[str, bool],
    mode: str,
) -> tuple[GradWrite, ...]:
    """The gradient writes of one backward step, each with its rule as people read it."""
    writes = []
    for i, arg in enumerate(node.args):
        if not needs[i]:
            continue
        reads = tuple(_saved_name(node, name, item) for item in node.op.reads(i, node.attrs, mode))
        target = grad_name(arg)
        accumulate = target in written
        rule = functools.partial(_rule_text, node, name, i, types, mode)
        writes.append(GradWrite(i, target, accumulate, accumulate and written[target], reads, rule))
        written[target] = accumulate or node.op.operands[i] not in node.op.passes_gradient_through
    return tuple(writes)


def _disconnected(checked: CheckedGraph, seed: str, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """Wanted values with no path at all to the seed: their gradient is zero.

    A value read only as labels has none, wherever its readers lead, and
    one whose paths to the seed all go through labels has none either."""
    upstream = checked.ancestors(seed)
    return tuple(w for w in wanted if w != seed and w not in upstream and not checked.read_as_labels(w))


@gc_paused
def make_inference_plan(
    checked: CheckedGraph, types: dict[str, TensorType], targets: Iterable[str], mode: str = "eval"
) -> Plan:
    """Forward only, just the steps the targets need, nothing saved for backward:
    a prediction (mode "eval"), or a training forward's loss (gradcheck's differences)."""
    assert mode in MODES, mode
    targets = tuple(targets)
    needed = set(targets) | checked.ancestors(*targets)
    decls = checked.ir.decls
    nodes = [n for n in checked.order if n in needed and isinstance(decls[n], OpNode)]
    ir = checked.ir
    return Plan(
        ir.name,
        types,
        tuple(n for n in checked.order if n in needed and isinstance(decls[n], InputDecl)),
        tuple(n for n in checked.order if n in needed and isinstance(decls[n], ParamDecl)),
        tuple(n for n in checked.order if n in needed and isinstance(decls[n], ConstDecl)),
        targets,
        _forward_steps(checked, nodes, set(), set(targets), mode),
        None,
        mode=mode,
    )


def _forward_steps(
    checked: CheckedGraph, nodes: list[str], used_saves: set[int], keep: set[str], mode: str
) -> tuple[ForwardStep, ...]:
    decls = [_op_node(checked.ir.decls, name) for name in nodes]
    last_read: dict[str, int] = {}
    for i, node in enumerate(decls):
        for arg in node.args:
            last_read[arg] = i
    frees: dict[int, list[str]] = {}
    for i, name in enumerate(nodes):
        # An op value nobody reads later is dropped after its last reader (or
        # at once); backward keeps what it needs through the saved tensors.
        if name in keep:
            continue
        frees.setdefault(last_read.get(name, i), []).append(name)
    steps = []
    for i, (name, node) in enumerate(zip(nodes, decls)):
        taped = i in used_saves
        saves = tuple(dict.fromkeys(_saved_name(node, name, item) for item in node.op.saves_in(mode))) if taped else ()
        state = tuple(f"{name}.{item}" for item in node.op.state)
        steps.append(ForwardStep(name, node.op, node.args, node.attrs, taped, saves, tuple(frees.get(i, ())), state))
    return tuple(steps)


def shared_gradients(plan: Plan) -> tuple[str, ...]:
    """Returned gradients that may be the very array of another returned
    gradient, or of the seed, so a caller must get them as copies.

    `add` hands its incoming gradient to both operands unchanged (and
    `affine` to a bias as large as its output); the plan then adds into such
    a gradient only by making a fresh sum. Two params summed into one value
    would otherwise get back one array, and an optimizer updating one
    gradient in place would change the other.
    """
    if plan.seed is None:
        return ()
    seed = grad_name(plan.seed)
    array = {seed: seed}  # gradient -> the gradient whose write made its array
    for step in plan.backward:
        for w in step.writes:
            if w.accumulate:
                if not w.in_place:
                    array[w.target] = w.target  # a fresh sum
            elif step.op.operands[w.operand] in step.op.passes_gradient_through:
                array[w.target] = array[step.dout]
            else:
                array[w.target] = w.target
    shared, owners = [], {seed}
    for name in plan.wrt:
        target = grad_name(name)
        if target in array:
            if array[target] in owners:
                shared.append(target)
            owners.add(array[target])
    return tuple(shared)


def _op_node(decls: dict[str, Any], name: str) -> OpNode:
    node = decls[name]
    assert isinstance(node, OpNode), name
    return node


def _rule_text(node: OpNode, name: str, operand: int, types: dict[str, TensorType], mode: str) -> str:
    return node.op.rule(operand, _rule_names(node, name, mode), node.attrs, _local_types(node, name, types), mode)


def _rule_names(node: OpNode, name: str, mode: str) -> dict[str, str]:
    """What a rule's text names: the operands, dout, out and the op's own tensors (relu1.mask)."""
    names = {item: _saved_name(node, name, item) for item in node.op.saves_in(mode)}
    names.update(zip(node.op.operands, node.args))
    names["dout"] = grad_name(name)  # `out` is among the saves of a rule that reads it
    return names


def _local_types(node: OpNode, name: str, types: dict[str, TensorType]) -> dict[str, TensorType]:
    """The types of the op's own names for this node: its operands and "out"."""
    local = {operand: types[arg] for operand, arg in zip(node.op.operands, node.args)}
    local["out"] = types[name]
    return local


def _saved_name(node: OpNode, name: str, item: str) -> str:
    if item == "out":
        return name
    if item in node.op.operands:
        return node.args[node.op.operands.index(item)]
    return f"{name}.{item}"

"""Memory planning: what one training step holds, step by step, in bytes.

The plan already says when each array may go: a forward value after its last
reader (unless backward saved it), a step's saved tensors after its backward
step, a gradient after the step that reads it. This module walks the plan
with the sizes of a concrete batch and predicts what the interpreter holds
after each step has stored its results and before it lets anything go:
params, inputs and consts throughout, live forward values, saved tensors
(relu's mask is bool, one byte a value), and live gradients. An array two
names share (add hands its gradient to both operands unchanged, a saved
operand is the input itself) counts once. The peak of those is the step's
high-water mark; scratch arrays inside an op's kernel are not counted, nor
scalar literals (`mul(x, 0.5)`), which are Python floats, not arrays.

    memory = predict_memory(plan, {"N": 100})
    memory.peak          # bytes
    memory_text(memory)  # the table `graphc compile --emit plan --batch 100` prints
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphc.errors import GraphcError
from graphc.ir import GraphIR, TensorType
from graphc.plan import ForwardStep, Plan, grad_name

if TYPE_CHECKING:
    pass

ITEMSIZE = {"f32": 4, "f64": 8, "i64": 8, "bool": 1}


@dataclass(frozen=True)
class StepMemory:
    phase: str  # "forward" or "backward"
    number: int  # the forward step's number, 1-based, as the plan text shows it
    label: str  # the step, e.g. `relu1 = relu(affine1)` or `relu`
    made: tuple[tuple[str, int], ...]  # arrays the step makes, with their bytes
    frees: tuple[tuple[str, int], ...]  # arrays that die after it
    held: int  # bytes held at the step's high-water mark
    shares: tuple[tuple[str, str], ...] = ()  # (gradient, gradient whose array it is)


@dataclass(frozen=True)
class MemoryPlan:
    graph: str
    dims: dict[str, int]
    params: int  # bytes, held throughout
    inputs: int
    consts: int
    steps: tuple[StepMemory, ...]

    @property
    def peak(self) -> int:
        return max((s.held for s in self.steps), default=self.params + self.inputs + self.consts)

    @property
    def peak_step(self) -> StepMemory | None:
        return max(self.steps, key=lambda s: s.held, default=None)


def _shape(plan: Plan, name: str) -> tuple[int | str, ...]:
    return plan.types[name].shape if name in plan.types else ()


def bind_dims(plan: Plan, ir: GraphIR, batch: int | None) -> dict[str, int]:
    """Sizes for the plan's symbolic dims: the batch for each input's leading
    symbolic dim, the graph's `dim` declarations for the rest."""
    dims = dict(ir.dims)
    if batch is not None:
        for name in plan.inputs:
            shape = plan.types[name].shape
            if shape and isinstance(shape[0], str):
                dims[shape[0]] = batch
    unbound = sorted({d for t in plan.types.values() for d in t.shape if isinstance(d, str)} - set(dims))
    if unbound:
        # Shown where the first value declared with it is (inputs and params carry their dims).
        user = next((d for d in ir.decls.values() if unbound[0] in _shape(plan, d.name)), None)
        raise GraphcError(
            f"dim `{unbound[0]}` has no size",
            user.span if user is not None else ir.span,
            hint=(
                f"give the batch size with --batch, or declare `dim {unbound[0]} = SIZE` in the graph"
                if batch is None
                else f"declare `dim {unbound[0]} = SIZE` in the graph"
            ),
            code="E208",
        )
    return dims


class _Sizes:
    """Bytes of every value, gradient and saved tensor, at concrete dims."""

    def __init__(self, plan: Plan, dims: Mapping[str, int]):
        self.plan = plan
        self.dims = dims

    def shape(self, t: TensorType) -> tuple[int, ...]:
        return tuple(self.dims[d] if isinstance(d, str) else d for d in t.shape)

    def nbytes(self, t: TensorType) -> int:
        if t.dtype is None and not t.shape:
            return 0  # a scalar literal: a Python float at run time, no array
        count = 1
        for d in self.shape(t):
            count *= d
        return count * ITEMSIZE[t.dtype or "f64"]

    def value(self, name: str) -> int:
        """A value's bytes; its gradient's are the same (only floats get one)."""
        return self.nbytes(self.plan.types[name])


class _Heap:
    """Arrays alive, with reference counts (a name, a tape entry, a gradient)."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = {}
        self.refs: dict[str, int] = {}
        self.total = 0
        self.died: list[tuple[str, int]] = []

    def make(self, key: str, nbytes: int) -> None:
        self.bytes[key] = nbytes
        self.refs[key] = 1
        self.total += nbytes

    def hold(self, key: str) -> None:
        self.refs[key] += 1

    def drop(self, key: str) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            nbytes = self.bytes.pop(key)
            del self.refs[key]
            self.total -= nbytes
            self.died.append((_shown(key), nbytes))

    def freed(self) -> tuple[tuple[str, int], ...]:
        died, self.died = tuple(self.died), []
        return died


def _shown(key: str) -> str:
    return key.split("#", 1)[0]  # gradient arrays are keyed d_x#2 when remade


def predict_memory(plan: Plan, dims: Mapping[str, int]) -> MemoryPlan:
    """Bytes held after each forward and backward step of `plan`, at `dims`."""
    sizes = _Sizes(plan, dims)
    heap = _Heap()
    env: dict[str, str] = {}  # value name -> its array
    for name in plan.inputs + plan.params + plan.consts:
        env[name] = name
        heap.make(name, sizes.value(name))
    for step in plan.forward:  # the ops' state (running statistics), held throughout like the params
        for name, like in zip(step.state, step.op.state.values()):
            heap.make(name, sizes.value(step.args[step.op.operands.index(like)]))
    steps: list[StepMemory] = []
    tape: dict[int, tuple[str, ...]] = {}
    for i, step in enumerate(plan.forward):
        heap.make(step.out, sizes.value(step.out))
        env[step.out] = step.out
        made = [(step.out, sizes.value(step.out))]
        if step.taped:
            own = dict(step.own_saves())
            keys = []
            for item in step.saves:
                if item in own:  # a tensor of the op's own
                    key = item
                    nbytes = _own_bytes(plan, sizes, step, own[item])
                    heap.make(key, nbytes)
                    made.append((item, nbytes))
                else:  # an operand or the output itself
                    key = env[item]
                    heap.hold(key)
                keys.append(key)
            tape[i] = tuple(keys)
        held = heap.total
        for name in step.frees:
            heap.drop(env.pop(name))
        steps.append(StepMemory("forward", i + 1, step.text(), tuple(made), heap.freed(), held))

    if plan.seed is not None and plan.backward:
        grads: dict[str, str] = {}
        seed = grad_name(plan.seed)
        grads[seed] = seed
        heap.make(seed, sizes.value(plan.seed))
        remade: dict[str, int] = {}
        for back in plan.backward:
            made, shares = [], []
            node_shape = sizes.shape(plan.types[back.node])
            for w in back.writes:
                arg = plan.forward[back.forward_index].args[w.operand]
                nbytes = sizes.value(arg)
                passes = back.op.operands[w.operand] in back.op.passes_gradient_through
                if not w.accumulate and passes and sizes.shape(plan.types[arg]) == node_shape:
                    grads[w.target] = grads[back.dout]  # the very array of dout
                    heap.hold(grads[w.target])
                    shares.append((w.target, back.dout))
                    continue
                if w.accumulate and w.in_place:
                    continue  # added into its own buffer
                remade[w.target] = remade.get(w.target, 0) + 1
                key = w.target if remade[w.target] == 1 else f"{w.target}#{remade[w.target]}"
                heap.make(key, nbytes)
                made.append((w.target, nbytes))
                if w.accumulate:
                    heap.drop(grads[w.target])  # the old sum, replaced by a fresh one
                grads[w.target] = key
            held = heap.total
            for key in tape.pop(back.forward_index, ()):
                heap.drop(key)
            for name in back.frees:
                heap.drop(grads.pop(name))
            number = back.forward_index + 1
            steps.append(StepMemory("backward", number, back.op.name, tuple(made), heap.freed(), held, tuple(shares)))

    def total(names: tuple[str, ...]) -> int:
        return sum(sizes.value(n) for n in names)

    return MemoryPlan(plan.graph, dict(dims), total(plan.params), total(plan.inputs), total(plan.consts), tuple(steps))


def _own_bytes(plan: Plan, sizes: _Sizes, step: ForwardStep, own: str) -> int:
    """Bytes of the op's own tensor `own` (relu's "mask")."""
    types = dict(zip(step.op.operands, (plan.types[a] for a in step.args)))
    types["out"] = plan.types[step.out]
    return sizes.nbytes(step.op.own_tensor_type(own, types))


# --- printing ------------------------------------------------------------------


def fmt_bytes(n: int) -> str:
    """1536 -> `1.5 KiB`; whole bytes below a KiB."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
    raise AssertionError


def _items(items: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{name} {fmt_bytes(n)}" for name, n in items) or "-"


def memory_text(memory: MemoryPlan) -> str:
    """The memory section of `graphc compile --emit plan --batch B`."""
    dims = ", ".join(f"{k} = {v}" for k, v in sorted(memory.dims.items()))
    lines = [
        f"memory of one step{' at ' + dims if dims else ''}: what is held once each step has run, "
        "before it frees anything",
        f"  params {fmt_bytes(memory.params)}, inputs {fmt_bytes(memory.inputs)}"
        + (f", consts {fmt_bytes(memory.consts)}" if memory.consts else "")
        + " throughout; a bool mask is 1 byte a value",
    ]
    rows: list[tuple[str, ...]] = [("", "step", "holds", "makes", "frees")]
    phase = None
    for s in memory.steps:
        if s.phase != phase:
            phase = s.phase
            rows.append((phase,))
        makes = [_items(s.made)] if s.made else []
        makes += [f"{a} is {b}" for a, b in s.shares]
        rows.append((str(s.number), s.label, fmt_bytes(s.held), ", ".join(makes) or "-", _items(s.frees)))
    table = [r for r in rows if len(r) > 1]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for row in rows:
        if len(row) == 1:
            lines.append("  " + row[0])
            continue
        cells = [
            row[0].rjust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        lines.append(("    " + "  ".join(cells)).rstrip())
    peak = memory.peak_step
    where = f", after {peak.phase} step {peak.number} ({peak.label})" if peak else ""
    lines.append(f"  peak {fmt_bytes(memory.peak)} ({memory.peak:,} bytes){where}")
    return "\n".join(lines) + "\n"


def memory_json(memory: MemoryPlan) -> dict[str, Any]:
    return {
        "dims": memory.dims,
        "params": memory.params,
        "inputs": memory.inputs,
        "consts": memory.consts,
        "peak": memory.peak,
        "steps": [
            {
                "phase": s.phase,
                "step": s.number,
                "label": s.label,
                "makes": [{"name": n, "bytes": b} for n, b in s.made],
                "frees": [{"name": n, "bytes": b} for n, b in s.frees],
                "shares": [{"name": a, "array_of": b} for a, b in s.shares],
                "held": s.held,
            }
            for s in memory.steps
        ],
    }

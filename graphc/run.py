"""Stage 7: the interpreter. Runs a plan's steps over numpy arrays.

One environment (a dict from value name to array) is read and written by
both passes. Forward keeps each step's saved tensors on a tape when backward
will need them; backward walks its steps, reading the tape and writing
gradients, adding into a gradient where several consumers contribute.
Each step runs its op's formulas compiled for the step's types (graphc.ops:
the source `--emit python` writes for it), and steps are flattened into
tuples once, so the loops do no attribute lookups.

With free=True nothing dead is held: a forward value goes when its last
reader has run (what backward needs lives on in the tape), a step's saved
tensors go when its backward step has run, and a gradient when the step that
reads it has. The loops keep no array in a local variable from one step to
the next.

State (batchnorm's running statistics) and the run's random generator are
in the environment too, under their plan names and plan.RNG: a step reads
them after its operands, and a training step updates its state in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.ops import StepCode
from graphc.plan import ForwardStep, Plan, grad_name, shared_gradients

if TYPE_CHECKING:
    from graphc.program import Program

# observe(pass, step index, *containers): called once a step's results are
# stored and before anything it frees is let go: forward passes (env, tape),
# backward (tape, grads). For measuring what a pass holds, step by step.
Observer = Callable[..., None]
# wrap(pass, step, function) -> function: replaces a step's op call, e.g. to
# time it. Applied once, when the interpreter is built. A step's function is
# forward(*operands) -> (out, saved) or backward(saved, dout) -> gradients
# (see graphc.ops.StepCode).
Wrapper = Callable[[str, object, Callable], Callable]


class Interpreter:
    def __init__(self, plan: Plan, free: bool = True, *, observe: Observer | None = None, wrap: Wrapper | None = None):
        """free=False keeps every value and gradient (for printing and drawing)."""
        self.plan = plan
        self.observe = observe
        wrap = wrap or (lambda kind, step, function: function)
        self._forward = [
            (
                wrap("forward", step, _step_code(plan, step, step.taped).forward),
                step.arguments,
                step.out,
                step.taped,
                step.frees if free else (),
            )
            for step in plan.forward
        ]
        self._backward = [
            (
                wrap("backward", step, _step_code(plan, plan.forward[step.forward_index], True, step.needs).backward),
                step.forward_index,
                step.dout,
                tuple((w.operand, w.target, w.accumulate, w.in_place) for w in step.writes),
                step.frees if free else (),
            )
            for step in plan.backward
        ]
        self._shared = shared_gradients(plan)

    def forward(self, env: dict[str, np.ndarray]) -> list:
        """Run forward in `env`; returns the tape of saved tensors."""
        tape: list = [None] * len(self._forward)
        observe = self.observe
        for i, (forward, args, out, keep, frees) in enumerate(self._forward):
            env[out], saved = forward(*[env[a] for a in args])
            if keep:
                tape[i] = saved
            saved = None  # an untaped step's saved tensors die here
            if observe is not None:
                observe("forward", i, env, tape)
            for name in frees:
                del env[name]
        return tape

    def backward(self, tape: list, seed: np.ndarray) -> dict[str, np.ndarray]:
        """Run backward from `seed`; returns gradients by name (d_x).

        No two gradients returned are one array, and none is the seed.
        """
        assert self.plan.seed is not None, "a forward-only plan has no backward"
        grads: dict[str, np.ndarray] = {grad_name(self.plan.seed): seed}
        observe = self.observe
        for j, (backward, index, dout, writes, frees) in enumerate(self._backward):
            results = backward(tape[index], grads[dout])
            for operand, target, accumulate, in_place in writes:
                if not accumulate:
                    grads[target] = results[operand]
                elif in_place and isinstance(grads[target], np.ndarray):
                    grads[target] += results[operand]
                else:
                    grads[target] = grads[target] + results[operand]  # never into a shared array
            results = None
            if observe is not None:
                observe("backward", j, tape, grads)
            tape[index] = None  # this step's saved tensors are dead now
            for name in frees:
                del grads[name]
        for name in self._shared:
            if name in grads:
                grads[name] = np.copy(grads[name])
        return grads


def _step_code(plan: Plan, step: ForwardStep, taped: bool, needs: tuple[bool, ...] | None = None) -> StepCode:
    """The step's functions, compiled from its op's formulas at the plan's types:
    the very source the code generator writes for it."""
    types = {operand: plan.types[arg] for operand, arg in zip(step.op.operands, step.args)}
    types["out"] = plan.types[step.out]
    return step.op.compile(step.attrs, types, taped=taped, needs=needs, mode=plan.mode)


@dataclass(frozen=True)
class Replay:
    """What the interpreter computed in a program's last run, step by step, that
    the run itself does not keep (it frees, and sums fan-out as it goes)."""

    saved: dict[int, dict[str, np.ndarray]]  # forward step -> what it saved, by the op's names for it
    douts: dict[int, np.ndarray]  # backward step -> the gradient it received
    shares: dict[tuple[str, int], np.ndarray]  # (reader, position) -> what its backward step handed that operand

    def own(self, plan: Plan) -> dict[str, np.ndarray]:
        """The ops' own saved tensors (relu1.mask), by plan name."""
        return {
            name: self.saved[i][item]
            for i, step in enumerate(plan.forward)
            if i in self.saved
            for name, item in step.own_saves()
        }


def replay(program: Program) -> Replay:
    """The program's last run again, through the interpreter, from its values and
    with its seed (the same masks, copies of the state), keeping copies of what
    each forward step saves, what each backward step receives, and what it hands
    each operand before fan-out sums it: what `graphc explain`, the step-through
    page and the diagrams' per-edge gradients show."""
    plan = program.plan
    saved: dict[int, dict[str, np.ndarray]] = {}
    douts: dict[int, np.ndarray] = {}
    shares: dict[tuple[str, int], np.ndarray] = {}
    forward_index = {id(step): i for i, step in enumerate(plan.forward)}
    backward_index = {step.node: j for j, step in enumerate(plan.backward)}

    def keep(kind: str, step: Any, function: Callable) -> Callable:
        if kind == "forward":
            i = forward_index[id(step)]

            def forward(*arguments: Any) -> tuple[Any, Any]:
                out, kept = function(*arguments)
                if kept:
                    items = step.op.saves_in(plan.mode)
                    saved[i] = {item: np.array(value, copy=True) for item, value in zip(items, kept)}
                return out, kept

            return forward

        def backward(kept: Any, dout: Any) -> tuple:
            douts[backward_index[step.node]] = np.array(dout, copy=True)
            results = function(kept, dout)
            for position, grad in enumerate(results):
                if step.needs[position] and grad is not None:
                    # A copy: fan-out may add the next share into this very array.
                    shares[(step.node, position)] = np.array(grad, copy=True)
            return results

        return backward

    assert plan.seed is not None  # a Program's plan goes backward from its output
    interpreter = Interpreter(plan, free=False, wrap=keep)
    env = dict(program.values)
    env.update(program.replay())  # the run's masks, and copies of the state to update
    with np.errstate(all="ignore"):
        interpreter.backward(interpreter.forward(env), np.array(program.gradients[plan.seed], copy=True))
    return Replay(saved, douts, shares)

"""Stage 7: the interpreter. Runs a plan's steps over numpy arrays.

One environment (a dict from value name to array) is read and written by
both passes. Forward keeps each step's saved tensors on a tape when backward
will need them; backward walks its steps, reading the tape and writing
gradients, adding into a gradient where several consumers contribute.
Steps are flattened into tuples once, so the loops do no attribute lookups.
"""

from __future__ import annotations

import numpy as np

from graphc.plan import Plan, grad_name


class Interpreter:
    def __init__(self, plan: Plan, free: bool = True):
        """free=False keeps every value and gradient (for printing and drawing)."""
        self.plan = plan
        self._forward = [
            (step.op.forward, step.attrs, step.args, step.out, step.taped, step.frees if free else ())
            for step in plan.forward
        ]
        self._backward = [
            (
                step.op.backward, step.attrs, step.forward_index, step.dout, step.needs,
                tuple((w.operand, w.target, w.accumulate, w.in_place) for w in step.writes),
                step.frees if free else (),
            )
            for step in plan.backward
        ]

    def forward(self, env: dict[str, np.ndarray]) -> list:
        """Run forward in `env`; returns the tape of saved tensors."""
        tape: list = [None] * len(self._forward)
        for i, (forward, attrs, args, out, keep, frees) in enumerate(self._forward):
            value, saved = forward(attrs, *[env[a] for a in args])
            env[out] = value
            if keep:
                tape[i] = saved
            for name in frees:
                del env[name]
        return tape

    def backward(self, tape: list, seed: np.ndarray) -> dict[str, np.ndarray]:
        """Run backward from `seed`; returns gradients by name (d_x)."""
        grads: dict[str, np.ndarray] = {grad_name(self.plan.seed): seed}
        for backward, attrs, index, dout, needs, writes, frees in self._backward:
            results = backward(attrs, tape[index], grads[dout], needs)
            tape[index] = None  # this step's saved tensors are dead now
            for operand, target, accumulate, in_place in writes:
                grad = results[operand]
                if not accumulate:
                    grads[target] = grad
                elif in_place and isinstance(grads[target], np.ndarray):
                    grads[target] += grad
                else:
                    grads[target] = grads[target] + grad  # never into a shared array
            for name in frees:
                del grads[name]
        return grads

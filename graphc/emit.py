"""Printers for plans: readable text and JSON.

Both read only the plan (and the types it carries).
"""

from __future__ import annotations

from typing import Any

from graphc.plan import Plan, grad_name


def _columns(rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def plan_text(plan: Plan) -> str:
    lines = [f"graph {plan.graph}", ""]
    lines.append(f"forward ({_steps(len(plan.forward))}{f', {plan.mode} mode' if _modal(plan) else ''})")
    rows: list[tuple[str, ...]] = []
    for i, step in enumerate(plan.forward, 1):
        saves = f"saves {', '.join(step.saves)}" if step.saves else ""
        frees = f"frees {', '.join(step.frees)}" if step.frees else ""
        updates = f"updates {', '.join(step.state)}" if step.state and plan.mode == "train" else ""
        rows.append((f"{i}", step.text(), str(plan.types[step.out]), saves, frees, updates))
    lines += _columns(rows)
    if plan.seed is None:
        return "\n".join(lines) + "\n"
    lines.append("")
    lines.append(f"backward from {plan.seed} ({_steps(len(plan.backward))}, seeded with {grad_name(plan.seed)} = 1)")
    rows = []
    numbers = {step.out: i for i, step in enumerate(plan.forward, 1)}
    for backward_step in plan.backward:
        for j, write in enumerate(backward_step.writes):
            assign = "+=" if write.accumulate else "="
            reads = f"reads {', '.join(write.reads)}" if write.reads else ""
            head = (f"{numbers[backward_step.node]}", backward_step.op.name) if j == 0 else ("", "")
            rows.append((*head, f"{write.target} {assign} {write.rule}", reads))
    lines += _columns(rows)
    lines.append("")
    lines.append("gradients: " + (", ".join(plan.gradients) or "none"))
    zero = [grad_name(w) for w in plan.disconnected]
    if zero:
        lines.append("zero (no path to the output): " + ", ".join(zero))
    return "\n".join(lines) + "\n"


def _modal(plan: Plan) -> bool:
    """Whether the plan's mode changes what a step does (dropout, batchnorm): then plans say which it is."""
    return any(s.op.eval_computes is not None or s.state for s in plan.forward)


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def plan_json(plan: Plan) -> dict[str, Any]:
    """A machine-readable plan; the shape of this dict is documented in the README."""
    return {
        "graph": plan.graph,
        **({"mode": plan.mode} if _modal(plan) else {}),
        "inputs": [{"name": n, "type": str(plan.types[n])} for n in plan.inputs],
        "params": [{"name": n, "type": str(plan.types[n])} for n in plan.params],
        "outputs": list(plan.outputs),
        "forward": [
            {
                "out": s.out,
                "op": s.op.name,
                "args": list(s.args),
                "attrs": dict(s.attrs),
                "type": str(plan.types[s.out]),
                "saves": list(s.saves),
                "frees": list(s.frees),
                **({"state": list(s.state), "updates": plan.mode == "train"} if s.state else {}),
            }
            for s in plan.forward
        ],
        "backward": {
            "seed": plan.seed,
            "steps": [
                {
                    "node": s.node,
                    "op": s.op.name,
                    "dout": s.dout,
                    "grads": [
                        {"target": w.target, "accumulate": w.accumulate, "rule": w.rule, "reads": list(w.reads)}
                        for w in s.writes
                    ],
                }
                for s in plan.backward
            ],
            "gradients": list(plan.gradients),
        },
    }

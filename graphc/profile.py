"""Per-node timing of a training step: where the time goes.

    profile = profile_graph(compiled, batch=100, iters=50)
    print(profile_text(profile))

Runs the program's lean training plan (forward, then backward to every
param) on made-up inputs of the batch size asked for: an input with a value
in the graph keeps it; the others are made up as the Program makes them up,
from their initializers, else random values of their declared type (one-hot
rows, or class indices, for labels).
Each op call is timed with time.perf_counter over `iters` iterations after
`warmup` ones, and averaged. The step is also timed whole, with nothing
instrumented: what that takes beyond the sum of the op calls is time outside
numpy's kernels, spent by the interpreter itself (looking up values, storing
results, summing fan-out gradients). The same step through the generated
module (graphc.codegen) is timed too, for comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.checkpoint import float_dtype_names
from graphc.compiler import CompiledGraph
from graphc.errors import GraphcError
from graphc.initializers import initialize
from graphc.ir import Initializer, TensorType
from graphc.memory import bind_dims
from graphc.plan import Plan
from graphc.program import Program
from graphc.run import Interpreter

DEFAULT_BATCH = 100


@dataclass(frozen=True)
class NodeTime:
    node: str
    op: str
    type: str  # its output, concrete: f64[100, 50]
    forward: float  # seconds per iteration
    backward: float  # 0 where backward does not run the node

    @property
    def total(self) -> float:
        return self.forward + self.backward


@dataclass(frozen=True)
class Profile:
    graph: str
    dims: dict[str, int]
    dtype: str  # float32 or float64
    wrt: tuple[str, ...]
    iters: int
    warmup: int
    nodes: tuple[NodeTime, ...]  # most expensive first
    total: float  # seconds per iteration of the plain interpreter, forward + backward
    codegen: float | None  # seconds per iteration of the generated module
    blas: str

    @property
    def in_ops(self) -> float:
        return sum(n.total for n in self.nodes)

    @property
    def overhead(self) -> float:
        """Seconds per iteration outside op calls (never below zero: timing noise)."""
        return max(self.total - self.in_ops, 0.0)

    @property
    def overhead_share(self) -> float:
        return self.overhead / self.total if self.total > 0 else 0.0


def blas_info() -> str:
    """numpy's BLAS and its threads, as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "unknown (install threadpoolctl to see it)"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "none found"
    parts = []
    for p in pools:
        arch = f" ({p['architecture']})" if p.get("architecture") else ""
        threads = p.get("num_threads")
        parts.append(
            f"{p.get('internal_api', '?')} {p.get('version', '')}{arch}, {threads} thread{'s' if threads != 1 else ''}"
        )
    return "; ".join(parts)


def made_up_inputs(
    program: Program, plan: Plan, batch: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Inputs for a timing run, checked with Program.feed, and the dim sizes they have.

    An input with a value in the graph keeps it; the others get `batch` rows
    (default: the rows of those values, else 100), made up from their
    initializers with the Program's own random stream (so at the graph's
    `dim` sizes they are the Program's made-up inputs), else as normal(1)
    floats; labels as one-hot rows, or class indices where declared i64.
    """
    decls = program.ir.decls
    defaults = program.default_feeds()
    bindings: dict[str, tuple[int, str]] = {}
    feeds: dict[str, np.ndarray] = {}
    for decl in program.ir.inputs():
        if decl.name in plan.inputs and decl.init is not None and decl.init.kind == "value":
            feeds[decl.name] = program.feed(decl.name, defaults[decl.name], bindings)
    dims = bind_dims(plan, program.ir, DEFAULT_BATCH if batch is None else batch)
    rows = {t.shape[0] for n in plan.inputs if (t := program.types[n]).shape and isinstance(t.shape[0], str)}
    for d, (size, name) in bindings.items():
        if d in rows and batch is not None and dims[d] != size:
            raise GraphcError(
                f"input `{name}` has a fixed value with {d} = {size}; --batch {batch} disagrees",
                decls[name].span,
                f"time it with `--batch {size}`, or without --batch",
                code="E206",
            )
        dims[d] = size

    def concrete(name: str) -> TensorType:
        t = program.types[name]
        return TensorType(t.dtype, tuple(dims[d] if isinstance(d, str) else d for d in t.shape))

    # The Program's stream for made-up inputs, drawn in declaration order as it draws them.
    rng = np.random.default_rng(np.random.SeedSequence(program.seed).spawn(2)[1])
    for decl in program.ir.inputs():
        if decl.init is not None and decl.init.kind != "value":
            value = initialize(decl.init, concrete(decl.name), rng)
            if decl.name in plan.inputs:
                feeds[decl.name] = program.feed(decl.name, value, bindings)
    for name in plan.inputs:
        if name in feeds:
            continue
        t, span = concrete(name), decls[name].span
        if name in program.checked.label_inputs and t.dtype == "i64":
            classes = _classes(program, plan, name, dims)
            feeds[name] = program.feed(name, rng.integers(0, classes, [int(d) for d in t.shape]), bindings)
            continue
        if name in program.checked.label_inputs:
            init = Initializer("onehot", (), None, span)
        elif t.dtype == "i64":
            init = Initializer("zeros", (), None, span)
        else:
            init = Initializer("normal", (1.0,), None, span)
        feeds[name] = program.feed(name, initialize(init, t, rng), bindings)
    return feeds, dims


def _classes(program: Program, plan: Plan, labels: str, dims: dict[str, int]) -> int:
    """How many classes the scores that `labels` is read against have."""
    scores = next(
        step.args[scored]
        for step in plan.forward
        for position, scored in step.op.label_positions().items()
        if step.args[position] == labels
    )
    classes = program.types[scores].shape[-1]
    return dims[classes] if isinstance(classes, str) else classes


class _Timer:
    """Wraps each step's op call to add up the seconds it takes."""

    def __init__(self, plan: Plan):
        self.forward = {step.out: 0.0 for step in plan.forward}
        self.backward = {step.node: 0.0 for step in plan.backward}

    def wrap(self, kind: str, step: Any, function: Callable) -> Callable:
        seconds = self.forward if kind == "forward" else self.backward
        key = step.out if kind == "forward" else step.node
        clock = time.perf_counter

        def timed(*args):
            start = clock()
            result = function(*args)
            seconds[key] += clock() - start
            return result

        return timed


def _step(interpreter: Interpreter, base: dict[str, np.ndarray]) -> None:
    """One training step through `interpreter`: forward, then backward from ones."""
    env = dict(base)
    tape = interpreter.forward(env)
    seed = interpreter.plan.seed
    assert seed is not None  # a training plan's
    interpreter.backward(tape, np.ones_like(env[seed]))


def profile_graph(
    compiled: CompiledGraph,
    *,
    batch: int | None = None,
    iters: int = 50,
    warmup: int = 5,
    dtype: str | None = None,
    seed: int = 0,
    wrt: tuple[str, ...] | None = None,
    codegen: bool = True,
    mode: str = "train",
) -> Profile:
    """Time one training step of `compiled`, node by node, at `batch` rows
    (default: the rows of the inputs' values in the graph, else 100).

    wrt defaults to the params (a training step); a graph without params
    differentiates its inputs instead.
    """
    program = Program(compiled, dtype=dtype, seed=seed, mode=mode)
    if wrt is None:
        wrt = program.param_names or program.input_names
    plain = program.lean(tuple(wrt))  # the plan and interpreter training runs
    plan = plain.plan
    feeds, dims = made_up_inputs(program, plan, batch)
    base = program.fixed_values()
    base.update(feeds)

    timer = _Timer(plan)
    timed = Interpreter(plan, free=True, wrap=timer.wrap)
    runs: list[Callable[[], Any]] = [lambda: _step(plain, base), lambda: _step(timed, base)]
    if codegen:
        from graphc.codegen import load_module

        model = load_module(compiled, dtype, wrt, mode)
        params = dict(program.params)
        extra = model.extra(program.state, program.rng)
        runs.append(lambda: model.loss_and_grads(params, feeds, **extra))
    # The three runs take turns, iteration by iteration, so that a machine
    # busy with something else slows them all alike.
    seconds = [0.0] * len(runs)
    clock = time.perf_counter
    with np.errstate(all="ignore"):
        for i in range(warmup + iters):
            if i == warmup:
                seconds = [0.0] * len(runs)
                for table in (timer.forward, timer.backward):
                    for key in table:
                        table[key] = 0.0
            for k, run in enumerate(runs):
                start = clock()
                run()
                seconds[k] += clock() - start
    total = seconds[0] / iters
    generated = seconds[2] / iters if codegen else None

    nodes = []
    for step in plan.forward:
        t = program.types[step.out]
        shape = tuple(dims[d] if isinstance(d, str) else d for d in t.shape)
        nodes.append(
            NodeTime(
                step.out,
                step.op.name,
                str(TensorType(t.dtype, shape)),
                timer.forward[step.out] / iters,
                timer.backward.get(step.out, 0.0) / iters,
            )
        )
    nodes.sort(key=lambda n: n.total, reverse=True)
    return Profile(
        compiled.name,
        dims,
        "/".join(float_dtype_names(program)),
        tuple(wrt),
        iters,
        warmup,
        tuple(nodes),
        total,
        generated,
        blas_info(),
    )


# --- printing ------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def profile_text(profile: Profile) -> str:
    from tabulate import tabulate

    dims = ", ".join(f"{k} = {v}" for k, v in sorted(profile.dims.items()))
    in_ops = profile.in_ops
    rows = [
        [
            n.node,
            n.op,
            n.type,
            _ms(n.forward),
            _ms(n.backward) if n.backward else "-",
            _ms(n.total),
            f"{100 * n.total / in_ops:.1f}%" if in_ops > 0 else "-",
        ]
        for n in profile.nodes
    ]
    table = tabulate(
        rows,
        headers=["node", "op", "output", "forward ms", "backward ms", "total ms", "share"],
        colalign=("left", "left", "left", "right", "right", "right", "right"),
        disable_numparse=True,
    )
    lines = [
        f"graph {profile.graph}: one training step{' at ' + dims if dims else ''}, {profile.dtype}, "
        f"gradients of {', '.join(profile.wrt) or 'nothing'}",
        f"{profile.iters} iterations after {profile.warmup} warm-up; numpy BLAS: {profile.blas}",
        "",
        table,
        "",
        f"total per iteration   {_ms(profile.total):>9} ms  forward + backward, interpreter",
        f"  in op calls         {_ms(in_ops):>9} ms",
        f"  outside op calls    {_ms(profile.overhead):>9} ms  {100 * profile.overhead_share:.1f}% "
        "(interpreter overhead)",
    ]
    if profile.codegen is not None:
        ratio = profile.total / profile.codegen if profile.codegen > 0 else float("inf")
        lines.append(
            f"generated module      {_ms(profile.codegen):>9} ms  "
            f"(graphc compile --emit python; interpreter/generated = {ratio:.2f})"
        )
    return "\n".join(lines) + "\n"


def profile_json(profile: Profile) -> dict[str, Any]:
    return {
        "graph": profile.graph,
        "dims": profile.dims,
        "dtype": profile.dtype,
        "wrt": list(profile.wrt),
        "iters": profile.iters,
        "warmup": profile.warmup,
        "blas": profile.blas,
        "nodes": [
            {
                "node": n.node,
                "op": n.op,
                "type": n.type,
                "forward_ms": n.forward * 1e3,
                "backward_ms": n.backward * 1e3,
                "total_ms": n.total * 1e3,
            }
            for n in profile.nodes
        ],
        "total_ms": profile.total * 1e3,
        "in_ops_ms": profile.in_ops * 1e3,
        "overhead_ms": profile.overhead * 1e3,
        "overhead_share": profile.overhead_share,
        "codegen_ms": None if profile.codegen is None else profile.codegen * 1e3,
    }

"""Compile speed at scale: time each front-end stage on generated graphs.

    python bench/compile_scale.py                 # 1,000, 10,000 and 50,000 nodes
    python bench/compile_scale.py --sizes 500 5000 --repeat 3
    python bench/compile_scale.py --write-docs    # and write the figures into docs/speed.md

Two shapes of graph, both built from the registry's ops over [N, 8] values:

- chain: each node reads the one before it (mul, add, relu, sigmoid in turn),
  the shape of a deep network, written as arrow chains;
- dag: each node reads the one before it and one earlier node picked at
  random, so values fan out to many readers and backward sums their gradients;
  written in functional form (`v7 = add(v6, v2)`).

For each graph it times parse (Lark + AST), elaborate, check (graph build,
cycles, topological order, warnings), shape inference, and planning (the
training plan, forward and backward), best of --repeat runs, and says whether
the goals are met: 10,000 nodes in under a second, and 50,000 within 6x the
time of 10,000 (linear). Each goal is judged where --sizes includes its sizes.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from graphc._gc import gc_paused
from graphc.check import check
from graphc.elaborate import elaborate
from graphc.parse import parse
from graphc.plan import make_plan
from graphc.shapes import infer_shapes

STAGES = ("parse", "elaborate", "check", "shapes", "plan")
SIZES = (1_000, 10_000, 50_000)
GOAL_SECONDS = 1.0  # at 10,000 nodes
GOAL_GROWTH = 6.0  # 50,000 nodes over 10,000: linear, with room for noise

_HEADER = """\
graph {name} {{
    dim N = 4
    input x: f64[N, 8] = uniform(0, 1)
    param w: [8] = normal(0.5)
    param b: [8] = zeros
"""


def chain_source(nodes: int) -> str:
    """A chain of `nodes` op nodes, each reading the one before it.

    Written as arrow chains of four links a line, the way a deep network
    reads: `h4 -> mul(w) -> add(b) -> relu -> sigmoid -> h8`, so that
    elaboration's chain expansion is timed too.
    """
    lines = [_HEADER.format(name=f"chain_{nodes}")]
    ops = ("mul(w)", "add(b)", "relu", "sigmoid")
    previous, done = "x", 0
    while done < nodes:
        links = [ops[(done + k) % 4] for k in range(min(4, nodes - done))]
        done += len(links)
        lines.append(f"    {previous} -> {' -> '.join(links)} -> h{done}\n")
        previous = f"h{done}"
    lines.append(f"    output {previous}\n}}\n")
    return "".join(lines)


def dag_source(nodes: int, seed: int = 0) -> str:
    """`nodes` op nodes, each reading the previous one and a random earlier one."""
    rng = random.Random(seed)
    lines = [_HEADER.format(name=f"dag_{nodes}")]
    names = ["x"]
    for i in range(1, nodes + 1):
        previous = names[-1]
        other = names[rng.randrange(len(names))]
        kind = i % 4
        if kind == 1:
            call = f"mul({previous}, w)"
        elif kind == 2:
            call = f"add({previous}, {other})"
        elif kind == 3:
            call = f"sigmoid({previous})"
        else:
            call = f"mul({previous}, {other})"
        lines.append(f"    v{i} = {call}\n")
        names.append(f"v{i}")
    lines.append(f"    output {names[-1]}\n}}\n")
    return "".join(lines)


SHAPES = {"chain": chain_source, "dag": dag_source}


@dataclass(frozen=True)
class Timing:
    shape: str
    nodes: int
    seconds: dict[str, float]  # stage -> best time

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@gc_paused  # as graphc.compiler.front_end runs the stages: see graphc/_gc.py
def time_stages(text: str) -> dict[str, float]:
    """Seconds per stage for one run of the front end and planner over `text`."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter
    start = clock()
    module = parse(text, "<bench>")
    seconds["parse"] = clock() - start
    start = clock()
    (ir,) = elaborate(module)
    seconds["elaborate"] = clock() - start
    start = clock()
    checked = check(ir)
    seconds["check"] = clock() - start
    start = clock()
    types = infer_shapes(checked)
    seconds["shapes"] = clock() - start
    start = clock()
    make_plan(checked, types)
    seconds["plan"] = clock() - start
    return seconds


def measure(shape: str, nodes: int, repeat: int = 1) -> Timing:
    """Best-of-`repeat` time per stage for a generated graph."""
    text = SHAPES[shape](nodes)
    best: dict[str, float] = {}
    for _ in range(repeat):
        gc.collect()
        for stage, seconds in time_stages(text).items():
            best[stage] = min(seconds, best.get(stage, seconds))
    return Timing(shape, nodes, best)


def table(timings: list[Timing]) -> str:
    from tabulate import tabulate

    rows = [[t.shape, f"{t.nodes:,}", *(f"{t.seconds[s]:.3f}" for s in STAGES), f"{t.total:.3f}"] for t in timings]
    return tabulate(rows, headers=["graph", "nodes", *STAGES, "total s"], colalign=("left",) + ("right",) * 7)


def growth(timings: list[Timing], small: int, large: int) -> dict[str, float]:
    """Total time at `large` nodes over the time at `small`, per graph shape."""
    by = {(t.shape, t.nodes): t.total for t in timings}
    return {
        shape: by[shape, large] / by[shape, small] for shape in SHAPES if (shape, small) in by and (shape, large) in by
    }


def goals(timings: list[Timing]) -> dict[str, bool]:
    """Each goal the timings can judge, per graph shape, and whether it is met."""
    by = {(t.shape, t.nodes): t.total for t in timings}
    met: dict[str, bool] = {}
    for shape in SHAPES:
        if (shape, 10_000) in by:
            met[f"{shape}: 10,000 nodes in under {GOAL_SECONDS:g} s"] = by[shape, 10_000] < GOAL_SECONDS
        if (shape, 10_000) in by and (shape, 50_000) in by:
            met[f"{shape}: 50,000 nodes within {GOAL_GROWTH:g}x the time of 10,000"] = (
                by[shape, 50_000] <= GOAL_GROWTH * by[shape, 10_000]
            )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="node counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts (default 3)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument(
        "--write-docs", action="store_true", help="also write the figures into docs/speed.md, with the machine and load"
    )
    args = parser.parse_args(argv)
    if args.write_docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _docs import Watch, publish

        watch = Watch()
    timings = []
    for shape in args.shapes:
        for nodes in args.sizes:
            timings.append(measure(shape, nodes, args.repeat))
            print(f"  {shape} {nodes:,}: {timings[-1].total:.3f} s", file=sys.stderr, flush=True)
    text = report(timings, args.sizes, args.repeat)
    print(text, end="")
    if args.write_docs:
        publish("compile_scale", argv, text, watch.done())
    return 0


def report(timings: list[Timing], sizes: list[int], repeat: int) -> str:
    """The table, the growth and the goals, as printed (and written to docs/speed.md)."""
    lines = [f"best of {repeat} runs per graph", "", table(timings)]
    if 10_000 in sizes:
        for big in (n for n in sizes if n > 10_000):
            for shape, ratio in growth(timings, 10_000, big).items():
                lines.append(f"{shape}: {big:,} nodes take {ratio:.1f}x the time of 10,000")
    judged = goals(timings)
    for goal, ok in judged.items():
        lines.append(f"  {'met    ' if ok else 'NOT met'}  {goal}")
    if not judged:
        lines.append("goals: not judged (they need --sizes 10000, and 50000 for the growth)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

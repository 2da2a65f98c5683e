"""Training speed: graphc against the book's numpy layers and PyTorch.

Trains the two-layer net (784-50-10, batch 100, SGD lr 0.1) for the same
number of iterations, in one process, several ways:

    reference           bench/reference_numpy.py: the book's Affine/Relu/
                        SoftmaxWithLoss objects called in order, fed as the
                        book feeds them (float32 images in [0, 1], float64
                        one-hot labels, float64 params), in the loop of the
                        book's train_neuralnet.py (which records the loss
                        after each update, as graphc train does too)
    graphc interp f64   models/two_layer_net.graph through graphc.train's
                        Trainer, the plan interpreter, float64
    graphc interp f32   the same in float32
    graphc codegen f64  the Trainer running the generated numpy module
    graphc codegen f32  the same in float32
    pytorch cpu f32     bench/reference_torch.py, when torch is installed
    tight numpy f32     bench/reference_tight.py: the step as one hand-tuned
                        numpy function, the floor plain numpy reaches here

It prints seconds per 1000 iterations and each one's ratio to the reference
(below 1 is faster). Only the training loop is timed: no data loading, no
evaluation. Each contender runs --repeat times, interleaved, and the best
time counts (the machine's other work only ever adds time).

Then a whole run, as a person runs it: the book's train_neuralnet.py (the
reference loop plus train and test accuracy over the full sets every epoch)
against `graphc train` in float32 with its per-epoch evaluation, 10000
iterations each (--whole-iters; 0 skips it), best of --whole-repeat.

    python bench/train_mnist.py [--iters 2000] [--repeat 5] [--whole-iters 10000] [--whole-repeat 2] [--json]
    python bench/train_mnist.py --write-docs     # and write the figures into docs/speed.md

And the memory of a whole run: the peak resident set (RSS) of a fresh
process running `graphc train` (float32 and float64) and the book-style
reference, --memory-iters iterations each (default 600: one epoch and its
evaluation on the whole sets, which is where the peak is; 0 skips it).

Goals (issues 3, 5 and 14): graphc float64 at least as fast as the reference
(and within 1.10x of it); graphc float32 at least 3x faster than the
reference and faster than PyTorch on the CPU; a whole `graphc train` run in
under a third of the book script's time; the whole run's peak RSS under
250 MB in float32 and float64.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from _args import at_least, positive_number  # noqa: E402
from _docs import Watch, publish  # noqa: E402
from _mnist import data_root  # noqa: E402
from _mnist import load_mnist as load_reference_mnist  # noqa: E402
from reference_numpy import accuracy, train_reference  # noqa: E402
from reference_tight import predict_tight, train_tight  # noqa: E402
from reference_torch import accuracy_torch, train_torch  # noqa: E402

import graphc  # noqa: E402
from graphc.profile import blas_info  # noqa: E402
from graphc.train import Trainer, TrainOptions, load_data  # noqa: E402

MODEL = HERE.parent / "models" / "two_layer_net.graph"


def run_reference(data: dict, iters: int, batch: int, lr: float) -> tuple[float, float]:
    result = train_reference(data["x_train"], data["t_train_onehot"], iters, batch=batch, lr=lr, seed=0)
    return result["seconds"], accuracy(result["net"], data["x_test"], data["t_test"])


def graphc_trainer(dtype: str, engine: str, iters: int, batch: int, lr: float, evaluate: bool) -> Trainer:
    program = graphc.compile_file(MODEL, dtype=dtype, seed=0)
    data = load_data("mnist", program, progress=False)
    options = TrainOptions(iters=iters, batch=batch, lr=lr, seed=0, evaluate=evaluate, engine=engine)
    return Trainer(program, data, options)


def run_graphc(dtype: str, engine: str, iters: int, batch: int, lr: float) -> tuple[float, float]:
    trainer = graphc_trainer(dtype, engine, iters, batch, lr, evaluate=False)
    result = trainer.run()
    assert trainer.engine == engine
    return result.seconds, trainer.accuracy(trainer.data.x_test, trainer.data.y_test)


def run_torch(data: dict, iters: int, batch: int, lr: float) -> tuple[float, float] | None:
    result = train_torch(data["x_train"], data["t_train"], iters, batch=batch, lr=lr, seed=0)
    if result is None:
        return None
    return result["seconds"], accuracy_torch(result["model"], data["x_test"], data["t_test"])


def run_tight(data: dict, iters: int, batch: int, lr: float) -> tuple[float, float]:
    result = train_tight(data["x_train_bytes"], data["t_train"], iters, batch=batch, lr=lr, seed=0)
    return result["seconds"], float(np.mean(predict_tight(result["params"], data["x_test"]) == data["t_test"]))


def whole_runs(data: dict, iters: int, batch: int, lr: float, repeat: int) -> dict[str, dict]:
    """The book's script and `graphc train --dtype float32`, evaluation
    included; each run `repeat` times, interleaved, the best time counting."""
    runs: dict[str, dict] = {}
    for _ in range(repeat):
        book = train_reference(
            data["x_train"],
            data["t_train_onehot"],
            iters,
            batch,
            lr,
            evaluate_on=(data["x_test"], data["t_test_onehot"]),
        )
        trainer = graphc_trainer("float32", "auto", iters, batch, lr, evaluate=True)
        began = time.perf_counter()
        result = trainer.run()
        seconds = time.perf_counter() - began
        for name, run in (
            ("book script", {"seconds": book["seconds"], "test_acc": book["test_acc"], "evals": book["evals"]}),
            (
                "graphc train f32",
                {
                    "seconds": seconds,
                    "test_acc": result.test_acc,
                    "evals": len(result.history),
                    "engine": trainer.engine,
                },
            ),
        ):
            if name not in runs or run["seconds"] < runs[name]["seconds"]:
                runs[name] = run
    return runs


MEMORY_GOAL_MB = 250


# Runs a module (`graphc`) or a script as __main__, then writes its peak resident
# memory, VmHWM of /proc/self/status, in kB, to the file argv[1]. Not the
# rusage of the child: Linux counts in it the parent's memory the child was
# forked from, before exec (a benchmark holding MNIST would count it twice).
_PEAK = """
import runpy, sys
out, target = sys.argv[1], sys.argv[2]
sys.argv = [target, *sys.argv[3:]]
try:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(out, "w") as handle:
        handle.write(str(kb))
"""


def peak_rss_mb(target: str, *args: str) -> float:
    """The peak resident memory, in MB, of a fresh process running the module or
    script `target` with `args` (its output discarded)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "peak"
        command = [sys.executable, "-c", _PEAK, str(out), target, *args]
        done = subprocess.run(command, cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SystemExit(f"{target} {' '.join(args)} failed with status {done.returncode}")
        return int(out.read_text()) / 1024


def memory_runs(iters: int) -> dict[str, float]:
    """Peak RSS (MB) of whole runs, one process each: graphc train in float32 and float64, and the reference."""
    graphc = ("graphc", "train", "models/two_layer_net.graph", "--no-progress", "--iters", str(iters))
    return {
        "graphc train f32": peak_rss_mb(*graphc, "--dtype", "float32"),
        "graphc train f64": peak_rss_mb(*graphc, "--dtype", "float64"),
        "book reference": peak_rss_mb(str(HERE / "reference_numpy.py"), str(iters)),
    }


def text_report(
    args: argparse.Namespace,
    per_1000: dict[str, float],
    median: dict[str, float],
    ratio: dict[str, float],
    accuracies: dict[str, float],
    whole: dict[str, dict],
    goals: dict[str, bool],
    engine: str,
    contenders: list[str],
    memory: dict[str, float] | None = None,
) -> str:
    """The figures as the benchmark prints them (and writes them to docs/speed.md)."""
    lines = [
        f"two-layer net, MNIST, batch {args.batch}, lr {args.lr:g}, {args.iters} iterations, best of {args.repeat}",
        f"BLAS: {blas_info()}",
        "",
        f"{'training steps':20}  {'s / 1000 it':>11}  {'median':>8}  {'vs reference':>12}  {'test acc':>8}",
    ]
    for name in contenders:
        lines.append(
            f"{name:20}  {per_1000[name]:11.3f}  {median[name]:8.3f}  {ratio[name]:12.3f}  {accuracies[name]:8.4f}"
        )
    if "pytorch cpu f32" not in contenders:
        lines.append("pytorch cpu f32       skipped: torch is not installed (pip install torch)")
    if whole:
        lines += [
            "",
            f"whole run: {args.whole_iters} iterations, train and test accuracy every epoch, "
            f"best of {args.whole_repeat}",
        ]
        book = whole["book script"]
        for name, run in whole.items():
            share = run["seconds"] / book["seconds"]
            lines.append(
                f"{name:20}  {run['seconds']:7.1f} s  {share:5.2f} of the book script  "
                f"test acc {run['test_acc']:.4f}  ({run['evals']} evaluations)"
            )
    if memory:
        lines += ["", f"peak memory (RSS) of a whole run, {args.memory_iters} iterations, one process each"]
        lines += [f"{name:20}  {mb:7.0f} MB" for name, mb in memory.items()]
    best_f32 = min(per_1000["graphc interp f32"], per_1000["graphc codegen f32"])
    lines += [
        "",
        f"faster float32 engine: {engine} (codegen {per_1000['graphc codegen f32']:.3f}, "
        f"interpreter {per_1000['graphc interp f32']:.3f} s / 1000 it)",
    ]
    versus = f"graphc f32 is {per_1000['reference'] / best_f32:.2f}x as fast as the reference"
    if "pytorch cpu f32" in per_1000:
        versus += f", {per_1000['pytorch cpu f32'] / best_f32:.2f}x as fast as PyTorch CPU"
    lines.append(versus)
    for goal, met in goals.items():
        lines.append(f"  {'met    ' if met else 'NOT met'}  {goal}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=at_least(1), default=2000, help="iterations per timed run (default 2000)")
    parser.add_argument(
        "--repeat", type=at_least(1), default=5, help="runs of each contender; the best counts (default 5)"
    )
    parser.add_argument(
        "--whole-iters",
        type=at_least(0),
        default=10000,
        help="iterations of the whole-run comparison (default 10000; 0 skips it)",
    )
    parser.add_argument(
        "--whole-repeat", type=at_least(1), default=2, help="whole runs of each; the best counts (default 2)"
    )
    parser.add_argument(
        "--memory-iters",
        type=at_least(0),
        default=600,
        help="iterations of the whole runs whose peak memory is measured (default 600: an epoch; 0 skips them)",
    )
    parser.add_argument("--batch", type=at_least(1), default=100)
    parser.add_argument("--lr", type=positive_number, default=0.1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--write-docs", action="store_true", help="also write the figures into docs/speed.md, with the machine and load"
    )
    args = parser.parse_args(argv)
    watch = Watch()
    it, batch, lr = args.iters, args.batch, args.lr
    os.environ.setdefault("GRAPHC_DATA", str(data_root()))  # where graphc's loader looks, as the reference's

    data = load_reference_mnist()
    contenders = {
        "reference": lambda: run_reference(data, it, batch, lr),
        "graphc interp f64": lambda: run_graphc("float64", "interpreter", it, batch, lr),
        "graphc interp f32": lambda: run_graphc("float32", "interpreter", it, batch, lr),
        "graphc codegen f64": lambda: run_graphc("float64", "codegen", it, batch, lr),
        "graphc codegen f32": lambda: run_graphc("float32", "codegen", it, batch, lr),
        "pytorch cpu f32": lambda: run_torch(data, it, batch, lr),
        "tight numpy f32": lambda: run_tight(data, it, batch, lr),
    }
    # Warm up outside the timing: load and cache the data, import torch.
    for dtype in ("float64", "float32"):
        run_graphc(dtype, "codegen", 1, batch, lr)
    if run_torch(data, 1, batch, lr) is None:
        del contenders["pytorch cpu f32"]

    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    accuracies: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, run in contenders.items():
            took, acc = run()
            seconds[name].append(took)
            accuracies[name] = acc
    per_1000 = {name: min(times) / it * 1000 for name, times in seconds.items()}
    median = {name: statistics.median(times) / it * 1000 for name, times in seconds.items()}
    ratio = {name: per_1000[name] / per_1000["reference"] for name in contenders}
    whole = whole_runs(data, args.whole_iters, batch, lr, args.whole_repeat) if args.whole_iters else {}
    memory = memory_runs(args.memory_iters) if args.memory_iters else {}

    best_f64 = min(per_1000["graphc interp f64"], per_1000["graphc codegen f64"])
    best_f32 = min(per_1000["graphc interp f32"], per_1000["graphc codegen f32"])
    goals = {
        "f64 at least as fast as the reference": best_f64 <= per_1000["reference"],
        "f64 within 1.10x of the reference": best_f64 <= 1.10 * per_1000["reference"],
        "f32 at least 3x faster than the reference": 3 * best_f32 <= per_1000["reference"],
        "f32 at least 1.5x faster than the reference": 1.5 * best_f32 <= per_1000["reference"],
    }
    if "pytorch cpu f32" in per_1000:
        goals["f32 faster than PyTorch CPU"] = best_f32 < per_1000["pytorch cpu f32"]
    if whole:
        goals["whole run under a third of the book script"] = (
            3 * whole["graphc train f32"]["seconds"] < whole["book script"]["seconds"]
        )
    for dtype in ("f32", "f64"):
        if f"graphc train {dtype}" in memory:
            goals[f"whole run {dtype} under {MEMORY_GOAL_MB} MB"] = memory[f"graphc train {dtype}"] < MEMORY_GOAL_MB
    engine = "codegen" if per_1000["graphc codegen f32"] <= per_1000["graphc interp f32"] else "interpreter"

    if args.json:
        print(
            json.dumps(
                {
                    "iters": it,
                    "repeat": args.repeat,
                    "blas": blas_info(),
                    "seconds_per_1000": per_1000,
                    "median_seconds_per_1000": median,
                    "ratio": ratio,
                    "test_acc": accuracies,
                    "whole_run": whole,
                    "peak_rss_mb": memory,
                    "goals": goals,
                    "faster_f32_engine": engine,
                },
                indent=2,
            )
        )
        return 0
    report = text_report(args, per_1000, median, ratio, accuracies, whole, goals, engine, list(contenders), memory)
    print(report, end="")
    if args.write_docs:
        publish("train_mnist", argv, report, watch.done())
    return 0


if __name__ == "__main__":
    sys.exit(main())

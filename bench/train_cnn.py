"""Training speed of SimpleConvNet: graphc against PyTorch CPU and numpy.

Trains the book's SimpleConvNet (models/simple_conv_net.graph: conv 30
filters 5x5, ReLU, max-pool 2x2, affine 100, ReLU, affine 10, softmax with
loss) on MNIST at batch 100 in float32 with Adam (lr 0.001), four ways:

    graphc codegen      graphc.train's Trainer running the numpy module
                        graphc generates for the graph
    graphc interpreter  the same Trainer running the plan interpreter
    pytorch cpu         bench/reference_cnn_torch.py, the same layers in
                        PyTorch on the CPU, when torch is installed
    numpy reference     bench/reference_cnn_numpy.py, the book's chapter-7
                        layers (im2col rows, pooling by argmax) written as
                        one tight float32 function

Each contender runs in a process of its own, with the same number of BLAS
(and torch) threads, --threads, set before numpy or torch is imported. A
process trains --warmup iterations untimed, then --iters timed: only the
training loop counts (drawing minibatches included; no data loading, no
evaluation). The contenders take turns, --rounds times, the order turning
each round, so that the machine's other work falls on all of them alike;
the report gives each one's min, median and max seconds per 100 iterations,
and the ratios of graphc to PyTorch and to the numpy reference round by
round (min, median, max). Memory: each process's peak resident set
(ru_maxrss, which loading MNIST may set), its peak over the timed steps
(Linux's VmHWM, reset as they begin), and for the numpy contenders the peak
of numpy's allocations over a few steps after the timed ones (tracemalloc,
which would slow the timed steps down; it does not see torch's).

    python bench/train_cnn.py [--iters 200] [--warmup 10] [--rounds 3] [--threads 1] [--json]
    python bench/train_cnn.py --write-docs     # and write the figures into docs/speed.md

Goals (issue 11): graphc within 1.5x of PyTorch CPU, and no slower than the
numpy reference (the faster graphc engine, by the median ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _args import at_least  # noqa: E402
from _docs import THREAD_VARIABLES, Watch, publish  # noqa: E402
from _mnist import data_root  # noqa: E402

MODEL = HERE.parent / "models" / "simple_conv_net.graph"
CONTENDERS = ("graphc codegen", "graphc interpreter", "pytorch cpu", "numpy reference")
GRAPHC = ("graphc codegen", "graphc interpreter")


# --- one contender, in its own process ------------------------------------------


def _peak_rss_mb() -> float:
    """The process's resident set at its largest so far (ru_maxrss: kB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _high_water_mb() -> float | None:
    """VmHWM: the resident set at its largest since the last reset (Linux only)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def _reset_high_water() -> bool:
    """Reset VmHWM to the resident set now (Linux 4.0+): the peak of what follows only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Stopwatch:
    """Called after every training step: times steps warmup+1 .. warmup+iters
    and takes the resident set's peak over them, then traces numpy's
    allocations over the MEASURED steps after them."""

    MEASURED = 3

    def __init__(self, warmup: int, iters: int, trace: bool):
        self.warmup, self.iters, self.trace = warmup, iters, trace
        self.marks: dict[int, float] = {}
        self.reset = False
        self.loop_rss_mb: float | None = None
        self.step_peak_mb: float | None = None
        if warmup == 0:
            self.start()

    def start(self) -> None:
        self.reset = _reset_high_water()
        self.marks[self.warmup] = time.perf_counter()

    @property
    def total(self) -> int:
        return self.warmup + self.iters + self.MEASURED

    def __call__(self, step: int, *_: object) -> None:
        if step == self.warmup:
            self.start()
        elif step == self.warmup + self.iters:
            self.marks[step] = time.perf_counter()
            self.loop_rss_mb = _high_water_mb() if self.reset else None
        if step == self.warmup + self.iters and self.trace:
            tracemalloc.start()  # after the timed steps: tracing slows allocation down
        elif step == self.total and self.trace:
            self.step_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()

    @property
    def seconds(self) -> float:
        return self.marks[self.warmup + self.iters] - self.marks[self.warmup]


def _train_graphc(engine: str, watch: Stopwatch, batch: int) -> float:
    import graphc
    from graphc.train import Trainer, TrainOptions, load_data

    program = graphc.compile_file(MODEL, dtype="float32", seed=0)
    data = load_data("mnist", program, progress=False)
    options = TrainOptions(iters=watch.total, batch=batch, optimizer="adam", lr=0.001, evaluate=False, engine=engine)
    trainer = Trainer(program, data, options)
    assert trainer.engine == engine
    return float(trainer.run(on_iteration=watch).losses[-1])


def _train_reference(name: str, watch: Stopwatch, batch: int, threads: int) -> float | None:
    from _mnist import load_mnist

    data = load_mnist()
    images, labels = data["x_train"].reshape(-1, 1, 28, 28), data["t_train"]
    if name == "pytorch cpu":
        from reference_cnn_torch import train_cnn_torch

        result = train_cnn_torch(images, labels, watch.total, batch=batch, threads=threads, on_step=watch)
    else:
        from reference_cnn_numpy import train_cnn_numpy

        result = train_cnn_numpy(images, labels, watch.total, batch=batch, on_step=watch)
    return None if result is None else result["loss"]


def run_child(name: str, iters: int, warmup: int, batch: int, threads: int) -> dict:
    """Train one contender in this process; its figures as a dict."""
    watch = Stopwatch(warmup, iters, trace=name != "pytorch cpu")  # tracemalloc sees numpy, not torch
    if name in GRAPHC:
        loss: float | None = _train_graphc(name.split()[1], watch, batch)
    else:
        loss = _train_reference(name, watch, batch, threads)
    if loss is None:
        return {"skipped": "torch is not installed (pip install torch)"}
    return {
        "seconds_per_100": watch.seconds / iters * 100,
        "last_loss": loss,
        "peak_rss_mb": _peak_rss_mb(),
        "loop_rss_mb": watch.loop_rss_mb,
        "step_peak_mb": watch.step_peak_mb,
    }


def spawn(name: str, args: argparse.Namespace) -> dict:
    """Run one contender in a fresh process with --threads BLAS threads."""
    env = dict(os.environ)
    env.update((variable, str(args.threads)) for variable in THREAD_VARIABLES)
    env.setdefault("GRAPHC_DATA", str(data_root()))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    command += ["--iters", str(args.iters), "--warmup", str(args.warmup), "--batch", str(args.batch)]
    command += ["--threads", str(args.threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"train_cnn: {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the comparison ----------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def compare(args: argparse.Namespace) -> dict:
    """Every contender --rounds times, taking turns; the figures and the goals."""
    names = [n for n in CONTENDERS if args.only is None or n in args.only]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    skipped: dict[str, str] = {}
    for round_ in range(args.rounds):
        turn = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in turn:
            if name in skipped:
                continue
            figures = spawn(name, args)
            if "skipped" in figures:
                skipped[name] = figures["skipped"]
                print(f"train_cnn: {name} skipped: {figures['skipped']}", file=sys.stderr)
            else:
                runs[name].append(figures)
    ran = [name for name in names if name not in skipped]
    seconds = {name: [r["seconds_per_100"] for r in runs[name]] for name in ran}
    report: dict = {
        "iters": args.iters,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "batch": args.batch,
        "threads": args.threads,
        "seconds_per_100": {name: spread(seconds[name]) for name in ran},
        "peak_rss_mb": {name: max(r["peak_rss_mb"] for r in runs[name]) for name in ran},
        "loop_rss_mb": {name: runs[name][-1]["loop_rss_mb"] for name in ran},
        "step_peak_mb": {name: runs[name][-1]["step_peak_mb"] for name in ran},
        "last_loss": {name: runs[name][-1]["last_loss"] for name in ran},
        "skipped": skipped,
        "ratios": {},
        "goals": {},
    }
    for engine in (n for n in GRAPHC if n in ran):
        for other in (n for n in ("pytorch cpu", "numpy reference") if n in ran):
            # Round by round: the two ran minutes apart at most, under the same load.
            per_round = [a / b for a, b in zip(seconds[engine], seconds[other])]
            report["ratios"][f"{engine} / {other}"] = spread(per_round)
    graphc_ran = [n for n in GRAPHC if n in ran]
    if graphc_ran:
        best = min(graphc_ran, key=lambda n: report["seconds_per_100"][n]["median"])
        report["faster_engine"] = best
        if "pytorch cpu" in ran:
            ratio = report["ratios"][f"{best} / pytorch cpu"]["median"]
            report["goals"]["graphc within 1.5x of PyTorch CPU"] = ratio <= 1.5
        if "numpy reference" in ran:
            ratio = report["ratios"][f"{best} / numpy reference"]["median"]
            report["goals"]["graphc no slower than the numpy reference"] = ratio <= 1.0
    return report


def versions() -> str:
    import numpy as np

    from graphc.profile import blas_info

    text = f"numpy {np.__version__}, BLAS: {blas_info()}"
    try:
        import torch
    except ImportError:
        return text + ", torch not installed"
    return text + f", torch {torch.__version__}"


def text_report(report: dict) -> str:
    """The figures as the benchmark prints them (and writes them to docs/speed.md)."""
    lines = [
        f"SimpleConvNet, MNIST, batch {report['batch']}, float32, Adam; {report['iters']} timed iterations "
        f"after {report['warmup']} untimed, {report['rounds']} rounds taking turns, "
        f"{report['threads']} thread{'s' * (report['threads'] != 1)} each",
        versions(),
        "",
        f"{'seconds / 100 it':20}  {'min':>7}  {'median':>7}  {'max':>7}  {'peak RSS':>9}  {'in loop':>9}  "
        f"{'step peak':>9}  {'last loss':>9}",
    ]

    def megabytes(value: float | None, digits: int) -> str:
        return f"{value:6.{digits}f} MB" if value is not None else f"{'-':>9}"

    for name, figures in report["seconds_per_100"].items():
        lines.append(
            f"{name:20}  {figures['min']:7.3f}  {figures['median']:7.3f}  {figures['max']:7.3f}  "
            f"{megabytes(report['peak_rss_mb'][name], 0)}  {megabytes(report['loop_rss_mb'][name], 0)}  "
            f"{megabytes(report['step_peak_mb'][name], 1)}  {report['last_loss'][name]:9.4f}"
        )
    for name, why in report["skipped"].items():
        lines.append(f"{name:20}  skipped: {why}")
    if report["ratios"]:
        lines += ["", f"{'ratio, round by round':40}  {'min':>6}  {'median':>6}  {'max':>6}"]
        for pair, figures in report["ratios"].items():
            lines.append(f"{pair:40}  {figures['min']:6.2f}  {figures['median']:6.2f}  {figures['max']:6.2f}")
    lines += [
        "",
        "peak RSS: the process's largest resident set (ru_maxrss), loading MNIST included;",
        "in loop: its largest over the timed steps (VmHWM, reset as they begin): libraries, data, training;",
        f"step peak: numpy's allocations at their largest over {Stopwatch.MEASURED} steps after the timed ones",
        "(tracemalloc; torch allocates outside its sight)",
    ]
    if "faster_engine" in report:
        lines += ["", f"faster graphc engine: {report['faster_engine']} (by its median)"]
    for goal, met in report["goals"].items():
        lines.append(f"  {'met    ' if met else 'NOT met'}  {goal} (median ratio)")
    return "\n".join(lines) + "\n"


def contender_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; the contenders are {', '.join(CONTENDERS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=at_least(1), default=200, help="timed iterations per run (default 200)")
    parser.add_argument("--warmup", type=at_least(0), default=10, help="untimed iterations first (default 10)")
    parser.add_argument("--rounds", type=at_least(1), default=3, help="runs of each contender, in turns (default 3)")
    parser.add_argument("--batch", type=at_least(1), default=100)
    parser.add_argument("--threads", type=at_least(1), default=1, help="BLAS and torch threads (default 1)")
    parser.add_argument("--only", type=contender_names, help="these contenders, comma-separated")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--write-docs", action="store_true", help="also write the figures into docs/speed.md")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)  # one contender, in this process
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(args.child, args.iters, args.warmup, args.batch, args.threads)))
        return 0
    watch = Watch()
    report = compare(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    text = text_report(report)
    print(text, end="")
    if args.write_docs:
        publish("train_cnn", argv, text, watch.done())
    return 0


if __name__ == "__main__":
    sys.exit(main())

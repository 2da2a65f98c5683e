"""Training speed: graphc against the book's hand-written numpy layers.

Trains the two-layer net (784-50-10, batch 100, SGD lr 0.1) for the same
number of iterations, in one process, three ways:

    reference   bench/reference_numpy.py: Affine/Relu/SoftmaxWithLoss objects
                called in order, fed as the book feeds them (float32 images
                in [0, 1], float32 one-hot labels, float64 params)
    graphc f64  models/two_layer_net.graph through graphc.train.Trainer, float64
    graphc f32  the same in float32

and prints seconds per 1000 iterations and the ratio graphc / reference
(below 1 is faster). Only the training loop is timed: no data loading, no
evaluation. Each contender runs --repeat times, interleaved, and the best
time counts (the machine's other work only ever adds time).

    python bench/train_mnist.py [--iters 2000] [--repeat 3] [--json]

Goals: graphc float64 within 1.10x of the reference; float32 at least 1.5x
faster than it (a ratio at most 0.667).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("GRAPHC_DATA", str(HERE.parent.parent / "shared" / "data"))

import graphc  # noqa: E402
from _mnist import load_mnist as load_reference_mnist  # noqa: E402
from graphc.train import Trainer, TrainOptions, load_data  # noqa: E402
from reference_numpy import accuracy, train_reference  # noqa: E402

MODEL = HERE.parent / "models" / "two_layer_net.graph"
GOAL_F64 = 1.10
GOAL_F32 = 1 / 1.5


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS: unknown (threadpoolctl not installed)"
    parts = [f"{i.get('internal_api')} {i.get('version')} threads={i.get('num_threads')}"
             for i in threadpool_info() if i.get("user_api") == "blas"]
    return "BLAS: " + ("; ".join(parts) or "none found")


def run_reference(data: dict, iters: int, batch: int, lr: float) -> tuple[float, float]:
    result = train_reference(data["x_train"], data["t_train_onehot"], iters, batch=batch, lr=lr, seed=0)
    return result["seconds"], accuracy(result["net"], data["x_test"], data["t_test"])


def run_graphc(dtype: str, iters: int, batch: int, lr: float) -> tuple[float, float]:
    program = graphc.compile_file(MODEL, dtype=dtype, seed=0)
    data = load_data("mnist", program, progress=False)
    trainer = Trainer(program, data, TrainOptions(iters=iters, batch=batch, lr=lr, seed=0, evaluate=False))
    result = trainer.run()
    return result.seconds, trainer.accuracy(data.x_test, data.y_test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=2000, help="iterations per run (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender; the best counts (default 3)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    reference_data = load_reference_mnist()
    contenders = {
        "reference": lambda: run_reference(reference_data, args.iters, args.batch, args.lr),
        "graphc f64": lambda: run_graphc("float64", args.iters, args.batch, args.lr),
        "graphc f32": lambda: run_graphc("float32", args.iters, args.batch, args.lr),
    }
    for dtype in ("float64", "float32"):  # load and cache the data outside the timing
        run_graphc(dtype, 1, args.batch, args.lr)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    accuracies: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, run in contenders.items():
            took, acc = run()
            seconds[name].append(took)
            accuracies[name] = acc

    per_1000 = {name: min(times) / args.iters * 1000 for name, times in seconds.items()}
    median = {name: statistics.median(times) / args.iters * 1000 for name, times in seconds.items()}
    ratio = {name: per_1000[name] / per_1000["reference"] for name in contenders}
    ok_f64 = ratio["graphc f64"] <= GOAL_F64
    ok_f32 = ratio["graphc f32"] <= GOAL_F32
    if args.json:
        print(json.dumps({
            "iters": args.iters, "repeat": args.repeat, "blas": blas_info(),
            "seconds_per_1000": per_1000, "median_seconds_per_1000": median, "ratio": ratio,
            "test_acc": accuracies, "goals": {"f64_within_1.10x": ok_f64, "f32_1.5x_faster": ok_f32},
        }, indent=2))
        return 0
    print(f"two-layer net, MNIST, batch {args.batch}, lr {args.lr:g}, {args.iters} iterations, "
          f"best of {args.repeat}; {blas_info()}")
    print()
    print(f"{'':12}  {'s / 1000 it':>11}  {'median':>8}  {'vs reference':>12}  {'test acc':>8}")
    for name in contenders:
        speed = f"{ratio[name]:.3f}"
        print(f"{name:12}  {per_1000[name]:11.3f}  {median[name]:8.3f}  {speed:>12}  {accuracies[name]:8.4f}")
    print()
    print(f"graphc f64 / reference = {ratio['graphc f64']:.3f} (goal <= {GOAL_F64:.2f}): {'met' if ok_f64 else 'NOT met'}")
    print(f"graphc f32 is {1 / ratio['graphc f32']:.2f}x as fast as the reference (goal >= 1.5x): "
          f"{'met' if ok_f32 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The book's chapter-7 run of SimpleConvNet, as a person runs it, against its accuracy bar.

Runs `graphc train models/simple_conv_net.graph --data mnist` with the book's
settings (Adam, lr 0.001, batch 100, 20 epochs, float32, each epoch measured
on the first 1,000 images of each set, the end on the whole test set), then
prints the test accuracy, the training and evaluation time, and the machine's
load. Exits 1 when the test accuracy is below the bar (98.8%, issue 11; the
book reports about 99%).

    python bench/accuracy_cnn.py [--epochs 20] [--bar 0.988] [--save runs/cnn.npz]

It takes about 12 minutes of one core (23 minutes of wall time at load 6
on two cores): too long for the test suite, whose slow set has a 300-step
run of the same model instead (tests/test_conv_train.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _mnist import data_root  # noqa: E402

MODEL = HERE.parent / "models" / "simple_conv_net.graph"


def train_command(epochs: int, save: Path) -> list[str]:
    return [
        *("graphc", "train", str(MODEL), "--data", "mnist", "--dtype", "float32"),
        *("--optimizer", "adam", "--lr", "0.001", "--batch", "100", "--epochs", str(epochs)),
        *("--eval-sample", "1000", "--seed", "0", "--save", str(save), "--json"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--bar", type=float, default=0.988, help="the lowest test accuracy that passes")
    parser.add_argument("--save", type=Path, help="keep the trained weights here (default: a temporary file)")
    args = parser.parse_args(argv)

    env = dict(os.environ, GRAPHC_DATA=str(data_root()))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        save = args.save or Path(scratch) / "cnn.npz"
        start = time.perf_counter()
        done = subprocess.run(train_command(args.epochs, save), env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    result = json.loads(done.stdout)
    load_after = os.getloadavg()[0]
    print(" ".join(train_command(args.epochs, Path("..."))[1:]))
    for epoch in result["history"]:
        print(f"  epoch {epoch['epoch']:2d}  loss {epoch['loss']:.4f}  sampled test accuracy {epoch['test_acc']:.3f}")
    print(f"test accuracy (all 10,000 images)  {result['test_acc']:.4f}   bar {args.bar:.4f}")
    print(f"train accuracy (all 60,000)        {result['train_acc']:.4f}")
    print(f"{result['seconds']:.0f} s in all, {result['eval_seconds']:.0f} s of it measuring; wall {wall:.0f} s")
    print(f"load average {load_before:.1f} at the start, {load_after:.1f} at the end, on {os.cpu_count()} cores")
    return 0 if result["test_acc"] >= args.bar else 1


if __name__ == "__main__":
    sys.exit(main())

"""Measure trained weights on MNIST: accuracy, accuracy per class, and the
confusion matrix (rows: the true class, columns: the predicted one). With
--filters, draw a convolution's filters as an image instead (the book's
figure 7-24): the trained ones, or without --weights the initial ones of
--seed."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from graphc.commands.common import (
    _Where,
    add_dtype_argument,
    add_file_arguments,
    add_json_argument,
    add_seed_argument,
    add_threads_argument,
    load_program,
    print_json,
)
from graphc.commands.train import add_data_arguments
from graphc.errors import ExitCode, GraphcError, Span

if TYPE_CHECKING:
    import numpy as np

HELP = "test accuracy, per-class accuracy and confusion matrix of trained weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    parser.add_argument(
        "--weights",
        metavar="W.npz",
        help="the weights: a checkpoint from `graphc train --save`, or an .npz of params "
        "(required, except to draw the initial filters)",
    )
    add_data_arguments(parser)
    parser.add_argument("--split", choices=("test", "train"), default="test", help="which images (default test)")
    add_dtype_argument(
        parser, help="compute in this dtype (default: the one the weights were trained in, else as the graph declares)"
    )
    add_threads_argument(parser)
    add_json_argument(parser)
    pictures = parser.add_argument_group("filters (the book's figure 7-24)")
    pictures.add_argument(
        "--filters",
        metavar="OUT.png",
        help="instead of measuring, draw the first convolution's filters: a grey tile per filter and channel, "
        "each scaled from its smallest weight (black) to its largest (white)",
    )
    pictures.add_argument(
        "--filters-param", metavar="NAME", help="draw this param [FN, C, FH, FW] (default: the first conv2d's filters)"
    )
    add_seed_argument(pictures, what="initial weights --filters draws without --weights")


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[i, j]: images of class i predicted as j."""
    import numpy as np

    return np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tabulate import tabulate

    from graphc.checkpoint import float_dtype_names, load_weights, read_meta
    from graphc.threads import AUTO, EVAL_PROBE_ROWS, candidate_counts, choose_threads, fixed_threads
    from graphc.train import load_data, predict

    if args.filters is not None:
        return draw_filters(args)
    if args.filters_param is not None:
        raise GraphcError(
            "--filters-param names the param --filters draws: give --filters OUT.png too",
            _on_command_line("--filters-param", args.filters_param),
            code="E505",
        )
    if args.weights is None:
        raise GraphcError(
            "graphc eval measures trained weights: give --weights W.npz",
            hint="a checkpoint from `graphc train --save`; without weights, only --filters OUT.png draws "
            "(the initial filters)",
            code="E505",
        )
    meta = read_meta(args.weights)
    # Declared dtypes stand unless --dtype or the weights' training run says otherwise.
    dtype = args.dtype or (meta.dtype if meta is not None else None)
    program, _ = load_program(argparse.Namespace(**{**vars(args), "weights": None}), dtype=dtype)
    # Checked against the graph header by header, before any array is read.
    checkpoint = load_weights(program, args.weights)
    dtype = "/".join(float_dtype_names(program))
    data = load_data(args.data, program, data_dir=args.data_dir)
    x, y = (data.x_test, data.y_test) if args.split == "test" else (data.x_train, data.y_train)
    with fixed_threads(args.threads) as blas:
        chosen = None
        if args.threads == AUTO:  # a forward pass over a slice of the images at each count
            probe = x[:EVAL_PROBE_ROWS]
            chosen = choose_threads(lambda: predict(program, data, probe), candidate_counts(), blas)
        predicted = predict(program, data, x)
        threads: dict[str, Any] = {}  # auto's choice, where one was made; a fixed count is the flag's
        if chosen is not None:
            seconds = {str(count): round(s, 9) for count, s in chosen[1].items()}
            threads["threads"] = {"setting": AUTO, "used": blas.count, "seconds": seconds}
    counts = confusion_matrix(y, predicted, data.classes)
    per_class = counts.sum(axis=1)
    correct = np.diag(counts)
    accuracy = float(correct.sum() / len(y)) if len(y) else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = correct / per_class

    if args.json:
        print_json(
            {
                "graph": program.name,
                "weights": args.weights,
                "iteration": checkpoint.iteration,
                "data": data.name,
                "split": args.split,
                "images": len(y),
                "dtype": dtype,
                **threads,
                "accuracy": accuracy,
                "per_class": [
                    {
                        "class": c,
                        "images": int(per_class[c]),
                        "correct": int(correct[c]),
                        "accuracy": float(class_acc[c]) if per_class[c] else None,
                    }
                    for c in range(data.classes)
                ],
                "confusion": counts,
            }
        )
        return ExitCode.OK

    trained = f" (iteration {checkpoint.iteration})" if checkpoint.meta is not None else ""
    print(f"{program.name} with weights {args.weights}{trained} on the {data.name} {args.split} set, {dtype}")
    print(f"accuracy {accuracy:.4f}  ({int(correct.sum())} of {len(y)} images)")
    if chosen is not None:
        timings = ", ".join(f"{count}: {s * 1e3:.1f} ms" for count, s in chosen[1].items())
        print(f"BLAS threads chosen by timing: {chosen[0]} ({timings} per {len(probe)} images)")
    print()
    print(
        tabulate(
            [
                (c, int(per_class[c]), int(correct[c]), f"{class_acc[c]:.4f}" if per_class[c] else "-")
                for c in range(data.classes)
            ],
            headers=("class", "images", "correct", "accuracy"),
            colalign=("right", "right", "right", "right"),
            disable_numparse=True,
        )
    )
    print()
    print("confusion matrix: rows are the true class, columns the predicted class")
    print(
        tabulate(
            [[f"{c}"] + [int(v) for v in counts[c]] for c in range(data.classes)],
            headers=["true"] + [str(c) for c in range(data.classes)],
            colalign=["right"] * (data.classes + 1),
        )
    )
    return ExitCode.OK


def draw_filters(args: argparse.Namespace) -> int:
    """--filters: the weights' (or --seed's initial) filters as a PNG; no images are read."""
    import numpy as np

    from graphc.checkpoint import load_weights, read_meta
    from graphc.fileio import write_bytes
    from graphc.filters import check_target, choose_filters, describe, filters_png, layout

    check_target(args.filters, _on_command_line("--filters", args.filters))
    meta = read_meta(args.weights) if args.weights is not None else None
    dtype = args.dtype or (meta.dtype if meta is not None else None)
    program, _ = load_program(argparse.Namespace(**{**vars(args), "weights": None}), dtype=dtype)
    checkpoint = load_weights(program, args.weights) if args.weights is not None else None
    named = args.filters_param
    name = choose_filters(program, named, _on_command_line("--filters-param", named) if named is not None else None)
    weights = np.asarray(program.params[name])
    png = filters_png(weights, name, args.weights or f"{args.file} (--seed {args.seed})")
    write_bytes(args.filters, png)
    height, width = layout(weights.shape).size
    if args.json:
        print_json(
            {
                "graph": program.name,
                "weights": args.weights,
                "iteration": checkpoint.iteration if checkpoint is not None else None,
                "seed": None if args.weights is not None else args.seed,
                "param": name,
                "shape": list(weights.shape),
                "image": args.filters,
                "width": width,
                "height": height,
            }
        )
        return ExitCode.OK
    source = f"weights {args.weights}" if args.weights is not None else f"initial weights (--seed {args.seed})"
    print(f"wrote {args.filters}: {describe(weights, name)}, {program.name} with {source}, {width} × {height} pixels")
    return ExitCode.OK


def _on_command_line(flag: str, value: str) -> Span:
    """Where a flag's value is, for a diagnostic that shows the command line."""
    return _Where(flag, value).span(0, len(value))

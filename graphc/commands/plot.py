"""Draw several training runs in one figure, to compare them (the book's
figure 6-18: a net with Batch Normalization against the same net without).

Each RUN is a per-epoch log written by `graphc train --log LOG.csv`, or a
checkpoint written by `graphc train --save W.npz` (its history is in it).
The figure has the mean training loss per epoch on the left and the
accuracies per epoch on the right (train solid, test dashed), one colour a
run, labelled by its file name or by --label.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from graphc import limits
from graphc.errors import GraphcError

if TYPE_CHECKING:
    from graphc.checkpoint import EpochRecord

HELP = "draw several training runs (logs or checkpoints) in one figure"

# A log a person would plot has one row an epoch; a million is far past any run.
MAX_LOG_BYTES = 64 * 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a LOG.csv from `train --log`, or a checkpoint")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the PNG to write")
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME",
        help="a run's name in the legend, once per run in order (default: its file name)",
    )
    parser.add_argument("--title", default="", help="a title above the figure")


def run(args: argparse.Namespace) -> int:
    if args.label and len(args.label) != len(args.runs):
        raise GraphcError(
            f"--label given {len(args.label)} time{'s' * (len(args.label) != 1)} for {len(args.runs)} runs",
            where="graphc plot",
            hint="give one --label per run, in order, or none",
            code="E505",
        )
    labels = args.label or [Path(r).stem for r in args.runs]
    runs = [(label, read_history(path)) for label, path in zip(labels, args.runs)]
    write_comparison(args.output, runs, args.title)
    print(f"wrote {args.output} ({len(runs)} run{'s' * (len(runs) != 1)})")
    return 0


def read_history(path: str) -> list[EpochRecord]:
    """The per-epoch records of a run: from a CSV log, or from a checkpoint's meta."""
    if path.endswith(".npz"):
        from graphc.checkpoint import read_meta

        meta = read_meta(path)
        if meta is None or not meta.history:
            raise GraphcError(
                "no training history in this file",
                where=path,
                hint="plot a checkpoint written by `graphc train --save`",
                code="E612",
            )
        return list(meta.history)
    return read_log(path)


def read_log(path: str) -> list[EpochRecord]:
    """A CSV log as `graphc train --log` writes it, every row checked."""
    from graphc.train import LOG_COLUMNS

    try:
        size = Path(path).stat().st_size
        if size > MAX_LOG_BYTES:
            raise GraphcError(f"the file is {size:,} bytes, more than a training log takes", where=path, code="E612")
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise GraphcError(
            "no such file", where=path, hint="write a log with `graphc train FILE --log LOG.csv`", code="E601"
        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise GraphcError(
            f"cannot read it as a training log: {getattr(err, 'strerror', None) or err}", where=path, code="E603"
        ) from None
    if not rows or tuple(rows[0]) != LOG_COLUMNS:
        raise GraphcError(
            f"not a training log: its first line must be `{','.join(LOG_COLUMNS)}`",
            where=f"{path}:1",
            hint="write one with `graphc train FILE --log LOG.csv`",
            code="E612",
        )
    records = [_record(row, f"{path}:{line}") for line, row in enumerate(rows[1:], start=2) if row]
    if not records:
        raise GraphcError("the log has no epochs", where=path, code="E612")
    return records


def _record(row: list[str], where: str) -> EpochRecord:
    from graphc.checkpoint import EpochRecord
    from graphc.train import LOG_COLUMNS

    if len(row) != len(LOG_COLUMNS):
        raise GraphcError(f"{len(row)} fields where a log row has {len(LOG_COLUMNS)}", where=where, code="E612")
    cells = {column: text.strip() for column, text in zip(LOG_COLUMNS, row)}
    return EpochRecord(
        epoch=_whole(cells, "epoch", where),
        iteration=_whole(cells, "iteration", where),
        loss=_float(cells, "loss", where),  # may be nan or inf: a diverged run is plotted as it went
        train_acc=_fraction(cells, "train_acc", where) if cells["train_acc"] else None,
        test_acc=_fraction(cells, "test_acc", where) if cells["test_acc"] else None,
        seconds=_float(cells, "seconds", where),
    )


def _whole(cells: dict[str, str], column: str, where: str) -> int:
    text = cells[column]
    if not (text.isdigit() and len(text) <= limits.MAX_INT_DIGITS):
        raise GraphcError(f"`{text[:40]}` in column {column} is not a whole number", where=where, code="E612")
    return int(text)


def _float(cells: dict[str, str], column: str, where: str) -> float:
    text = cells[column]
    try:
        return float(text)
    except ValueError:
        raise GraphcError(f"`{text[:40]}` in column {column} is not a number", where=where, code="E612") from None


def _fraction(cells: dict[str, str], column: str, where: str) -> float:
    value = _float(cells, column, where)
    if not 0 <= value <= 1:
        raise GraphcError(
            f"`{cells[column]}` in column {column} is not an accuracy between 0 and 1", where=where, code="E612"
        )
    return value


def write_comparison(path: str, runs: list[tuple[str, list[EpochRecord]]], title: str = "") -> None:
    """Loss and accuracy per epoch, one colour a run, as a PNG written atomically."""
    # matplotlib is heavy: imported here, and without pyplot's global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from graphc.fileio import write_bytes

    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, acc_axes = figure.subplots(1, 2)
    for index, (label, history) in enumerate(runs):
        colour = f"C{index % 10}"
        epochs = [r.epoch for r in history]
        loss_axes.plot(epochs, [r.loss for r in history], "o-", color=colour, markersize=3, label=label)
        measured = [r for r in history if r.train_acc is not None]
        if measured:
            acc_epochs = [r.epoch for r in measured]
            acc_axes.plot(
                acc_epochs, [r.train_acc for r in measured], "o-", color=colour, markersize=3, label=f"{label} train"
            )
            acc_axes.plot(
                acc_epochs, [r.test_acc for r in measured], "s--", color=colour, markersize=3, label=f"{label} test"
            )
    for axes, what in ((loss_axes, "loss"), (acc_axes, "accuracy")):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(what)
        axes.set_title("mean training loss" if axes is loss_axes else what)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right" if axes is loss_axes else "lower right", fontsize="small")
    if title:
        figure.suptitle(title)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    write_bytes(path, png.getvalue())  # atomically: a failure leaves the previous file

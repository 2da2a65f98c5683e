"""Train a graph on MNIST with minibatch SGD (or momentum, AdaGrad, Adam).

The book's settings are the defaults: 10000 iterations of 100 random training
images, learning rate 0.1, plain SGD. After every epoch (600 iterations) a
line with the mean loss and the train and test accuracy; a progress bar on
stderr when it is a terminal; a summary at the end.

Which inputs get the images and the labels is declared in the graph
(`input x: f64[N, 784] from images`, `input t: f64[N, 10] from labels`) or
inferred from the inputs' shapes.

--save writes a checkpoint after every epoch and at the end; --resume
continues one (to --iters in total) bit for bit. Ctrl-C saves a checkpoint
(to --save, else NAME-interrupted.npz in the current directory) and exits
with status 130. A loss that turns NaN or infinite stops training with
status 1, leaving the last good checkpoint in place.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from graphc.checkpoint import Checkpoint, float_dtype_names, read_checkpoint
from graphc.commands.common import (
    add_dtype_argument,
    add_file_arguments,
    add_json_argument,
    add_seed_argument,
    load_program,
    print_json,
    whole_number,
)
from graphc.data import is_tty
from graphc.errors import ExitCode, GraphcError
from graphc.fileio import atomic_open
from graphc.optim import OPTIMIZERS
from graphc.train import (
    DATASETS,
    ENGINES,
    Diverged,
    EpochRecord,
    Trainer,
    TrainOptions,
    TrainResult,
    epoch_iters,
    load_data,
    write_curves,
    write_log,
)

HELP = "train on MNIST; print accuracies per epoch; save checkpoints"

DEFAULT_ITERS = 10000
DEFAULT_BATCH = 100


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise GraphcError(f"--lr takes a number, got `{text}`", hint="e.g. `--lr 0.1` or `--lr 1e-3`") from None
    if not (math.isfinite(value) and value > 0):
        raise GraphcError(f"--lr must be a positive number, got {text}", hint="e.g. `--lr 0.1` or `--lr 1e-3`")
    return value


def add_data_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--data and --data-dir, as train and eval take them."""
    parser.add_argument(
        "--data", default="mnist", metavar="NAME", help=f"dataset: {', '.join(DATASETS)} (default mnist)"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the dataset's files are (default $GRAPHC_DATA/mnist, else ~/.cache/graphc/mnist); "
        "missing files are downloaded there",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    add_data_arguments(parser.add_argument_group("data"))
    loop = parser.add_argument_group("training")
    loop.add_argument(
        "--iters",
        type=whole_number("--iters"),
        metavar="N",
        help=f"train up to N iterations in all, resumed ones included (default {DEFAULT_ITERS})",
    )
    loop.add_argument(
        "--epochs",
        type=whole_number("--epochs"),
        metavar="E",
        help="train up to E epochs (train size / batch iterations each)",
    )
    loop.add_argument(
        "--batch",
        type=whole_number("--batch"),
        metavar="B",
        help=f"minibatch size (default {DEFAULT_BATCH}; on --resume, the checkpoint's)",
    )
    loop.add_argument("--optimizer", choices=list(OPTIMIZERS), help="default sgd; on --resume, the checkpoint's")
    loop.add_argument(
        "--lr",
        type=_rate,
        metavar="LR",
        help="learning rate (default: sgd 0.1, momentum 0.01, adagrad 0.01, adam 0.001; on --resume, the checkpoint's)",
    )
    add_seed_argument(loop, default=None, what="param initializers and the minibatch draws")
    add_dtype_argument(
        loop, help="compute in this dtype (default: as the graph declares; on --resume, the checkpoint's)"
    )
    loop.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="run training steps through the generated numpy module (codegen) or the plan "
        "interpreter; auto (the default) takes codegen where the graph allows it",
    )
    files = parser.add_argument_group("files")
    files.add_argument("--save", metavar="W.npz", help="write a checkpoint after every epoch and at the end")
    files.add_argument("--resume", metavar="W.npz", help="continue training from a checkpoint")
    files.add_argument("--log", metavar="LOG.csv", help="write the per-epoch figures as CSV")
    files.add_argument("--plot", metavar="CURVES.png", help="draw loss and accuracy curves as a PNG")
    add_json_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")


class _Probe(Exception):
    """Aborts a trial write, so that the file is never replaced."""


def _check_writable(flag: str, path: str | None) -> None:
    """Fail before training, not after an hour of it: write a temporary file
    where the real one will go, and take it away again."""
    if path is None:
        return
    if Path(path).is_dir():
        raise GraphcError(f"{flag} {path}: is a directory", hint="give a file name")
    try:
        with atomic_open(path):
            raise _Probe
    except _Probe:
        pass
    except GraphcError as err:
        raise GraphcError(f"{flag} {path}: {err.message}", hint=err.diagnostics[0].hint) from None


def _seed(args: argparse.Namespace, resume: Checkpoint | None) -> int:
    """--seed, else the resumed run's, else 0."""
    if args.seed is not None:
        return args.seed
    return resume.meta.seed if resume is not None and resume.meta and resume.meta.seed is not None else 0


def _options(args: argparse.Namespace, resume: Checkpoint | None, train_size: int, seed: int) -> TrainOptions:
    """Flags, else what the resumed checkpoint was trained with, else the book's defaults."""
    meta = resume.meta if resume is not None else None
    optimizer = args.optimizer or (meta.optimizer if meta else None) or "sgd"
    lr = args.lr
    if lr is None and meta is not None and meta.optimizer == optimizer:
        lr = meta.lr
    batch = args.batch or (meta.batch if meta else None) or DEFAULT_BATCH
    iters = args.epochs * epoch_iters(train_size, batch) if args.epochs is not None else args.iters or DEFAULT_ITERS
    return TrainOptions(iters=iters, batch=batch, optimizer=optimizer, lr=lr, seed=seed, engine=args.engine)


def _epoch_line(record: EpochRecord, epochs: int) -> str:
    width = len(str(epochs))
    line = f"epoch {record.epoch:>{width}}/{epochs}  iter {record.iteration:>6}  loss {record.loss:.4f}"
    if record.train_acc is not None:
        line += f"  train acc {record.train_acc:.4f}  test acc {record.test_acc:.4f}"
    return line + f"  {record.seconds:6.1f} s"


def run(args: argparse.Namespace) -> int:
    if args.iters is not None and args.epochs is not None:
        raise GraphcError(
            "give --iters or --epochs, not both",
            hint="--epochs E is E * (train size / batch) iterations, e.g. 600 an epoch for MNIST with batch 100",
        )
    for flag in ("save", "log", "plot"):
        _check_writable(f"--{flag}", getattr(args, flag))
    resume = read_checkpoint(args.resume) if args.resume else None
    # Declared dtypes stand unless --dtype (or the resumed run's) says otherwise.
    dtype = args.dtype or (resume.dtype if resume is not None else None)
    seed = _seed(args, resume)
    program, _ = load_program(argparse.Namespace(**{**vars(args), "seed": seed}), dtype=dtype)
    data = load_data(args.data, program, data_dir=args.data_dir, progress=not args.no_progress)
    options = _options(args, resume, data.train_size, seed)
    trainer = Trainer(program, data, options, resume=resume)
    dtype_text = "/".join(float_dtype_names(program))
    human = not args.json
    out = sys.stdout

    if human:
        lr = trainer.optimizer.lr
        print(
            f"training {program.name} on {data.name}: {data.train_size} train / {len(data.x_test)} test images, "
            f"{dtype_text}, {options.optimizer} lr {lr:g}, batch {options.batch}, seed {options.seed}"
        )
        start_text = f"from iteration {trainer.iteration} " if trainer.iteration else ""
        epochs = f"{trainer.epochs} epoch{'s' * (trainer.epochs != 1)} of {trainer.iters_per_epoch}"
        print(f"{options.iters} iterations {start_text}({epochs})")
    if trainer.iteration >= options.iters and human:
        print(
            f"nothing to do: {args.resume} is at iteration {trainer.iteration} already; "
            f"pass a larger --iters to train further"
        )

    bar = None
    if not args.no_progress and is_tty(sys.stderr) and trainer.iteration < options.iters:
        from tqdm import tqdm

        bar = tqdm(
            total=options.iters,
            initial=trainer.iteration,
            file=sys.stderr,
            unit="it",
            dynamic_ncols=True,
            leave=False,
            smoothing=0.1,
        )

    running = [math.nan]

    def on_iteration(iteration: int, loss: float) -> None:
        running[0] = loss if math.isnan(running[0]) else 0.95 * running[0] + 0.05 * loss
        bar.update(1)
        if iteration % 25 == 0:
            bar.set_postfix_str(f"loss {running[0]:.4f}", refresh=False)

    def on_epoch(record: EpochRecord) -> None:
        if human:
            line = _epoch_line(record, trainer.epochs)
            if bar is not None:
                bar.write(line, file=out)
            else:
                print(line, file=out, flush=True)
        if args.log:
            write_log(args.log, trainer.history)

    began = time.perf_counter()
    diverged: Diverged | None = None
    result: TrainResult | None = None
    try:
        result = trainer.run(
            on_iteration=on_iteration if bar is not None else None,
            on_epoch=on_epoch,
            checkpoint=args.save,
            handle_sigint=True,
        )
    except Diverged as err:
        diverged = err
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - began

    status = "diverged" if diverged is not None else result.status
    save = args.save
    if status == "interrupted" and save is None and trainer.params_finite():
        # With --save the trainer has saved there already.
        save = f"{program.name}-interrupted.npz"
        trainer.save(save)
    saved = save if save and trainer.saved_at == trainer.iteration else None
    if args.log:
        write_log(args.log, trainer.history)
    if args.plot:
        losses = result.losses if result is not None else np.zeros(0)
        start = result.start_iteration if result is not None else trainer.iteration
        write_curves(args.plot, trainer.history, losses, start, title=f"{program.name} on {data.name}")

    last = trainer.history[-1] if trainer.history else None
    iters_run = result.iters if result is not None else 0
    eval_seconds = result.eval_seconds if result is not None else 0.0
    rate = result.iters_per_second if result is not None else 0.0
    if args.json:
        print_json(
            {
                "graph": program.name,
                "data": data.name,
                "status": status,
                "train_acc": last.train_acc if last else None,
                "test_acc": last.test_acc if last else None,
                "loss": last.loss if last else None,
                "measured_at": last.iteration if last else None,
                "iters": trainer.iteration,
                "iters_run": iters_run,
                "epochs": last.epoch if last else 0,
                "seconds": round(seconds, 3),
                "eval_seconds": round(eval_seconds, 3),
                "iters_per_second": round(rate, 1),
                "dtype": dtype_text,
                "optimizer": options.optimizer,
                "lr": trainer.optimizer.lr,
                "batch": options.batch,
                "seed": options.seed,
                "engine": trainer.engine,
                "saved": saved,
                "history": [r.as_dict() for r in trainer.history],
            }
        )
    if diverged is not None:
        print(diverged.render(), file=sys.stderr)
        return ExitCode.CHECK_FAILED
    if human:
        if iters_run:
            print(
                f"trained {iters_run} iterations in {seconds:.1f} s ({trainer.engine}): {rate:.0f} it/s, "
                f"{eval_seconds:.1f} s of it evaluating and saving"
            )
        if last is not None and last.train_acc is not None:
            label = (
                "final:" if last.iteration == trainer.iteration else f"last measured, at iteration {last.iteration}:"
            )
            print(f"{label} train acc {last.train_acc:.4f}  test acc {last.test_acc:.4f}")
    if status == "interrupted":
        if saved:
            print(f"interrupted at iteration {trainer.iteration}; saved {saved}", file=sys.stderr)
            print(f"continue with: graphc train {args.file} --resume {saved} --save {saved}", file=sys.stderr)
        else:
            print(
                f"interrupted at iteration {trainer.iteration}; the params hold NaN or inf, nothing saved",
                file=sys.stderr,
            )
        return ExitCode.INTERRUPTED
    if saved and human:
        print(f"saved {saved} (iteration {trainer.iteration})")
    if args.log and human:
        print(f"wrote {args.log}")
    if args.plot and human:
        print(f"wrote {args.plot}")
    return ExitCode.OK

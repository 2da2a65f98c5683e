"""Train a graph on MNIST with minibatch SGD (or momentum, AdaGrad, Adam).

The book's settings are the defaults: 10000 iterations of 100 random training
images, learning rate 0.1, plain SGD. After every epoch (600 iterations) a
line with the mean loss and the train and test accuracy; a progress bar on
stderr when it is a terminal; a summary at the end. With --eval-sample K the
epoch lines measure the first K images of each set only, marked `(K)`; the
end of training measures the whole sets.

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
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc.commands.common import (
    add_dtype_argument,
    add_file_arguments,
    add_json_argument,
    add_seed_argument,
    add_threads_argument,
    check_batch_size,
    load_program,
    print_json,
    whole_number,
)
from graphc.errors import ExitCode, GraphcError

if TYPE_CHECKING:
    from graphc.checkpoint import CheckpointMeta
    from graphc.program import Program
    from graphc.train import Diverged, EpochRecord, TrainData, Trainer, TrainOptions, TrainResult

# graphc.train's and graphc.optim's names, spelled here so that building the
# parser imports neither (tests/test_startup.py checks that they agree).
DATASETS = ("mnist",)
ENGINES = ("auto", "codegen", "interpreter")
OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")

if TYPE_CHECKING:
    from graphc.distributed import Team

HELP = "train on MNIST; print accuracies per epoch; save checkpoints"

DEFAULT_ITERS = 10000
DEFAULT_BATCH = 100


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise GraphcError(
            f"--lr takes a number, got `{text}`", hint="e.g. `--lr 0.1` or `--lr 1e-3`", code="E502"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise GraphcError(
            f"--lr must be a positive number, got {text}", hint="e.g. `--lr 0.1` or `--lr 1e-3`", code="E502"
        )
    return value


def _decay(text: str) -> float:
    hint = "e.g. `--weight-decay 1e-4`, or 0 for none"
    try:
        value = float(text)
    except ValueError:
        raise GraphcError(f"--weight-decay takes a number, got `{text}`", hint=hint, code="E502") from None
    if not (math.isfinite(value) and value >= 0):
        raise GraphcError(f"--weight-decay must be a number at least 0, got {text}", hint=hint, code="E502")
    return value


# Processes --workers starts on one machine: past its cores they only wait on each other
# (torchrun takes a job over several machines); a bound, so a slip cannot start thousands.
MAX_WORKERS = 64


def _workers(text: str) -> int:
    try:
        workers = whole_number("--workers")(text)
    except GraphcError as err:  # its example would be 100 workers
        raise GraphcError(err.message, hint="e.g. `--workers 2`", code=err.code) from None
    if workers > MAX_WORKERS:
        raise GraphcError(
            f"--workers must be at most {MAX_WORKERS}, got {workers}",
            hint="one process per core of this machine; for more, launch on several machines with torchrun",
            code="E502",
        )
    return workers


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
    loop.add_argument(
        "--eval-sample",
        type=whole_number("--eval-sample"),
        metavar="K",
        help="measure each epoch's accuracies on the first K images of each set only (the book's trainer takes "
        "1000); the end of training still measures the whole sets (default: whole sets every epoch; "
        "on --resume, the checkpoint's)",
    )
    loop.add_argument("--optimizer", choices=list(OPTIMIZERS), help="default sgd; on --resume, the checkpoint's")
    loop.add_argument(
        "--lr",
        type=_rate,
        metavar="LR",
        help="learning rate (default: sgd 0.1, momentum 0.01, adagrad 0.01, adam 0.001; on --resume, the checkpoint's)",
    )
    loop.add_argument(
        "--weight-decay",
        type=_decay,
        metavar="LAMBDA",
        help="add the L2 penalty LAMBDA/2 * sum of W² over the weights (each affine's W, not biases) to the loss, "
        "and LAMBDA * W to their gradients (default 0; on --resume, the checkpoint's)",
    )
    add_seed_argument(loop, default=None, what="param initializers, the minibatch draws and dropout's masks")
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
    loop.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="train data-parallel in N processes on this machine (torch.distributed, gloo): each takes "
        'batch/N rows of every minibatch; needs torch (pip install "graphc[distributed]"); '
        "for several machines, launch with torchrun instead (docs/interop.md)",
    )
    add_threads_argument(loop)
    files = parser.add_argument_group("files")
    files.add_argument("--save", metavar="W.npz", help="write a checkpoint after every epoch and at the end")
    files.add_argument("--resume", metavar="W.npz", help="continue training from a checkpoint")
    files.add_argument("--log", metavar="LOG.csv", help="write the per-epoch figures as CSV")
    files.add_argument("--plot", metavar="CURVES.png", help="draw loss and accuracy curves as a PNG")
    add_json_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")


# --- before training ---------------------------------------------------------------


# A trial write of each output before any work: --save's again at the
# checkpoint's size once the model is known; a log and a plot are small.
_PROBE_BYTES = {"save": 0, "log": 4096, "plot": 256 * 1024}


def _check_writable(flag: str, path: str | None, size: int = 0) -> None:
    """Fail before training, not after an hour of it: write `size` bytes where the
    file will go (fsync'ed, so that a full disk says so now), and take them away."""
    from graphc.fileio import probe_write

    if path is None:
        return
    try:
        probe_write(path, size)
    except GraphcError as err:
        raise GraphcError(f"{flag} {path}: {err.message}", hint=err.diagnostics[0].hint, code=err.code) from None


def _lock_save(stack: contextlib.ExitStack, path: str | None) -> None:
    """Hold --save's lock for the whole run: a second training into the same file
    is refused at its start, rather than both reporting success with one lost."""
    from graphc.fileio import exclusive_lock

    if path is None or (os.path.exists(path) and not os.path.isfile(path)):
        return  # a device (--save /dev/null) has no file beside it to lock
    try:
        stack.enter_context(exclusive_lock(Path(path).resolve()))
    except GraphcError as err:
        raise GraphcError(f"--save {path}: {err.message}", hint=err.diagnostics[0].hint, code=err.code) from None


def _check_save_space(path: str | None, program: Program, options: TrainOptions, epochs: int) -> None:
    """The probe at its real size: the checkpoint's bytes, twice where no file is
    there yet (the second save writes its new file while the first still stands)."""
    from graphc.checkpoint import checkpoint_bytes

    if path is None:
        return
    size = checkpoint_bytes(program, options.optimizer, epochs)
    try:
        existing = os.stat(path).st_size
    except OSError:
        existing = 0
    _check_writable("--save", path, max(size, 2 * size - existing))


def _seed(args: argparse.Namespace, meta: CheckpointMeta | None) -> int:
    """--seed, else the resumed run's, else 0."""
    if args.seed is not None:
        return args.seed
    return meta.seed if meta is not None and meta.seed is not None else 0


def _check_batch(args: argparse.Namespace, meta: CheckpointMeta | None, program: Program) -> None:
    """The batch size (--batch, else the resumed checkpoint's) within the size limits,
    before the minibatch buffers are made."""
    if args.batch is not None:
        check_batch_size(program.compiled, args.batch, f"--batch {args.batch}")
    elif meta is not None and meta.batch is not None:
        what = f"the checkpoint's batch size {meta.batch} (meta field `batch`)"
        check_batch_size(program.compiled, meta.batch, what, where=args.resume)


def _options(args: argparse.Namespace, meta: CheckpointMeta | None, train_size: int, seed: int) -> TrainOptions:
    """Flags, else what the resumed checkpoint was trained with, else the book's defaults."""
    from graphc.train import TrainOptions, epoch_iters

    optimizer = args.optimizer or (meta.optimizer if meta else None) or "sgd"
    lr = args.lr
    if lr is None and meta is not None and meta.optimizer == optimizer:
        lr = meta.lr
    batch = args.batch or (meta.batch if meta else None) or DEFAULT_BATCH
    iters = args.epochs * epoch_iters(train_size, batch) if args.epochs is not None else args.iters or DEFAULT_ITERS
    decay = args.weight_decay
    if decay is None:
        decay = meta.weight_decay if meta is not None else 0.0
    sample = args.eval_sample or (meta.eval_sample if meta else None)
    return TrainOptions(
        iters=iters,
        batch=batch,
        optimizer=optimizer,
        lr=lr,
        seed=seed,
        engine=args.engine,
        weight_decay=decay,
        eval_sample=sample,
        threads=args.threads,
    )


@dataclass(frozen=True)
class _Session:
    """What a training run starts from: the program, its data, and the trainer."""

    program: Program
    data: TrainData
    options: TrainOptions
    trainer: Trainer


def _prepare(args: argparse.Namespace, team: Team | None = None) -> _Session:
    """The program (weights and dtype from --resume), the data and the trainer,
    every input checked before the first iteration."""
    from graphc.checkpoint import read_checkpoint, read_meta
    from graphc.train import Trainer, load_data

    meta = read_meta(args.resume) if args.resume else None
    # Declared dtypes stand unless --dtype (or the resumed run's) says otherwise.
    dtype = args.dtype or (meta.dtype if meta is not None else None)
    seed = _seed(args, meta)
    program, _ = load_program(argparse.Namespace(**{**vars(args), "seed": seed}), dtype=dtype)
    # Checked against the graph header by header before any array is read.
    resume = read_checkpoint(args.resume, program) if args.resume else None
    _check_batch(args, meta, program)
    data = load_data(args.data, program, data_dir=args.data_dir, progress=not args.no_progress)
    options = _options(args, meta, data.train_size, seed)
    if team is not None and team.rank:
        options = replace(options, evaluate=False)  # rank 0 alone evaluates
    trainer = Trainer(program, data, options, resume=resume, team=team)
    _check_save_space(args.save, program, options, trainer.epochs)
    return _Session(program, data, options, trainer)


# --- training ------------------------------------------------------------------------


def _accuracies(record: EpochRecord, trainer: Trainer) -> str:
    """`train acc A  test acc B`, each followed by `(K)` where it was measured on the first K images only."""
    train_rows, test_rows = trainer.measured_on(record)
    data = trainer.data
    train_note = f" ({train_rows})" if train_rows < data.train_size else ""
    test_note = f" ({test_rows})" if test_rows < len(data.x_test) else ""
    return f"train acc {record.train_acc:.4f}{train_note}  test acc {record.test_acc:.4f}{test_note}"


def _epoch_line(record: EpochRecord, trainer: Trainer) -> str:
    epochs = trainer.epochs
    width = len(str(epochs))
    line = f"epoch {record.epoch:>{width}}/{epochs}  iter {record.iteration:>6}  loss {record.loss:.4f}"
    if record.train_acc is not None:
        line += "  " + _accuracies(record, trainer)
    return line + f"  {record.seconds:6.1f} s" + _threads_note(record, trainer)


def _threads_note(record: EpochRecord, trainer: Trainer) -> str:
    """With --threads auto: `  threads T, eval E`, the counts last chosen for the epoch's steps and its evaluation."""
    if trainer.options.threads != "auto":
        return ""
    done = record.iteration
    train = [c.threads for c in trainer.thread_choices if c.stage == "train" and c.iteration < done]
    evals = [c.threads for c in trainer.thread_choices if c.stage == "eval" and c.iteration <= done]
    return f"  threads {train[-1] if train else '-'}, eval {evals[-1] if evals else '-'}"


def _print_start(session: _Session, args: argparse.Namespace) -> None:
    from graphc.checkpoint import float_dtype_names

    program, data, options, trainer = session.program, session.data, session.options, session.trainer
    dtype_text = "/".join(float_dtype_names(program))
    print(
        f"training {program.name} on {data.name}: {data.train_size} train / {len(data.x_test)} test images, "
        f"{dtype_text}, {options.optimizer} lr {trainer.optimizer.lr:g}, batch {options.batch}, seed {options.seed}"
        + (f", weight decay {options.weight_decay:g}" if options.weight_decay else "")
        + (f", each epoch measured on the first {options.eval_sample} images" if options.eval_sample else "")
        + (", BLAS threads chosen by timing (--threads auto)" if options.threads == "auto" else "")
    )
    start_text = f"from iteration {trainer.iteration} " if trainer.iteration else ""
    epochs = f"{trainer.epochs} epoch{'s' * (trainer.epochs != 1)} of {trainer.iters_per_epoch}"
    print(f"{options.iters} iterations {start_text}({epochs})")
    if trainer.iteration >= options.iters:
        print(
            f"nothing to do: {args.resume} is at iteration {trainer.iteration} already; "
            f"pass a larger --iters to train further"
        )


def _progress_bar(session: _Session, args: argparse.Namespace) -> Any:
    """A tqdm bar on stderr when it is a terminal and there is work to do, else None."""
    from graphc.data import is_tty

    trainer, iters = session.trainer, session.options.iters
    if args.no_progress or not is_tty(sys.stderr) or trainer.iteration >= iters:
        return None
    from tqdm import tqdm

    return tqdm(
        total=iters,
        initial=trainer.iteration,
        file=sys.stderr,
        unit="it",
        dynamic_ncols=True,
        leave=False,
        smoothing=0.1,
    )


@dataclass(frozen=True)
class _Outcome:
    status: str  # "completed", "interrupted" or "diverged"
    result: TrainResult | None  # None when the loss diverged
    diverged: Diverged | None
    seconds: float
    saved: str | None  # the checkpoint holding the final state, if one does


def _train(session: _Session, args: argparse.Namespace) -> _Outcome:
    """Run the trainer, printing a line per epoch (and a progress bar on a terminal)."""
    from graphc.train import Diverged, write_log

    trainer = session.trainer
    bar = _progress_bar(session, args)
    out = sys.stdout
    running = [math.nan]

    def on_iteration(iteration: int, loss: float) -> None:
        running[0] = loss if math.isnan(running[0]) else 0.95 * running[0] + 0.05 * loss
        bar.update(1)
        if iteration % 25 == 0:
            bar.set_postfix_str(f"loss {running[0]:.4f}", refresh=False)

    def on_epoch(record: EpochRecord) -> None:
        if not args.json:
            line = _epoch_line(record, trainer)
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
    status = "diverged" if diverged is not None or result is None else result.status
    return _Outcome(status, result, diverged, seconds, _final_save(session, args, status))


def _final_save(session: _Session, args: argparse.Namespace, status: str) -> str | None:
    """Where the final state is saved: --save (the trainer has written it), or,
    interrupted without --save, NAME-interrupted.npz; None if it is nowhere."""
    trainer, save = session.trainer, args.save
    writes = trainer.team is None or trainer.team.rank == 0  # one worker writes: rank 0
    if status == "interrupted" and save is None and writes and trainer.params_finite():
        save = f"{session.program.name}-interrupted.npz"
        trainer.save(save)
    return save if save and trainer.saved_at == trainer.iteration else None


def _write_reports(session: _Session, args: argparse.Namespace, outcome: _Outcome) -> None:
    """--log and --plot, as the run ended."""
    import numpy as np

    from graphc.train import write_curves, write_log

    trainer, result = session.trainer, outcome.result
    if args.log:
        write_log(args.log, trainer.history)
    if args.plot:
        losses = result.losses if result is not None else np.zeros(0)
        start = result.start_iteration if result is not None else trainer.iteration
        title = f"{session.program.name} on {session.data.name}"
        write_curves(args.plot, trainer.history, losses, start, title=title)


# --- after training -------------------------------------------------------------------


def _summary(session: _Session, outcome: _Outcome) -> dict[str, Any]:
    """The --json report."""
    from graphc.checkpoint import float_dtype_names

    program, trainer, options, result = session.program, session.trainer, session.options, outcome.result
    last = trainer.history[-1] if trainer.history else None
    return {
        "graph": program.name,
        "data": session.data.name,
        "status": outcome.status,
        "train_acc": last.train_acc if last else None,
        "test_acc": last.test_acc if last else None,
        "loss": last.loss if last else None,
        "measured_at": last.iteration if last else None,
        "iters": trainer.iteration,
        "iters_run": result.iters if result is not None else 0,
        "epochs": last.epoch if last else 0,
        "seconds": round(outcome.seconds, 3),
        "eval_seconds": round(result.eval_seconds if result is not None else 0.0, 3),
        "iters_per_second": round(result.iters_per_second if result is not None else 0.0, 1),
        "dtype": "/".join(float_dtype_names(program)),
        "optimizer": options.optimizer,
        "lr": trainer.optimizer.lr,
        "weight_decay": options.weight_decay,
        "eval_sample": options.eval_sample,
        "batch": options.batch,
        "seed": options.seed,
        "engine": trainer.engine,
        "threads": options.threads,
        "thread_choices": [c.as_dict() for c in trainer.thread_choices],
        "saved": outcome.saved,
        "history": [r.as_dict() for r in trainer.history],
    }


def _print_end(session: _Session, outcome: _Outcome) -> None:
    trainer, result = session.trainer, outcome.result
    if result is not None and result.iters:
        print(
            f"trained {result.iters} iterations in {outcome.seconds:.1f} s ({trainer.engine}): "
            f"{result.iters_per_second:.0f} it/s, {result.eval_seconds:.1f} s of it evaluating and saving"
        )
    last = trainer.history[-1] if trainer.history else None
    if last is not None and last.train_acc is not None:
        label = "final:" if last.iteration == trainer.iteration else f"last measured, at iteration {last.iteration}:"
        print(f"{label} {_accuracies(last, trainer)}")


def _interrupted(session: _Session, outcome: _Outcome, args: argparse.Namespace) -> int:
    iteration = session.trainer.iteration
    if outcome.saved:
        print(f"interrupted at iteration {iteration}; saved {outcome.saved}", file=sys.stderr)
        print(
            f"continue with: graphc train {args.file} --resume {outcome.saved} --save {outcome.saved}", file=sys.stderr
        )
    else:
        print(f"interrupted at iteration {iteration}; the params hold NaN or inf, nothing saved", file=sys.stderr)
    return ExitCode.INTERRUPTED


def _report(session: _Session, outcome: _Outcome, args: argparse.Namespace) -> int:
    """Print how the run went; the exit status."""
    if args.json:
        print_json(_summary(session, outcome))
    if outcome.diverged is not None:
        print(outcome.diverged.render(), file=sys.stderr)
        return ExitCode.CHECK_FAILED
    if not args.json:
        _print_end(session, outcome)
    if outcome.status == "interrupted":
        return _interrupted(session, outcome, args)
    if not args.json:
        if outcome.saved:
            print(f"saved {outcome.saved} (iteration {session.trainer.iteration})")
        for path in (args.log, args.plot):
            if path:
                print(f"wrote {path}")
    return ExitCode.OK


def run(args: argparse.Namespace) -> int:
    if (args.workers or 1) > 1 or "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        from graphc import distributed

        return distributed.run(args)
    return train(args)


def check_iters(args: argparse.Namespace) -> None:
    if args.iters is not None and args.epochs is not None:
        raise GraphcError(
            "give --iters or --epochs, not both",
            hint="--epochs E is E * (train size / batch) iterations, e.g. 600 an epoch for MNIST with batch 100",
            code="E505",
        )


def train(args: argparse.Namespace, team: Team | None = None) -> int:
    """The run, in this process: alone, or as one worker of a team (graphc.distributed),
    where a worker other than rank 0 is given no files to write and prints nothing."""
    check_iters(args)
    for flag, size in _PROBE_BYTES.items():
        _check_writable(f"--{flag}", getattr(args, flag), size)
    with contextlib.ExitStack() as stack:
        _lock_save(stack, args.save)
        session = _prepare(args, team)
        if team is not None:
            team.ready()  # every worker prepared, or they all stop here
        if not args.json:
            _print_start(session, args)
        outcome = _train(session, args)
        if team is not None and team.rank:
            return {"diverged": ExitCode.CHECK_FAILED, "interrupted": ExitCode.INTERRUPTED}.get(outcome.status, 0)
        _write_reports(session, args, outcome)
        return _report(session, outcome, args)

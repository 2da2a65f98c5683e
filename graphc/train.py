"""Training a Program on a labelled image dataset: the book's minibatch loop.

    program = graphc.compile_file("models/two_layer_net.graph", seed=0)
    data = load_data("mnist", program)               # checked against the graph once
    trainer = Trainer(program, data, TrainOptions(iters=2000))
    result = trainer.run()
    result.test_acc                                  # 0.95...

Each iteration draws `batch` random training rows (with replacement, from a
numpy Generator seeded with `seed`, a block of iterations at a time),
computes the loss and the gradient of every param with the program's lean
training plan, and lets the optimizer move the params in place. After every
epoch (train_size / batch iterations) and at the end, the train and test
accuracies are measured with the forward-only inference plan: with
eval_sample=K, each epoch's on the first K images of each set only, the
end's always on the whole sets.

Which inputs receive the images and the labels is declared in the graph
(`input x: f64[N, 784] from images`) or inferred from the inputs' shapes.

Nothing here prints: progress goes to the callbacks the caller passes, so the
command line and tests drive the same loop. Same seed, same data, same
options: bit-identical weights, also across a save and a resume (at a fixed
BLAS thread count, the default; `threads="auto"` chooses one by timing, and
another count rounds the products differently: graphc/threads.py).
"""

from __future__ import annotations

import contextlib
import io
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc import limits
from graphc.checkpoint import Checkpoint, EpochRecord, apply_weights, save_checkpoint
from graphc.data import PIXEL_MAX, load_mnist
from graphc.errors import GraphcError, did_you_mean
from graphc.ir import DTYPES, InputDecl, TensorType
from graphc.optim import OPTIMIZERS, Optimizer, WeightDecay, make_optimizer
from graphc.program import Program
from graphc.threads import (
    AUTO,
    DEFAULT_THREADS,
    EVAL_PROBE_ROWS,
    BlasThreads,
    ThreadChoice,
    Threads,
    ThreadTuner,
    choose_threads,
)

if TYPE_CHECKING:
    from graphc.distributed import Team

DATASETS = ("mnist",)
ENGINES = ("auto", "codegen", "interpreter")
MNIST_CLASSES = 10
# Image layouts an MNIST input may declare, after the batch dim.
MNIST_LAYOUTS = ((784,), (28, 28), (1, 28, 28))


# --- which input gets what ---------------------------------------------------------


def _first_dim_symbolic(t: TensorType) -> bool:
    return t.ndim >= 1 and isinstance(t.shape[0], str)


def _fits_images(t: TensorType) -> bool:
    return _first_dim_symbolic(t) and t.dtype in ("f32", "f64") and tuple(t.shape[1:]) in MNIST_LAYOUTS


def _fits_labels(t: TensorType, classes: int) -> bool:
    if not _first_dim_symbolic(t):
        return False
    return tuple(t.shape[1:]) == (classes,) or (t.dtype == "i64" and t.ndim == 1)


def find_roles(program: Program, classes: int = MNIST_CLASSES) -> tuple[str, str]:
    """(images input, labels input): declared with `from images`/`from labels`, else
    the one input whose shape fits; a GraphcError when none or several do."""
    inputs = program.ir.inputs()
    declared = {d.role: d for d in inputs if d.role}
    chosen: dict[str, InputDecl] = {}
    for role, fits, example, want in (
        ("images", _fits_images, "f64[N, 784]", "a [N, 784] (or [N, 1, 28, 28]) float input"),
        (
            "labels",
            lambda t: _fits_labels(t, classes),
            f"f64[N, {classes}]",
            f"a [N, {classes}] one-hot or [N] i64 input",
        ),
    ):
        if role in declared:
            decl = declared[role]
            if not fits(program.compiled.types[decl.name]):
                raise GraphcError(
                    f"input `{decl.name}` is fed `from {role}`, but MNIST {role} need {want}; "
                    f"`{decl.name}` is {program.compiled.types[decl.name]}",
                    decl.role_span or decl.span,
                    code="E903",
                )
            chosen[role] = decl
            continue
        taken = {d.name for d in chosen.values()}
        candidates = [
            d for d in inputs if d.role is None and d.name not in taken and fits(program.compiled.types[d.name])
        ]
        if len(candidates) == 1:
            chosen[role] = candidates[0]
        elif not candidates:
            raise GraphcError(
                f"no input of graph `{program.name}` can take the MNIST {role}: it needs {want}",
                program.ir.span,
                f"declare one, e.g. `input {'x' if role == 'images' else 't'}: {example} from {role}`",
                code="E903",
            )
        else:
            names = ", ".join(f"`{d.name}`" for d in candidates[:-1]) + f" and `{candidates[-1].name}`"
            raise GraphcError(
                f"cannot tell which input takes the MNIST {role}: "
                f"{names} {'both' if len(candidates) == 2 else 'all'} fit",
                candidates[0].span,
                f"say which with `from {role}`, e.g. `input {candidates[0].name}: ... from {role}`",
                related=[d.span for d in candidates[1:]],
                code="E903",
            )
    return chosen["images"].name, chosen["labels"].name


# --- data, as the program reads it ---------------------------------------------------


# Rows per inference pass. Each pass makes its rows' numbers from the bytes, so
# this bounds evaluation's memory: 2,000 rows of 784 float64 numbers are 12.5 MB
# (10,000 rows took a whole run's peak 120 MB higher, and were slower: predicting
# the 60,000 training images took 2.2 s against 1.8 s in float32, min of 4, busy machine).
EVAL_CHUNK = 2000


@dataclass(frozen=True, eq=False)
class ByteImages:
    """Images kept as their bytes and read as numbers (byte / PIXEL_MAX in
    `dtype`) a few rows at a time: a minibatch, an evaluation chunk. MNIST as
    float64 is 440 MB, as bytes 55 MB. Each number is the one dividing the
    whole set at once gives, bit for bit: one IEEE division of the same two
    numbers either way.

    Like an array: `shape`, `dtype` (of the numbers), `len`; a slice is
    another ByteImages over the same bytes (no copy); any other index, and
    np.asarray, give the numbers."""

    bytes: np.ndarray  # uint8, one row per image
    dtype: np.dtype[Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.bytes.shape)

    @property
    def ndim(self) -> int:
        return self.bytes.ndim

    def __len__(self) -> int:
        return len(self.bytes)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return ByteImages(self.bytes[index], self.dtype)
        return self.numbers(self.bytes[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        numbers = self.numbers(self.bytes)
        return numbers if dtype is None else numbers.astype(dtype, copy=False)

    def reshape(self, shape: tuple[int, ...]) -> ByteImages:
        return ByteImages(self.bytes.reshape(shape), self.dtype)

    def numbers(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`raw` (bytes of these images) as the numbers they stand for, into `out` if given."""
        return np.divide(raw, self.dtype.type(PIXEL_MAX), out=out, dtype=self.dtype)


@dataclass(frozen=True, eq=False)
class TrainData:
    """A dataset checked against a program, in the arrays its plans read."""

    name: str
    images: str  # the input fed the images
    labels: str  # the input fed the labels
    scores: str  # the value whose argmax is the prediction
    x_train: np.ndarray | ByteImages  # ByteImages as load_data loads MNIST: the set stays bytes
    t_train: np.ndarray  # as fed: class indices where the graph takes them, else one-hot
    y_train: np.ndarray  # class indices, for accuracy
    x_test: np.ndarray | ByteImages
    t_test: np.ndarray
    y_test: np.ndarray
    classes: int
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other inputs' fixed values
    # The bytes x_train was normalized from (x_train == x_train_bytes / PIXEL_MAX in its
    # dtype, exactly), when known. Minibatches are gathered from these and divided
    # as they are drawn: the same numbers, at a quarter of float32's memory traffic.
    x_train_bytes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x_train_bytes is not None and (
            self.x_train_bytes.dtype != np.uint8 or self.x_train_bytes.shape != self.x_train.shape
        ):
            raise ValueError(
                f"x_train_bytes must be uint8 shaped like x_train {self.x_train.shape}, "
                f"got {self.x_train_bytes.dtype}{list(self.x_train_bytes.shape)}"
            )

    @property
    def train_size(self) -> int:
        return len(self.x_train)

    def image_gatherer(self, out: np.ndarray) -> Callable[[np.ndarray], None]:
        """gather(index): the training images at `index` (in range) written into `out`."""
        take = np.take
        if self.x_train_bytes is None:
            x = np.asarray(self.x_train)  # the numbers (of ByteImages: all of them, made here)

            def gather_floats(index: np.ndarray) -> None:
                take(x, index, axis=0, out=out, mode="clip")

            return gather_floats
        source, raw = self.x_train_bytes, np.empty(out.shape, np.uint8)
        divide, scale, dtype = np.divide, out.dtype.type(PIXEL_MAX), out.dtype  # as ByteImages.numbers

        def gather(index: np.ndarray) -> None:
            take(source, index, axis=0, out=raw, mode="clip")
            divide(raw, scale, out=out, dtype=dtype)

        return gather


def check_loss(program: Program) -> None:
    """Training minimises the output backward is seeded at: it must be one number."""
    output, span = program.ir.outputs[0]
    t = program.types[output]
    if t.shape:
        raise GraphcError(
            f"cannot train graph `{program.name}`: its output `{output}` is {t}, not a scalar loss",
            span,
            "training minimises the first output; make it one number, e.g. "
            "`loss = softmax_loss(y, t)` and `output loss`",
            code="E902",
        )


def prepare_data(
    program: Program,
    train: tuple[np.ndarray | ByteImages, np.ndarray],
    test: tuple[np.ndarray | ByteImages, np.ndarray],
    *,
    name: str = "data",
    classes: int = MNIST_CLASSES,
) -> TrainData:
    """Check (images, class indices) pairs against the program once, casting and
    reshaping them to what its inputs declare (without copying when they already are)."""
    check_loss(program)
    return _prepare(program, find_roles(program, classes), train, test, name, classes)


def _prepare(
    program: Program,
    roles: tuple[str, str],
    train: tuple[np.ndarray | ByteImages, np.ndarray],
    test: tuple[np.ndarray | ByteImages, np.ndarray],
    name: str,
    classes: int,
) -> TrainData:
    """prepare_data, once the loss is checked and the roles (images, labels) are known."""
    images, labels = roles
    x_type, t_type = program.types[images], program.types[labels]
    feeds_labels_as_indices = labels in program.label_inputs or (t_type.dtype == "i64" and t_type.ndim == 1)
    sample = tuple(int(d) for d in x_type.shape[1:])
    assert x_type.dtype is not None  # the images input is f32 or f64 (find_roles)
    dtype = DTYPES[x_type.dtype]
    prepared: list[tuple[np.ndarray | ByteImages, np.ndarray, np.ndarray]] = []
    for split, (x, y) in (("train", train), ("test", test)):
        x = x if isinstance(x, ByteImages) else np.asarray(x)
        y = np.asarray(y)
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            raise GraphcError(
                f"{name} {split}: expected {len(x)} integer class labels, got {y.dtype}{list(y.shape)}", code="E903"
            )
        if math.prod(x.shape[1:]) != math.prod(sample):
            raise GraphcError(
                f"{name} {split} images have shape {list(x.shape[1:])}, input `{images}` expects {list(sample)}",
                program.ir.decls[images].span,
                code="E903",
            )
        x = x.reshape((len(x),) + sample)
        if isinstance(x, ByteImages):
            x = ByteImages(x.bytes, dtype)
        else:
            x = x.astype(dtype, copy=False)
        if feeds_labels_as_indices:
            t = y.astype(np.int64, copy=False)
        else:
            t = np.zeros((len(y), classes), DTYPES[t_type.dtype or "f64"])
            t[np.arange(len(y)), y] = 1
        bindings: dict[str, tuple[int, str]] = {}
        if isinstance(x, ByteImages):
            # Checked by their shape alone (a byte / 255 is a number any float holds),
            # with a stand-in of that shape and no memory behind it.
            program.feed(images, np.broadcast_to(np.zeros((), dtype), x.shape), bindings)
        else:
            x = program.feed(images, x, bindings)
        t = program.feed(labels, t, bindings)
        prepared.append((x, t, y))

    scores = program.scores_name()
    s_type = program.types[scores]
    if s_type.ndim != 2 or s_type.shape[0] != x_type.shape[0] or s_type.shape[1] != classes:
        raise GraphcError(
            f"cannot read predictions from graph `{program.name}`: `{scores}` is {s_type}, "
            f"not one score per class ([{x_type.shape[0]}, {classes}])",
            program.ir.decls[scores].span,
            "the output should be softmax_loss(scores, labels), with scores of shape [N, classes]",
            code="E904",
        )
    extra: dict[str, np.ndarray] = {}
    defaults = program.default_feeds()
    for decl in program.ir.inputs():
        if decl.name in (images, labels):
            continue
        declared = program.types[decl.name]
        if decl.init is None or decl.init.kind != "value" or any(isinstance(d, str) for d in declared.shape):
            raise GraphcError(
                f"input `{decl.name}` is fed neither images nor labels, and has no fixed value to train with",
                decl.span,
                f"give it a value (`input {decl.name} = 0.5`) or make it a param",
                code="E903",
            )
        extra[decl.name] = program.feed(decl.name, defaults[decl.name])
    (x_train, t_train, y_train), (x_test, t_test, y_test) = prepared
    return TrainData(name, images, labels, scores, x_train, t_train, y_train, x_test, t_test, y_test, classes, extra)


def load_data(
    name: str, program: Program, *, data_dir: str | Path | None = None, download: bool = True, progress: bool = True
) -> TrainData:
    """A known dataset (only "mnist" for now), loaded and checked against `program`."""
    if name not in DATASETS:
        raise GraphcError(f"unknown dataset `{name}`", hint="known datasets: " + ", ".join(DATASETS), code="E503")
    check_loss(program)  # before any download
    roles = find_roles(program)
    images_dtype = program.types[roles[0]].dtype
    assert images_dtype is not None  # f32 or f64 (find_roles)
    dtype = DTYPES[images_dtype]
    # The images stay bytes, read as numbers in the program's dtype a minibatch
    # or an evaluation chunk at a time (ByteImages).
    (train_bytes, train_labels), (test_bytes, test_labels) = load_mnist(
        data_dir, normalize=False, flatten=True, one_hot=False, dtype=np.uint8, download=download, progress=progress
    )
    train = (ByteImages(train_bytes, dtype), train_labels)
    test = (ByteImages(test_bytes, dtype), test_labels)
    data = _prepare(program, roles, train, test, name, MNIST_CLASSES)
    assert isinstance(data.x_train, ByteImages)
    return replace(data, x_train_bytes=data.x_train.bytes)


# --- minibatches ---------------------------------------------------------------------

DRAW_ROWS = 10_000  # minibatch rows drawn at once: 100 iterations' worth at batch 100


class MinibatchDraws:
    """The rows each iteration trains on: `batch` random training rows, with
    replacement, drawn for a block of iterations at once (one generator call
    per block rather than one per iteration, which cost 2% of a step).

    Blocks start at multiples of `block` iterations, so a resumed run needs the
    generator as it was before the block holding its next iteration:
    `resumable_rng(iteration)`, what a checkpoint stores.
    """

    def __init__(self, rng: np.random.Generator, size: int, batch: int):
        self.rng, self.size, self.batch = rng, size, batch
        self.block = max(1, min(100, DRAW_ROWS // batch))  # iterations per draw
        self.rows: np.ndarray | None = None  # [block, batch]
        self.first = 0  # the iteration of the block's first row
        self.state_before: dict[str, Any] | None = None  # the generator's, before drawing the block

    def indices(self, iteration: int) -> np.ndarray:
        """The rows of `iteration` (0-based)."""
        offset = iteration % self.block
        if self.rows is None or iteration - offset != self.first:
            self.state_before = dict(self.rng.bit_generator.state)
            self.rows = self.rng.integers(0, self.size, (self.block, self.batch))
            self.first = iteration - offset
        return self.rows[offset]

    def resumable_rng(self, iteration: int) -> np.random.Generator:
        """A generator a run resuming at `iteration` draws the same rows from."""
        rng = np.random.default_rng()
        if self.state_before is not None and self.first <= iteration < self.first + self.block:
            rng.bit_generator.state = self.state_before
        else:
            rng.bit_generator.state = self.rng.bit_generator.state
        return rng


# --- options and results -------------------------------------------------------------


def epoch_iters(train_size: int, batch: int) -> int:
    """Iterations an epoch takes: one pass's worth of minibatches (at least one)."""
    return max(train_size // batch, 1)


@dataclass(frozen=True)
class TrainOptions:
    iters: int = 10000  # total: a resumed run continues up to this many
    batch: int = 100
    optimizer: str = "sgd"
    lr: float | None = None  # None: the optimizer's default (SGD's is the book's 0.1)
    seed: int = 0  # the minibatch generator's seed
    evaluate: bool = True  # measure accuracies after every epoch
    # Each epoch's accuracies on the first eval_sample images of each set only (the
    # book's evaluate_sample_num_per_epoch), the last epoch's on the whole sets; None: whole sets always.
    eval_sample: int | None = None
    eval_chunk: int = EVAL_CHUNK  # rows per inference pass
    # Who runs the training step: the plan interpreter, or the numpy module
    # graphc generates for the graph (graphc compile --emit python). Both do
    # the same arithmetic in the same order, so the weights are bit-identical;
    # the generated module skips the interpreter's dispatch and measures a
    # little faster (bench/train_mnist.py). "auto" takes it wherever a module
    # can be generated (one float dtype), else the interpreter.
    engine: str = "auto"
    # λ of the book's L2 penalty ½λΣ‖W‖² over the weights (see decayed_weights); 0: none.
    weight_decay: float = 0.0
    # The BLAS's threads during the run: a fixed count (the default, 1: the same
    # weights on every rerun), or "auto": chosen by timing, rechecked each epoch
    # (graphc/threads.py).
    threads: Threads = DEFAULT_THREADS

    def __post_init__(self) -> None:
        if self.iters < 1:
            raise GraphcError(f"iterations must be at least 1, got {self.iters}", code="E502")
        if self.batch < 1:
            raise GraphcError(f"batch size must be at least 1, got {self.batch}", code="E502")
        if self.eval_sample is not None and self.eval_sample < 1:
            raise GraphcError(f"the evaluation sample must be at least 1 image, got {self.eval_sample}", code="E502")
        if self.optimizer not in OPTIMIZERS:
            make_optimizer(self.optimizer, {})  # raises, with a hint
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise GraphcError(f"learning rate must be a positive number, got {self.lr}", code="E502")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise GraphcError(f"weight decay must be a number at least 0, got {self.weight_decay}", code="E502")
        if self.engine not in ENGINES:
            raise GraphcError(
                f"unknown engine `{self.engine}`",
                hint=did_you_mean(self.engine, ENGINES) or "engines: " + ", ".join(ENGINES),
                code="E503",
            )
        if self.threads != AUTO and not (isinstance(self.threads, int) and self.threads >= 1):
            raise GraphcError(
                f"threads must be a whole number at least 1 or `{AUTO}`, got {self.threads!r}", code="E502"
            )


@dataclass
class TrainResult:
    status: str  # "completed" or "interrupted"
    start_iteration: int
    iteration: int
    history: list[EpochRecord]
    losses: np.ndarray  # every minibatch loss of this run
    seconds: float  # this run, evaluation included
    eval_seconds: float

    @property
    def iters(self) -> int:
        """Iterations this run did."""
        return self.iteration - self.start_iteration

    @property
    def train_acc(self) -> float | None:
        return self.history[-1].train_acc if self.history else None

    @property
    def test_acc(self) -> float | None:
        return self.history[-1].test_acc if self.history else None

    @property
    def iters_per_second(self) -> float:
        busy = self.seconds - self.eval_seconds
        return self.iters / busy if busy > 0 else 0.0


class Diverged(GraphcError):
    """The loss became NaN or infinite: a check that failed (exit status 1)."""

    def __init__(self, message: str, hint: str, iteration: int, tensor: str, loss: float):
        super().__init__(message, hint=hint, code="E901")
        self.iteration = iteration
        self.tensor = tensor
        self.loss = loss


# --- the loop --------------------------------------------------------------------------


def decayed_weights(program: Program) -> tuple[str, ...]:
    """The params weight decay applies to: those an op reads as a weight (affine's
    W, see Op.weights), in the order the graph declares them; biases are not."""
    read = {node.args[node.op.operands.index(operand)] for node in program.ir.nodes() for operand in node.op.weights}
    return tuple(name for name in program.param_names if name in read)


def _weight_decay(program: Program, lam: float) -> WeightDecay | None:
    if lam == 0:
        return None
    weights = decayed_weights(program)
    if not weights:
        raise GraphcError(
            f"weight decay needs weights to decay: graph `{program.name}` reads no param as the W of an `affine`",
            program.ir.span,
            "train without --weight-decay",
            code="E905",
        )
    return WeightDecay(program.params, weights, lam)


class Trainer:
    def __init__(
        self,
        program: Program,
        data: TrainData,
        options: TrainOptions = TrainOptions(),
        resume: Checkpoint | None = None,
        team: Team | None = None,
    ):
        rows = math.prod(data.x_train.shape[1:])
        if limits.too_many_elements(options.batch * rows):
            raise GraphcError(
                f"batch size {options.batch}: a minibatch of {options.batch:,} rows of {rows:,} numbers is more "
                "than graphc takes in one tensor",
                hint=limits.elements_hint(),
                code="E801",
            )
        self.program = program
        self.data = data
        self.options = options
        self.iters_per_epoch = epoch_iters(data.train_size, options.batch)
        self.epochs = math.ceil(options.iters / self.iters_per_epoch)
        self.optimizer: Optimizer = make_optimizer(options.optimizer, program.params, options.lr)
        self.decay = _weight_decay(program, options.weight_decay)
        self.rng = np.random.default_rng(options.seed)
        self.iteration = 0
        self.history: list[EpochRecord] = []
        self.seconds_before = 0.0  # training time of the runs this one resumes
        self.saved_at: int | None = None  # iteration of the last checkpoint written
        # The unfinished epoch's minibatch losses, summed, and how many.
        self.epoch_loss, self.epoch_count = 0.0, 0
        self._stop = False
        self._started: float | None = None
        self.engine = options.engine  # the one that ran: "codegen" or "interpreter"
        # What --threads auto chose, when (resumed runs' choices first); the BLAS's
        # limiter and auto's tuner while run() runs.
        self.thread_choices: list[ThreadChoice] = []
        self._blas: BlasThreads | None = None
        self._tuner: ThreadTuner | None = None
        if resume is not None:
            self._resume(resume)
        self.draws = MinibatchDraws(self.rng, data.train_size, options.batch)
        # Data-parallel (graphc.distributed): this process trains on its rows of every
        # minibatch, and the team averages the gradients over all workers.
        self.team = team
        self.rows = team.rows(options.batch) if team is not None else slice(0, options.batch)
        if team is not None:
            team.spread_dropout(program)

    def _resume(self, checkpoint: Checkpoint) -> None:
        where = checkpoint.path
        meta = checkpoint.meta
        if meta is None or not meta.resumable:
            raise GraphcError(
                "these weights hold no training state to resume from",
                where=where,
                hint="resume from a checkpoint written by `graphc train --save`",
                code="E709",
            )
        if meta.optimizer != self.optimizer.name:
            raise GraphcError(
                f"the checkpoint was trained with {meta.optimizer}, not {self.optimizer.name}",
                where=where,
                hint=f"resume with `--optimizer {meta.optimizer}`",
                code="E710",
            )
        apply_weights(self.program, checkpoint)
        try:
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        except GraphcError as err:
            raise GraphcError(f"corrupt training state: {err.message}", where=where, code=err.code) from None
        self.rng = meta.rng()
        dropout_rng = meta.dropout_rng()
        if dropout_rng is not None:
            self.program.rng.bit_generator.state = dropout_rng.bit_generator.state
        self.history = list(meta.history)
        self.iteration = meta.iteration
        self.seconds_before = meta.seconds
        self.epoch_loss, self.epoch_count = meta.epoch_loss, meta.epoch_count
        self.thread_choices = list(meta.thread_choices)

    # --- evaluation ---

    def predict(self, x: np.ndarray | ByteImages) -> np.ndarray:
        """Predicted class of every row, by the inference plan in chunks."""
        return predict(self.program, self.data, x, self.options.eval_chunk)

    def accuracy(self, x: np.ndarray | ByteImages, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == y)) if len(y) else float("nan")

    def _choose_eval_threads(self) -> None:
        """auto: evaluation's own count, by timing a forward pass over a slice of the test images."""
        if self._blas is None or self._tuner is None or not self.options.evaluate:
            return
        probe = self.data.x_test[:EVAL_PROBE_ROWS]
        chosen, seconds = choose_threads(lambda: self.predict(probe), self._tuner.counts, self._blas)
        self.thread_choices.append(ThreadChoice(self.iteration, "eval", chosen, tuple(seconds.items())))

    def measured_on(self, record: EpochRecord) -> tuple[int, int]:
        """How many (train, test) images the record's accuracies were measured on:
        the first eval_sample of each set, or, at the end of training, all of them."""
        sizes = (self.data.train_size, len(self.data.x_test))
        sample = self.options.eval_sample
        if sample is None or record.iteration >= self.options.iters:
            return sizes
        return (min(sample, sizes[0]), min(sample, sizes[1]))

    # --- checkpoints ---

    def save(self, path: str | Path) -> None:
        """Everything a resume needs: params, optimizer state, iteration, generator state."""
        save_checkpoint(
            path,
            self.program,
            iteration=self.iteration,
            optimizer=self.optimizer,
            rng=self.draws.resumable_rng(self.iteration),
            dropout_rng=self.program.rng if any(s.op.random for s in self.program.plan.forward) else None,
            history=self.history,
            data=self.data.name,
            batch=self.options.batch,
            seed=self.options.seed,
            iters=self.options.iters,
            seconds=self.seconds_before + self._elapsed(),
            epoch_loss=self.epoch_loss,
            epoch_count=self.epoch_count,
            weight_decay=self.options.weight_decay,
            eval_sample=self.options.eval_sample,
            threads=self.options.threads,
            thread_choices=self.thread_choices,
        )
        self.saved_at = self.iteration

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started if self._started is not None else 0.0

    # --- stopping ---

    def request_stop(self) -> None:
        """Stop cleanly after the current iteration (what Ctrl-C does under handle_sigint);
        before run(), the run stops before its first."""
        self._stop = True

    @contextlib.contextmanager
    def _sigint_stops(self, enabled: bool) -> Iterator[None]:
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: FrameType | None) -> None:
            self._stop = True
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # --- training ---

    def run(
        self,
        *,
        on_iteration: Callable[[int, float], None] | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        checkpoint: str | Path | None = None,
        handle_sigint: bool = False,
    ) -> TrainResult:
        """Train up to options.iters iterations.

        on_iteration(iteration, loss) after every update; on_epoch(record) after
        every epoch's evaluation. With `checkpoint`, the state is saved there
        after every epoch and at the end, so a run that diverges leaves its last
        good state. With handle_sigint, Ctrl-C stops after the current iteration
        (status "interrupted"); a second Ctrl-C raises KeyboardInterrupt.
        Raises Diverged when the loss is not finite.
        """
        program, data, options = self.program, self.data, self.options
        x, t = data.x_train, data.t_train
        batch = self.rows.stop - self.rows.start
        team, rows = self.team, self.rows
        # One buffer per minibatch, refilled in place: no allocation per step.
        x_batch = np.empty((batch,) + x.shape[1:], x.dtype)
        t_batch = np.empty((batch,) + t.shape[1:], t.dtype)
        feeds = dict(data.extra)
        feeds[data.images] = x_batch
        feeds[data.labels] = t_batch
        # SGD and momentum take lr * gradient: backward is seeded with lr, not 1.
        optimizer = self.optimizer
        lr_scaled = optimizer.takes_lr_scaled
        assert program.plan.seed is not None  # a training plan is seeded at the loss
        loss_type = program.types[program.plan.seed]
        dout = np.ones((), DTYPES.get(loss_type.dtype or "f64", np.float64))
        loss_and_grads = self._training_step(feeds, dout)
        step = optimizer.step
        params = program.params
        decay = self.decay
        rows_of = self.draws.indices
        take = np.take
        gather_images = data.image_gatherer(x_batch)
        isfinite = math.isfinite
        per_epoch = self.iters_per_epoch
        stop_at = options.iters

        start = self.iteration
        losses: list[float] = []
        epoch_loss, epoch_count = self.epoch_loss, self.epoch_count
        eval_seconds = 0.0
        status = "completed"
        self._started = time.perf_counter()
        blas, tuner = self._apply_threads()
        # NaN and inf are caught and reported by the loss check, not warned about.
        with blas, self._sigint_stops(handle_sigint), np.errstate(all="ignore"):
            try:
                while self.iteration < stop_at:
                    if self._stop if team is None else team.stopping:  # workers stop together
                        status = "interrupted"
                        break
                    if tuner is not None and tuner.trying:
                        tuner.tick()
                    index = rows_of(self.iteration)[rows]
                    gather_images(index)
                    take(t, index, axis=0, out=t_batch, mode="clip")
                    if lr_scaled:
                        dout[()] = optimizer.lr  # a callback may have changed it
                    loss, grads = loss_and_grads()
                    if team is not None:  # the whole minibatch's mean loss and gradients
                        loss, grads = team.average(self.iteration, loss, grads, self._stop)
                    value = float(loss)
                    if decay is not None:  # the penalty is part of the loss reported
                        value += decay.penalty(params)
                        grads = decay.add_gradient(params, grads, float(dout) if lr_scaled else 1.0)
                    if not isfinite(value):
                        self._diverged(value, feeds, grads, checkpoint)
                    step(params, grads, lr_scaled=lr_scaled)
                    self.iteration += 1
                    losses.append(value)
                    epoch_loss += value
                    epoch_count += 1
                    if on_iteration is not None:
                        on_iteration(self.iteration, value)
                    if self.iteration % per_epoch == 0 or self.iteration == stop_at:
                        began = time.perf_counter()
                        if tuner is not None:
                            tuner.finish()
                            self._choose_eval_threads()
                        self.epoch_loss, self.epoch_count = epoch_loss, epoch_count
                        record = self._end_epoch()
                        epoch_loss, epoch_count = self.epoch_loss, self.epoch_count
                        if checkpoint is not None:
                            self.save(checkpoint)
                        eval_seconds += time.perf_counter() - began
                        if tuner is not None and self.iteration < stop_at:
                            tuner.recheck(self.iteration)
                        if on_epoch is not None:
                            on_epoch(record)
            finally:  # also when the loss diverges
                self.epoch_loss, self.epoch_count = epoch_loss, epoch_count
                self._stop = False
                if tuner is not None:
                    tuner.finish()
                self._blas = self._tuner = None
        if status == "interrupted" and checkpoint is not None and self.params_finite():
            self.save(checkpoint)
        seconds = time.perf_counter() - self._started
        self.seconds_before += seconds
        self._started = None
        return TrainResult(status, start, self.iteration, list(self.history), np.array(losses), seconds, eval_seconds)

    def _apply_threads(self) -> tuple[BlasThreads, ThreadTuner | None]:
        """The BLAS limited to the run's thread count (restored when the run ends),
        and for auto the tuner that chooses it, its first trial starting now."""
        blas = BlasThreads()
        tuner = None
        if self.options.threads == AUTO:
            tuner = ThreadTuner(blas, on_choice=self.thread_choices.append)
            tuner.start(self.iteration)
        else:
            assert isinstance(self.options.threads, int)
            blas.set(self.options.threads)
        self._blas, self._tuner = blas, tuner
        return blas, tuner

    def _training_step(
        self,
        feeds: dict[str, np.ndarray],
        dout: np.ndarray,
    ) -> Callable[[], tuple[np.ndarray, dict[str, np.ndarray]]]:
        """() -> (loss, param gradients times dout) for `feeds`, whose arrays are
        refilled in place between calls, by the chosen engine."""
        program = self.program
        self.engine = self.options.engine
        if self.engine != "interpreter":
            from graphc.codegen import load_module

            try:
                model = load_module(program.compiled, dtype=program.dtype)
            except GraphcError:
                if self.engine == "codegen":
                    raise
                self.engine = "interpreter"
        if self.engine == "interpreter":
            return lambda: program.loss_and_grads(feeds, dout)
        self.engine = "codegen"
        # The optimizer moves the params in place, and the feeds are refilled in
        # place, so the arguments are made once.
        params = dict(program.params)
        arguments = {model.input_names[name]: value for name, value in feeds.items()}
        # Running statistics updated in place, dropout drawing from the program's generator, as the interpreter does.
        arguments.update(model.extra(program.state, program.rng))
        generated = model.module.loss_and_grads
        return lambda: generated(params, **arguments, dout=dout)

    def _end_epoch(self) -> EpochRecord:
        """Measure and record the epoch: a finished one, or the unfinished one the run ends in."""
        data = self.data
        train_acc = test_acc = None
        if self.options.evaluate:
            sample = self.options.eval_sample
            # The run's last measurement is on the whole sets, whatever the epochs' sample.
            if sample is None or self.iteration >= self.options.iters:
                sample = max(data.train_size, len(data.x_test))
            train_acc = self.accuracy(data.x_train[:sample], data.y_train[:sample])
            test_acc = self.accuracy(data.x_test[:sample], data.y_test[:sample])
        record = EpochRecord(
            epoch=math.ceil(self.iteration / self.iters_per_epoch),
            iteration=self.iteration,
            loss=self.epoch_loss / self.epoch_count,
            train_acc=train_acc,
            test_acc=test_acc,
            seconds=self.seconds_before + self._elapsed(),
        )
        if self.history and self.history[-1].epoch == record.epoch:
            # The unfinished epoch a resumed run began in, now further along: one
            # record per epoch, as an uninterrupted run has.
            self.history[-1] = record
        else:
            self.history.append(record)
        if self.iteration % self.iters_per_epoch == 0:
            self.epoch_loss, self.epoch_count = 0.0, 0
        return record

    def params_finite(self) -> bool:
        """No NaN or inf in any param: safe to save."""
        return all(np.isfinite(self.program.params[n]).all() for n in self.program.param_names)

    def _diverged(
        self, loss: float, feeds: dict[str, np.ndarray], grads: dict[str, np.ndarray], checkpoint: str | Path | None
    ) -> None:
        iteration = self.iteration + 1
        tensor = first_nonfinite(self.program, feeds, grads)
        lr = self.optimizer.lr
        hint = f"lower the learning rate (it is {lr:g}), e.g. --lr {lr / 10:g}"
        if checkpoint is not None:
            if self.saved_at is not None:
                hint += f"; {checkpoint} keeps the last good state, from iteration {self.saved_at}"
            else:
                hint += f"; nothing was saved to {checkpoint}"
        raise Diverged(
            f"training diverged at iteration {iteration}: the loss is {loss}; "
            f"the first tensor holding NaN or inf is {tensor}",
            hint,
            iteration,
            tensor,
            loss,
        )


def predict(program: Program, data: TrainData, x: np.ndarray | ByteImages, chunk: int = EVAL_CHUNK) -> np.ndarray:
    """Predicted class of every row of x (already in the program's layout and dtype;
    ByteImages are made numbers a chunk at a time)."""
    feeds = dict(data.extra)
    out = np.empty(len(x), np.int64)
    target = (data.scores,)
    with np.errstate(all="ignore"):
        for start in range(0, len(x), chunk):
            feeds[data.images] = np.asarray(x[start : start + chunk])
            scores = program.evaluate(target, feeds)[data.scores]
            out[start : start + chunk] = scores.argmax(axis=1)
    return out


def first_nonfinite(program: Program, feeds: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> str:
    """Where NaN or inf shows first: a param, else a forward value in plan order, else a gradient."""
    for name in program.param_names:
        if not np.isfinite(program.params[name]).all():
            return f"param `{name}`"
    program.forward(**feeds)
    for step in program.plan.forward:
        value = program.values.get(step.out)
        if value is not None and not np.isfinite(value).all():
            return f"`{step.text()}`"
    for name in program.param_names:
        if name in grads and not np.isfinite(grads[name]).all():
            return f"the gradient of `{name}`"
    return "the loss"


# --- reports --------------------------------------------------------------------------

LOG_COLUMNS = ("epoch", "iteration", "loss", "train_acc", "test_acc", "seconds")


def log_csv(history: list[EpochRecord]) -> str:
    """The per-epoch figures as CSV text, one row per epoch."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for record in history:
        row = record.as_dict()
        writer.writerow(
            ["" if row[c] is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c]) for c in LOG_COLUMNS]
        )
    return out.getvalue()


def write_log(path: str | Path, history: list[EpochRecord]) -> None:
    from graphc.fileio import write_text

    write_text(path, log_csv(history))


def write_curves(
    path: str | Path, history: list[EpochRecord], losses: np.ndarray, start_iteration: int = 0, title: str = ""
) -> None:
    """Loss and accuracy curves as a PNG: minibatch loss by iteration, accuracies by epoch."""
    # matplotlib is heavy: imported here, and without pyplot's global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from graphc.fileio import write_bytes

    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, acc_axes = figure.subplots(1, 2)
    if len(losses):
        steps = np.arange(start_iteration + 1, start_iteration + 1 + len(losses))
        loss_axes.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=0.6, label="minibatch loss")
    if history:
        loss_axes.plot(
            [r.iteration for r in history],
            [r.loss for r in history],
            "o-",
            color="tab:blue",
            markersize=3,
            label="mean loss per epoch",
        )
    loss_axes.set_xlabel("iteration")
    loss_axes.set_ylabel("loss")
    loss_axes.set_title("training loss")
    loss_axes.legend(loc="upper right")
    measured = [r for r in history if r.train_acc is not None]
    if measured:
        epochs = [r.epoch for r in measured]
        acc_axes.plot(epochs, [r.train_acc for r in measured], "o-", markersize=3, label="train")
        acc_axes.plot(epochs, [r.test_acc for r in measured], "s--", markersize=3, label="test")
        acc_axes.legend(loc="lower right")
    acc_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_axes.set_xlabel("epoch")
    acc_axes.set_ylabel("accuracy")
    acc_axes.set_title("accuracy")
    acc_axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    write_bytes(path, png.getvalue())  # atomically: a failure leaves the previous file


def train(program: Program, data: TrainData, options: TrainOptions = TrainOptions(), **run_options: Any) -> TrainResult:
    """Trainer(program, data, options).run(**run_options), in one call."""
    return Trainer(program, data, options).run(**run_options)


__all__ = [
    "DATASETS",
    "Diverged",
    "EpochRecord",
    "TrainData",
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "check_loss",
    "decayed_weights",
    "epoch_iters",
    "find_roles",
    "first_nonfinite",
    "load_data",
    "log_csv",
    "predict",
    "prepare_data",
    "train",
    "write_curves",
    "write_log",
]

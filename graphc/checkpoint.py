"""Checkpoints: a model's params, and what it takes to resume training, in one .npz.

Layout of the file (a plain numpy .npz; nothing in it is pickled):

    params/W1, params/b1, ...      each param, in the dtype it was trained in
    optimizer/steps                updates the optimizer has done (int64)
    optimizer/v/W1, ...            the optimizer's per-param state, if it has any
    meta                           one JSON string: format, version, graph name,
                                   structure and its SHA-256, iteration, optimizer
                                   and its hyperparameters, batch, seed, dtype, data,
                                   the minibatch generator's state, the per-epoch
                                   history, and the unfinished epoch's loss so far

A plain .npz whose names are exactly the graph's params (numpy.savez(path,
W1=..., b1=...)) also loads as weights; it has nothing to resume from.

The structure is the graph as text, one line per declaration (name, op,
operands, declared shapes and dtypes): weights saved from one graph are
refused by a graph that computes something else, naming the first line where
the two differ. Tensors are checked first, so a changed layer size is
reported as the tensor and its two shapes.

Files are written atomically (a temporary file beside the target, then a
rename) and read with allow_pickle=False. `meta` is parsed once, into a
frozen CheckpointMeta whose every field is checked: a wrong field is a
GraphcError naming the file and the field, as is every other way a file can
be wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from graphc.errors import GraphcError
from graphc.fileio import atomic_open
from graphc.ir import DTYPE_CHOICES, ConstDecl, InputDecl, OpNode, ParamDecl, TensorType, numpy_name
from graphc.optim import OPTIMIZERS, Optimizer
from graphc.program import Program

FORMAT = "graphc-checkpoint"
VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_NPY_MAGIC = b"\x93NUMPY"
_DAMAGED = "the file is damaged; use another checkpoint or train again"


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    iteration: int
    loss: float  # mean minibatch loss over the epoch's iterations
    train_acc: float | None
    test_acc: float | None
    seconds: float  # since training started, resumed runs included

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's `meta` entry, every field checked (read_checkpoint)."""

    graph: str
    structure: tuple[str, ...]
    structure_hash: str
    iteration: int = 0
    # What the run computed in: "float32" or "float64"; None for a graph run
    # in the float dtypes it declares, where those are several.
    dtype: str | None = None
    optimizer: str | None = None
    hyperparams: tuple[tuple[str, float], ...] = ()  # the optimizer's: lr, momentum, ...
    rng_state: str | None = None  # the minibatch generator's bit_generator.state, as JSON text
    history: tuple[EpochRecord, ...] = ()
    data: str | None = None
    batch: int | None = None
    seed: int | None = None
    iters: int | None = None
    seconds: float = 0.0  # training time so far, resumed runs included
    # The unfinished epoch: its minibatch losses summed, and how many there
    # are, so a resumed run's epoch mean is an uninterrupted run's.
    epoch_loss: float = 0.0
    epoch_count: int = 0
    version: int = VERSION

    @property
    def lr(self) -> float | None:
        return dict(self.hyperparams).get("lr")

    @property
    def resumable(self) -> bool:
        return self.rng_state is not None and self.optimizer is not None

    def rng(self) -> np.random.Generator:
        """A minibatch generator in the saved state."""
        assert self.rng_state is not None
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(self.rng_state)
        return rng

    def to_json(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "graph": self.graph,
            "structure_hash": self.structure_hash,
            "structure": list(self.structure),
            "iteration": self.iteration,
            "dtype": self.dtype,
        }
        if self.optimizer is not None:
            meta["optimizer"] = {"name": self.optimizer, **dict(self.hyperparams)}
        if self.rng_state is not None:
            meta["rng"] = json.loads(self.rng_state)
        meta["history"] = [r.as_dict() for r in self.history]
        for key in ("data", "batch", "seed", "iters"):
            if getattr(self, key) is not None:
                meta[key] = getattr(self, key)
        meta.update(seconds=self.seconds, epoch_loss=self.epoch_loss, epoch_count=self.epoch_count)
        return meta


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds. `meta` is None for a plain .npz of params."""

    params: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    meta: CheckpointMeta | None = None
    path: str = "<memory>"

    @property
    def iteration(self) -> int:
        return self.meta.iteration if self.meta is not None else 0

    @property
    def graph(self) -> str | None:
        return self.meta.graph if self.meta is not None else None

    @property
    def optimizer(self) -> str | None:
        return self.meta.optimizer if self.meta is not None else None

    @property
    def dtype(self) -> str | None:
        """The dtype the weights were trained in, where one; None: the graph's own."""
        return self.meta.dtype if self.meta is not None else None

    @property
    def resumable(self) -> bool:
        return self.meta is not None and self.meta.resumable


# --- structure ------------------------------------------------------------------


def _type_text(t: TensorType) -> str:
    return f"{t.dtype or 'literal'}{t.shape_text()}"


def _const_text(value: np.ndarray) -> str:
    if value.size <= 16:
        return json.dumps(np.asarray(value, dtype=np.float64).tolist())
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(value, dtype=np.float64).tobytes()).hexdigest()[:16]


def structure(program: Program) -> list[str]:
    """The graph as lines of text: what weights saved from it assume.

    Declared types, not the run's dtype: float32 weights load into the same
    graph run in float64, and the other way round.
    """
    compiled = program.compiled
    ir = compiled.ir
    lines = [f"graph {ir.name}"]
    for name in compiled.checked.order:
        decl = ir.decls[name]
        t = compiled.types.get(name)
        if isinstance(decl, InputDecl):  # its data role changes nothing the weights assume
            lines.append(f"input {name}: {_type_text(t)}")
        elif isinstance(decl, ParamDecl):
            lines.append(f"param {name}: {_type_text(t)}")
        elif isinstance(decl, ConstDecl):  # as declared: a literal's dtype is its reader's business
            lines.append(f"const {name}: {_type_text(decl.type)} = {_const_text(decl.value)}")
        elif isinstance(decl, OpNode):
            attrs = "".join(f", {k}={decl.attrs[k]!r}" for k in sorted(decl.attrs))
            lines.append(f"{name} = {decl.op.name}({', '.join(decl.args)}{attrs}): {_type_text(t)}")
    lines.extend(f"output {name}" for name, _ in ir.outputs)
    return lines


def structure_hash(program: Program) -> str:
    return hashlib.sha256("\n".join(structure(program)).encode("utf-8")).hexdigest()


# --- saving -----------------------------------------------------------------------


def float_dtype_names(program: Program) -> tuple[str, ...]:
    """The float dtypes the program computes in, as numpy names them:
    ("float32",), or ("float32", "float64") for a graph that mixes them."""
    floats = sorted({t.dtype for t in program.types.values() if t.dtype in ("f32", "f64")})
    return tuple(numpy_name(d) for d in floats) or ("float64",)


def save_checkpoint(
    path: str | Path,
    program: Program,
    *,
    iteration: int = 0,
    optimizer: Optimizer | None = None,
    rng: np.random.Generator | None = None,
    history: tuple[EpochRecord, ...] | list[EpochRecord] = (),
    data: str | None = None,
    batch: int | None = None,
    seed: int | None = None,
    iters: int | None = None,
    seconds: float = 0.0,
    epoch_loss: float = 0.0,
    epoch_count: int = 0,
) -> None:
    """Write program's params (and the training state given) to `path`, atomically."""
    dtypes = float_dtype_names(program)
    meta = CheckpointMeta(
        graph=program.name,
        structure=tuple(structure(program)),
        structure_hash=structure_hash(program),
        iteration=int(iteration),
        dtype=dtypes[0] if len(dtypes) == 1 else None,
        optimizer=optimizer.name if optimizer is not None else None,
        hyperparams=tuple(optimizer.hyperparams().items()) if optimizer is not None else (),
        rng_state=json.dumps(rng.bit_generator.state) if rng is not None else None,
        history=tuple(history),
        data=data,
        batch=batch,
        seed=seed,
        iters=iters,
        seconds=float(seconds),
        epoch_loss=float(epoch_loss),
        epoch_count=int(epoch_count),
    )
    arrays: dict[str, np.ndarray] = {f"params/{name}": program.params[name] for name in program.param_names}
    if optimizer is not None:
        arrays.update({f"optimizer/{key}": value for key, value in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps(meta.to_json(), sort_keys=True))
    try:
        with atomic_open(path) as handle:
            np.savez(handle, **arrays)
    except OSError as err:
        raise GraphcError(f"cannot write checkpoint: {err.strerror or err}", where=str(path)) from None


# --- loading ------------------------------------------------------------------------


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint (or a plain .npz of params) on its own terms."""
    where = str(path)
    path = Path(path)
    if not path.exists():
        raise GraphcError("no such weights file", where=where, hint="write one with `graphc train FILE --save W.npz`")
    if path.is_dir():
        raise GraphcError("is a directory, not a weights file", where=where)
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as err:
        raise GraphcError(f"cannot read weights: {err.strerror or err}", where=where) from None
    if head.startswith(_NPY_MAGIC):
        raise GraphcError(
            "is a single .npy array, not an .npz of weights",
            where=where,
            hint="save weights with numpy.savez(path, W1=W1, b1=b1, ...) or `graphc train --save`",
        )
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_EMPTY_ZIP_MAGIC)):
        raise GraphcError(
            "not an .npz file (it does not start as a zip archive does)",
            where=where,
            hint="weights are written by `graphc train --save W.npz` or numpy.savez",
        )
    arrays: dict[str, np.ndarray] = {}
    key = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise GraphcError(
                f"`{key}` holds pickled Python objects, which graphc never loads",
                where=where,
                hint="store numbers only, e.g. numpy.savez(path, W1=W1)",
            ) from None
        raise _corrupt(where, err) from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as err:
        raise _corrupt(where, err) from None

    if "meta" not in arrays or arrays["meta"].dtype.kind not in "US":
        # A plain .npz of params, named as the graph names them (a param may be called `meta`).
        return Checkpoint(params=arrays, path=where)
    try:
        raw = json.loads(str(arrays.pop("meta")))
    except (json.JSONDecodeError, TypeError):
        raise GraphcError("corrupt checkpoint: its `meta` entry is not JSON", where=where) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise GraphcError("not a graphc checkpoint: its `meta` entry names no graphc format", where=where)
    meta = _parse_meta(raw, where)
    params, state = {}, {}
    for name, array in arrays.items():
        if name.startswith("params/"):
            params[name.removeprefix("params/")] = array
        elif name.startswith("optimizer/"):
            state[name.removeprefix("optimizer/")] = array
        else:
            raise GraphcError(f"corrupt checkpoint: unexpected entry `{name}`", where=where)
    return Checkpoint(params=params, optimizer_state=state, meta=meta, path=where)


class _Fields:
    """Reads a checkpoint's raw meta field by field; a wrong one is a GraphcError naming it."""

    def __init__(self, raw: dict[str, Any], where: str):
        self.raw = raw
        self.where = where

    def wrong(self, name: str, want: str, value: Any) -> GraphcError:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return GraphcError(
            f"corrupt checkpoint: meta field `{name}` must be {want}, got {shown}", where=self.where, hint=_DAMAGED
        )

    def get(self, name: str, required: bool, source: dict[str, Any] | None = None, label: str | None = None) -> Any:
        source = self.raw if source is None else source
        if name not in source or source[name] is None:
            if required:
                raise GraphcError(
                    f"corrupt checkpoint: meta field `{label or name}` is missing", where=self.where, hint=_DAMAGED
                )
            return None
        return source[name]

    def whole(
        self,
        name: str,
        least: int,
        required: bool = False,
        source: dict[str, Any] | None = None,
        label: str | None = None,
    ) -> int | None:
        value = self.get(name, required, source, label)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise self.wrong(label or name, f"a whole number at least {least}", value)
        return value

    def number(
        self,
        name: str,
        want: str = "a number at least 0",
        least: float | None = 0.0,
        above: bool = False,
        source: dict[str, Any] | None = None,
        label: str | None = None,
        required: bool = False,
    ) -> float | None:
        value = self.get(name, required, source, label)
        if value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and least is not None:
            ok = value > least if above else value >= least
        if not ok:
            raise self.wrong(label or name, want, value)
        return float(value)

    def text(self, name: str, required: bool = False) -> str | None:
        value = self.get(name, required)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.wrong(name, "a name", value)
        return value


def _parse_meta(raw: dict[str, Any], where: str) -> CheckpointMeta:
    f = _Fields(raw, where)
    version = f.whole("version", 1, required=True)
    assert version is not None
    if version > VERSION:
        raise GraphcError(
            f"checkpoint format version {version} is newer than this graphc reads ({VERSION})",
            where=where,
            hint="upgrade graphc",
        )
    structure = f.get("structure", True)
    if not isinstance(structure, list) or not all(isinstance(line, str) for line in structure):
        raise f.wrong("structure", "a list of lines", structure)
    dtype = f.get("dtype", False)
    if dtype is not None and dtype not in DTYPE_CHOICES:
        raise f.wrong("dtype", " or ".join(DTYPE_CHOICES), dtype)

    optimizer, hyperparams = None, ()
    spec = f.get("optimizer", False)
    if spec is not None:
        if not isinstance(spec, dict):
            raise f.wrong("optimizer", "an optimizer's name and hyperparameters", spec)
        optimizer = f.get("name", True, spec, "optimizer.name")
        if optimizer not in OPTIMIZERS:
            raise f.wrong("optimizer.name", "one of " + ", ".join(OPTIMIZERS), optimizer)
        hyperparams = tuple(
            (key, f.number(key, "a positive number", above=True, source=spec, label=f"optimizer.{key}"))
            for key in spec
            if key != "name"
        )

    rng_state = None
    state = f.get("rng", False)
    if state is not None:
        try:
            np.random.default_rng().bit_generator.state = state
        except (TypeError, ValueError, KeyError):
            raise f.wrong("rng", "the state of a numpy PCG64 generator", state) from None
        rng_state = json.dumps(state)

    records = f.get("history", False)
    records = [] if records is None else records
    if not isinstance(records, list):
        raise f.wrong("history", "a list of epoch records", records)
    history = []
    names = [field.name for field in fields(EpochRecord)]
    for i, record in enumerate(records):
        label = f"history[{i}]"
        if not isinstance(record, dict) or sorted(record) != sorted(names):
            raise f.wrong(label, "a record of " + ", ".join(names), record)
        accuracy = "an accuracy between 0 and 1"
        train_acc, test_acc = (
            f.number(key, accuracy, source=record, label=f"{label}.{key}") for key in ("train_acc", "test_acc")
        )
        if any(acc is not None and acc > 1 for acc in (train_acc, test_acc)):
            key = "train_acc" if train_acc is not None and train_acc > 1 else "test_acc"
            raise f.wrong(f"{label}.{key}", accuracy, record[key])
        history.append(
            EpochRecord(
                epoch=f.whole("epoch", 1, True, record, f"{label}.epoch"),
                iteration=f.whole("iteration", 1, True, record, f"{label}.iteration"),
                loss=f.number("loss", "a number", least=None, source=record, label=f"{label}.loss", required=True),
                train_acc=train_acc,
                test_acc=test_acc,
                seconds=f.number("seconds", source=record, label=f"{label}.seconds") or 0.0,
            )
        )

    return CheckpointMeta(
        graph=f.text("graph", required=True),
        structure=tuple(structure),
        structure_hash=f.text("structure_hash", required=True),
        iteration=f.whole("iteration", 0, required=True),
        dtype=dtype,
        optimizer=optimizer,
        hyperparams=hyperparams,
        rng_state=rng_state,
        history=tuple(history),
        data=f.text("data"),
        batch=f.whole("batch", 1),
        seed=f.whole("seed", 0),
        iters=f.whole("iters", 1),
        seconds=f.number("seconds") or 0.0,
        epoch_loss=f.number("epoch_loss", "a number", least=None) or 0.0,
        epoch_count=f.whole("epoch_count", 0) or 0,
        version=version,
    )


def _corrupt(where: str, err: BaseException) -> GraphcError:
    reason = str(err) or type(err).__name__
    return GraphcError(f"corrupt or truncated .npz file ({reason})", where=where, hint=_DAMAGED)


def check_weights(program: Program, checkpoint: Checkpoint) -> None:
    """Raise a GraphcError naming the first tensor (or node) where the weights do not fit."""
    where = checkpoint.path
    held = checkpoint.params
    graph = program.name
    for name in program.param_names:
        if name not in held:
            listing = ", ".join(f"`{n}`" for n in held) or "nothing"
            raise GraphcError(
                f"no tensor for param `{name}` of graph `{graph}`", where=where, hint=f"the file holds {listing}"
            )
        array = held[name]
        expected = program.types[name].shape
        if array.dtype.kind not in "biuf":
            raise GraphcError(f"tensor `{name}` holds {array.dtype} values, not numbers", where=where)
        if array.shape != expected:
            raise GraphcError(
                f"tensor `{name}` has shape {list(array.shape)}, but param `{name}` of graph `{graph}` "
                f"has shape {list(expected)}",
                where=where,
                hint="the weights were saved from a graph with different layer sizes",
            )
    for name in held:
        if name not in program.param_names:
            raise GraphcError(
                f"tensor `{name}` is not a param of graph `{graph}`",
                where=where,
                hint="params: " + ", ".join(f"`{n}`" for n in program.param_names),
            )
    meta = checkpoint.meta
    if meta is None or meta.structure_hash == structure_hash(program):
        return
    here, saved = structure(program), meta.structure
    for ours, theirs in zip(here, saved):
        if ours != theirs:
            break
    else:
        ours = here[len(saved)] if len(here) > len(saved) else "(nothing)"
        theirs = saved[len(here)] if len(saved) > len(here) else "(nothing)"
    raise GraphcError(
        f"the weights were saved from a graph of a different structure: `{theirs}` there, `{ours}` here",
        where=where,
        hint=f"load them into the graph they were trained with (`{checkpoint.graph}`)",
    )


def apply_weights(program: Program, checkpoint: Checkpoint) -> None:
    """Check `checkpoint` fits `program`, then set the program's params from it."""
    check_weights(program, checkpoint)
    for name in program.param_names:
        # A private, writable copy in the program's dtype: training updates params in place.
        program.params[name] = np.array(checkpoint.params[name], dtype=program.params[name].dtype)


def load_weights(program: Program, path: str | Path) -> Checkpoint:
    """Read `path`, check it fits `program`, and set the program's params from it."""
    checkpoint = read_checkpoint(path)
    apply_weights(program, checkpoint)
    return checkpoint

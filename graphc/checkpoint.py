"""Checkpoints: a model's params, and what it takes to resume training, in one .npz.

Layout of the file (a plain numpy .npz; nothing in it is pickled):

    params/W1, params/b1, ...      each param, in the dtype it was trained in
    optimizer/steps                updates the optimizer has done (int64)
    optimizer/v/W1, ...            the optimizer's per-param state, if it has any
    state/bn1.running_mean, ...    the ops' state (batchnorm's running statistics), if any
    meta                           one JSON string: format, version, graph name,
                                   structure and its SHA-256, iteration, optimizer
                                   and its hyperparameters, batch, seed, dtype, data,
                                   the minibatch generator's state, the per-epoch
                                   history, the unfinished epoch's loss so far,
                                   and the weight decay's λ

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

import contextlib
import hashlib
import json
import math
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from graphc import limits
from graphc.errors import GraphcError
from graphc.fileio import (
    NPY_MAGIC,
    ArrayHeader,
    ArrayProblem,
    HugeInt,
    JSONProblem,
    atomic_open,
    parse_json,
    read_array_data,
    read_array_header,
    shown_json,
)
from graphc.ir import DTYPE_CHOICES, ConstDecl, InputDecl, OpNode, ParamDecl, TensorType, numpy_name
from graphc.optim import OPTIMIZERS, Optimizer
from graphc.program import Program
from graphc.threads import AUTO, ThreadChoice, Threads

FORMAT = "graphc-checkpoint"
VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
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
    weight_decay: float = 0.0  # λ of the L2 penalty trained with (train --weight-decay)
    eval_sample: int | None = None  # images per set each epoch was measured on (train --eval-sample)
    version: int = VERSION
    # The generator dropout draws its masks from (Program.rng), as JSON text; None for a graph without dropout.
    dropout_rng_state: str | None = None
    # train --threads: the setting (a count or "auto"; None before it was recorded)
    # and what auto chose, when (graphc/threads.py).
    threads: Threads | None = None
    thread_choices: tuple[ThreadChoice, ...] = ()

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

    def dropout_rng(self) -> np.random.Generator | None:
        """Dropout's generator in the saved state, if the run had one."""
        if self.dropout_rng_state is None:
            return None
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(self.dropout_rng_state)
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
        if self.dropout_rng_state is not None:
            meta["dropout_rng"] = json.loads(self.dropout_rng_state)
        meta["history"] = [r.as_dict() for r in self.history]
        for key in ("data", "batch", "seed", "iters", "eval_sample"):
            if getattr(self, key) is not None:
                meta[key] = getattr(self, key)
        meta.update(seconds=self.seconds, epoch_loss=self.epoch_loss, epoch_count=self.epoch_count)
        meta["weight_decay"] = self.weight_decay
        if self.threads is not None:
            meta["threads"] = self.threads
            meta["thread_choices"] = [choice.as_dict() for choice in self.thread_choices]
        return meta


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds. `meta` is None for a plain .npz of params."""

    params: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    meta: CheckpointMeta | None = None
    path: str = "<memory>"
    state: dict[str, np.ndarray] = field(default_factory=dict)  # the ops' (bn1.running_mean), not the optimizer's

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
        t = compiled.types[name]
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
    return _lines_hash(structure(program))


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
    dropout_rng: np.random.Generator | None = None,
    history: tuple[EpochRecord, ...] | list[EpochRecord] = (),
    data: str | None = None,
    batch: int | None = None,
    seed: int | None = None,
    iters: int | None = None,
    seconds: float = 0.0,
    epoch_loss: float = 0.0,
    epoch_count: int = 0,
    weight_decay: float = 0.0,
    eval_sample: int | None = None,
    threads: Threads | None = None,
    thread_choices: tuple[ThreadChoice, ...] | list[ThreadChoice] = (),
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
        dropout_rng_state=json.dumps(dropout_rng.bit_generator.state) if dropout_rng is not None else None,
        history=tuple(history),
        data=data,
        batch=batch,
        seed=seed,
        iters=iters,
        seconds=float(seconds),
        epoch_loss=float(epoch_loss),
        epoch_count=int(epoch_count),
        weight_decay=float(weight_decay),
        eval_sample=eval_sample,
        threads=threads,
        thread_choices=tuple(thread_choices),
    )
    arrays: dict[str, Any] = {f"params/{name}": program.params[name] for name in program.param_names}
    if optimizer is not None:
        arrays.update({f"optimizer/{key}": value for key, value in optimizer.state_dict().items()})
    arrays.update({f"state/{name}": value for name, value in program.state.items()})
    arrays["meta"] = np.array(json.dumps(meta.to_json(), sort_keys=True))
    try:
        with atomic_open(path) as handle:
            np.savez(handle, **arrays)
    except OSError as err:
        raise GraphcError(f"cannot write checkpoint: {err.strerror or err}", where=str(path), code="E604") from None


def checkpoint_bytes(program: Program, optimizer: str | None = None, epochs: int = 0) -> int:
    """About the bytes save_checkpoint writes for `program` trained with `optimizer`
    for `epochs` epochs, never fewer: what the disk must take (a write probe's size).

    The history counts for at most 1,000 epochs: a run asked to go on for ever
    (--iters 1e18) must not have its probe fill the disk.
    """
    params = sum(program.params[name].nbytes for name in program.param_names)
    state = sum(value.nbytes for value in program.state.values())
    slots = len(OPTIMIZERS[optimizer].slots) if optimizer is not None else 0
    entries = len(program.param_names) * (1 + slots) + len(program.state) + 2  # and optimizer/steps, meta
    # meta is numpy text, 4 bytes a character: the structure lines, a record per
    # epoch (about 160 characters) and the other fields (far under 2,000).
    meta = sum(len(line) + 4 for line in structure(program)) + 200 * min(epochs, 1000) + 2000
    # Each entry: an .npy header (128 bytes) and its zip headers and name, twice.
    return params * (1 + slots) + state + 8 + entries * 512 + 4 * meta


# --- loading ------------------------------------------------------------------------

# How numpy writes an .npz: each entry stored or deflated, nothing else.
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# What reading a damaged zip can raise, besides BadZipFile.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    OSError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OverflowError,
)
_NUMBERS_HINT = "store numbers only, e.g. numpy.savez(path, W1=W1)"
# The most an entry's .npy magic, version and header take before its data.
_HEADER_BYTES = 12 + 10_000


@contextlib.contextmanager
def _reading(where: str) -> Iterator[None]:
    """Zip and I/O failures while reading, as the GraphcError a person sees."""
    try:
        yield
    except _ZIP_ERRORS as err:
        raise _corrupt(where, err) from None


class _Npz:
    """An .npz opened for reading: its entries listed and checked against
    their declared sizes; headers and data read only when asked for, each
    entry read no further than its header says it reaches."""

    def __init__(self, archive: zipfile.ZipFile, where: str):
        self.archive = archive
        self.where = where
        self.entries: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            self._admit(info)

    def _admit(self, info: zipfile.ZipInfo) -> None:
        key = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy") or info.is_dir():
            raise self.damaged(f"entry `{_clip(info.filename)}` is not an .npy array")
        if key in self.entries:
            raise self.damaged(f"two entries are named `{_clip(info.filename)}`")
        if info.flag_bits & 0x1:
            raise self.damaged(f"entry `{_clip(key)}` is encrypted")
        if info.compress_type not in _COMPRESSIONS:
            method = info.compress_type
            raise self.damaged(f"entry `{_clip(key)}` is compressed in a way numpy never writes (zip method {method})")
        most = _HEADER_BYTES + limits.MAX_ELEMENTS * 8
        if key == "meta":
            most = max(most, _HEADER_BYTES + limits.MAX_META_CHARS * 4)
        if info.file_size > most:
            raise GraphcError(
                f"`{_clip(key)}` would inflate to {info.file_size:,} bytes, more than graphc reads for one array",
                where=self.where,
                hint=limits.elements_hint(),
                code="E801",
            )
        self.entries[key] = info

    def damaged(self, what: str) -> GraphcError:
        return GraphcError(f"corrupt checkpoint: {what}", where=self.where, hint=_DAMAGED, code="E702")

    def _problem(self, key: str, problem: ArrayProblem) -> GraphcError:
        default = {"type": _NUMBERS_HINT, "corrupt": _DAMAGED}.get(problem.kind)
        return GraphcError(
            f"`{_clip(key)}` {problem.reason}",
            where=self.where,
            hint=problem.hint or default,
            code="E801" if problem.kind == "size" else "E702",
        )

    def header(self, key: str, kinds: str = "biuf") -> ArrayHeader:
        """The entry's .npy header, checked, and checked against the entry's size."""
        info = self.entries[key]
        with _reading(self.where), self.archive.open(info) as stream:
            try:
                header = read_array_header(stream, kinds)
            except ArrayProblem as problem:
                raise self._problem(key, problem) from None
        claimed = header.offset + header.nbytes
        if info.file_size != claimed:
            raise self.damaged(
                f"entry `{_clip(key)}` holds {info.file_size:,} bytes, but its .npy header accounts for {claimed:,}"
            )
        return header

    def array(self, key: str, header: ArrayHeader) -> np.ndarray:
        """The entry's data (to its end, so that its CRC is checked)."""
        with _reading(self.where), self.archive.open(self.entries[key]) as stream:
            stream.read(header.offset)
            try:
                return read_array_data(stream, header)
            except ArrayProblem as problem:
                raise self._problem(key, problem) from None

    def meta(self) -> CheckpointMeta | None:
        """The parsed `meta` entry; None for a plain .npz of params (one may be called `meta`)."""
        if "meta" not in self.entries:
            return None
        header = self.header("meta", "biufUS")
        if header.dtype.kind not in "US":
            return None
        if header.shape != ():
            raise GraphcError(
                "corrupt checkpoint: its `meta` entry is not one JSON text", where=self.where, code="E702"
            )
        if header.size * header.dtype.itemsize > limits.MAX_META_CHARS * 4:
            raise self.damaged(f"its `meta` entry is {header.nbytes:,} bytes long, more than graphc reads")
        value = self.array("meta", header)[()]
        try:
            raw = parse_json(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError:
            raise GraphcError(
                "corrupt checkpoint: its `meta` entry is not JSON", where=self.where, code="E702"
            ) from None
        except JSONProblem as problem:
            if problem.depth is None:
                raise GraphcError(
                    "corrupt checkpoint: its `meta` entry is not JSON", where=self.where, code="E702"
                ) from None
            raise self.damaged(f"its `meta` entry is JSON {problem}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise GraphcError(
                "not a graphc checkpoint: its `meta` entry names no graphc format", where=self.where, code="E703"
            )
        return _parse_meta(raw, self.where)


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


@contextlib.contextmanager
def _open_npz(path: str | Path) -> Iterator[_Npz]:
    """The file at `path` as an _Npz, after the checks that say plainly what it is instead."""
    where = str(path)
    path = Path(path)
    if not path.exists():
        raise GraphcError(
            "no such weights file", where=where, hint="write one with `graphc train FILE --save W.npz`", code="E601"
        )
    if path.is_dir():
        raise GraphcError("is a directory, not a weights file", where=where, code="E602")
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as err:
        raise GraphcError(f"cannot read weights: {err.strerror or err}", where=where, code="E603") from None
    if head.startswith(NPY_MAGIC):
        raise GraphcError(
            "is a single .npy array, not an .npz of weights",
            where=where,
            hint="save weights with numpy.savez(path, W1=W1, b1=b1, ...) or `graphc train --save`",
            code="E701",
        )
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_EMPTY_ZIP_MAGIC)):
        raise GraphcError(
            "not an .npz file (it does not start as a zip archive does)",
            where=where,
            hint="weights are written by `graphc train --save W.npz` or numpy.savez",
            code="E701",
        )
    with _reading(where):
        archive = zipfile.ZipFile(path)
    with archive:
        yield _Npz(archive, where)


def read_meta(path: str | Path) -> CheckpointMeta | None:
    """A checkpoint's `meta`, checked (None for a plain .npz of params); no array is read."""
    with _open_npz(path) as npz:
        return npz.meta()


def read_checkpoint(path: str | Path, program: Program | None = None) -> Checkpoint:
    """Read and check a checkpoint (or a plain .npz of params).

    Every entry's header is read and checked first; with `program`, the params
    and the optimizer state are checked against it (names, shapes, the
    structure) before any array's data is read, so what is read is only what
    the graph can use.
    """
    where = str(path)
    with _open_npz(path) as npz:
        meta = npz.meta()
        headers = {key: npz.header(key) for key in npz.entries if meta is None or key != "meta"}
        params, state, op_state = _sort_entries(headers, meta, where)
        if program is not None:
            check_tensors(program, params, where)
            check_structure(program, meta, where)
            _check_state(program, meta, state, where)
            if meta is not None:
                check_op_state(program, op_state, where)
        arrays = {key: npz.array(key, header) for key, header in headers.items()}
    if meta is None:
        return Checkpoint(params=arrays, path=where)
    return Checkpoint(
        params={name: arrays[f"params/{name}"] for name in params},
        optimizer_state={key: arrays[f"optimizer/{key}"] for key in state},
        meta=meta,
        path=where,
        state={name: arrays[f"state/{name}"] for name in op_state},
    )


def _sort_entries(
    headers: dict[str, ArrayHeader], meta: CheckpointMeta | None, where: str
) -> tuple[dict[str, ArrayHeader], dict[str, ArrayHeader], dict[str, ArrayHeader]]:
    """(params, optimizer state, the ops' state) by name; a plain .npz holds params only."""
    if meta is None:
        return headers, {}, {}
    params, state, op_state = {}, {}, {}
    for key, header in headers.items():
        if key.startswith("params/"):
            params[key.removeprefix("params/")] = header
        elif key.startswith("optimizer/"):
            state[key.removeprefix("optimizer/")] = header
        elif key.startswith("state/"):
            op_state[key.removeprefix("state/")] = header
        else:
            raise GraphcError(f"corrupt checkpoint: unexpected entry `{_clip(key)}`", where=where, code="E702")
    return params, state, op_state


def _check_state(program: Program, meta: CheckpointMeta | None, state: Mapping[str, Any], where: str) -> None:
    """The optimizer state fits the optimizer the meta names, over the program's params."""
    if not state:
        return
    if meta is None or meta.optimizer is None:
        key = next(iter(state))
        raise GraphcError(f"corrupt checkpoint: unexpected entry `optimizer/{_clip(key)}`", where=where, code="E702")
    shapes = {name: program.params[name].shape for name in program.param_names}
    try:
        OPTIMIZERS[meta.optimizer].check_state(state, shapes)
    except GraphcError as err:
        raise GraphcError(f"corrupt training state: {err.message}", where=where, code=err.code) from None


# Counts in meta (iterations, batch, seed, ...) fit an int64, as everywhere in numpy.
_MOST = 2**63 - 1


class _Fields:
    """Reads a checkpoint's raw meta field by field; a wrong one is a GraphcError naming it."""

    def __init__(self, raw: dict[str, Any], where: str):
        self.raw = raw
        self.where = where

    def wrong(self, name: str, want: str, value: Any) -> GraphcError:
        shown = str(value) if isinstance(value, HugeInt) else shown_json(value)
        return GraphcError(
            f"corrupt checkpoint: meta field `{name}` must be {want}, got {shown}",
            where=self.where,
            hint=_DAMAGED,
            code="E702",
        )

    def get(self, name: str, required: bool, source: dict[str, Any] | None = None, label: str | None = None) -> Any:
        source = self.raw if source is None else source
        if name not in source or source[name] is None:
            if required:
                raise GraphcError(
                    f"corrupt checkpoint: meta field `{label or name}` is missing",
                    where=self.where,
                    hint=_DAMAGED,
                    code="E702",
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
        if value is not None and value > _MOST:
            raise self.wrong(label or name, f"a whole number at most {_MOST}", value)
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
            code="E704",
        )
    structure = f.get("structure", True)
    if not isinstance(structure, list) or not all(isinstance(line, str) for line in structure):
        raise f.wrong("structure", "a list of lines", structure)
    digest = f.text("structure_hash", required=True)
    if digest != _lines_hash(structure):
        raise GraphcError(
            "corrupt checkpoint: meta field `structure_hash` is not the SHA-256 of meta field `structure`: "
            "the file was edited or damaged",
            where=where,
            hint=_DAMAGED,
            code="E702",
        )
    dtype = f.get("dtype", False)
    if dtype is not None and dtype not in DTYPE_CHOICES:
        raise f.wrong("dtype", " or ".join(DTYPE_CHOICES), dtype)
    optimizer, hyperparams = _parse_optimizer(f)
    graph, iteration = f.text("graph", required=True), f.whole("iteration", 0, required=True)
    assert digest is not None and graph is not None and iteration is not None  # required: checked
    return CheckpointMeta(
        graph=graph,
        structure=tuple(structure),
        structure_hash=digest,
        iteration=iteration,
        dtype=dtype,
        optimizer=optimizer,
        hyperparams=hyperparams,
        rng_state=_parse_rng(f),
        dropout_rng_state=_parse_rng(f, "dropout_rng"),
        history=_parse_history(f),
        data=f.text("data"),
        batch=f.whole("batch", 1),
        seed=f.whole("seed", 0),
        iters=f.whole("iters", 1),
        seconds=f.number("seconds") or 0.0,
        epoch_loss=f.number("epoch_loss", "a number", least=None) or 0.0,
        epoch_count=f.whole("epoch_count", 0) or 0,
        weight_decay=f.number("weight_decay") or 0.0,
        eval_sample=f.whole("eval_sample", 1),
        version=version,
        threads=_parse_threads(f),
        thread_choices=_parse_thread_choices(f),
    )


def _lines_hash(lines: list[str] | tuple[str, ...]) -> str:
    # surrogatepass: JSON can spell lone surrogates, which a program's own lines never hold
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogatepass")).hexdigest()


def _parse_optimizer(f: _Fields) -> tuple[str | None, tuple[tuple[str, float], ...]]:
    spec = f.get("optimizer", False)
    if spec is None:
        return None, ()
    if not isinstance(spec, dict):
        raise f.wrong("optimizer", "an optimizer's name and hyperparameters", spec)
    name = f.get("name", True, spec, "optimizer.name")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise f.wrong("optimizer.name", "one of " + ", ".join(OPTIMIZERS), name)
    known = OPTIMIZERS[name]({}).hyperparams()
    hyperparams = []
    for key in spec:
        if key == "name":
            continue
        if key not in known:
            raise f.wrong("optimizer", f"{name}'s hyperparameters ({', '.join(known)})", spec)
        value = f.number(key, "a positive number", above=True, source=spec, label=f"optimizer.{key}", required=True)
        assert value is not None  # required: checked
        hyperparams.append((key, value))
    return name, tuple(hyperparams)


# A numpy PCG64 generator's state: 128-bit state and increment, and a buffered
# 32-bit half of a draw; each (field, bound, what) as meta names them.
_PCG64_WANT = "the state of a numpy PCG64 generator"
_PCG64_FIELDS = (
    ("state.state", 2**128, "a whole number from 0 to 2**128 - 1"),
    ("state.inc", 2**128, "a whole number from 0 to 2**128 - 1"),
    ("has_uint32", 2, "0 or 1"),
    ("uinteger", 2**32, "a whole number from 0 to 2**32 - 1"),
)


def _parse_rng(f: _Fields, key: str = "rng") -> str | None:
    """A generator's state (the minibatch generator's, or dropout's), as JSON text, once numpy has taken it."""
    state = f.get(key, False)
    if state is None:
        return None
    if not isinstance(state, dict) or sorted(state) != ["bit_generator", "has_uint32", "state", "uinteger"]:
        raise f.wrong(key, _PCG64_WANT, state)
    if state["bit_generator"] != "PCG64":
        raise f.wrong(key, _PCG64_WANT, state)
    if not isinstance(state["state"], dict) or sorted(state["state"]) != ["inc", "state"]:
        raise f.wrong(f"{key}.state", "a PCG64 generator's state and increment", state["state"])
    for name, bound, want in _PCG64_FIELDS:
        value = state["state"][name[6:]] if name.startswith("state.") else state[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < bound:
            raise f.wrong(f"{key}.{name}", want, value)
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError):  # numpy's own checks, should it have more
        raise f.wrong(key, _PCG64_WANT, state) from None
    return json.dumps(state)


def _parse_threads(f: _Fields) -> Threads | None:
    value = f.get("threads", False)
    if value is None or value == AUTO:
        return value
    return f.whole("threads", 1)


def _parse_thread_choices(f: _Fields) -> tuple[ThreadChoice, ...]:
    choices = f.get("thread_choices", False) or []
    if not isinstance(choices, list):
        raise f.wrong("thread_choices", "a list of thread choices", choices)
    parsed = []
    for i, choice in enumerate(choices):
        label = f"thread_choices[{i}]"
        if not isinstance(choice, dict) or sorted(choice) != ["iteration", "seconds", "stage", "threads"]:
            raise f.wrong(label, "a record of iteration, stage, threads, seconds", choice)
        if choice["stage"] not in ("train", "eval"):
            raise f.wrong(f"{label}.stage", "train or eval", choice["stage"])
        seconds = choice["seconds"]
        if not isinstance(seconds, dict) or not all(key.isdigit() for key in seconds):
            raise f.wrong(f"{label}.seconds", "seconds by thread count", seconds)
        timed = [
            (int(key), f.number(key, source=seconds, label=f"{label}.seconds.{key}", required=True) or 0.0)
            for key in seconds
        ]
        iteration = f.whole("iteration", 0, True, choice, f"{label}.iteration")
        threads = f.whole("threads", 1, True, choice, f"{label}.threads")
        assert iteration is not None and threads is not None  # required: checked
        parsed.append(ThreadChoice(iteration, choice["stage"], threads, tuple(timed)))
    return tuple(parsed)


def _parse_history(f: _Fields) -> tuple[EpochRecord, ...]:
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
        epoch = f.whole("epoch", 1, True, record, f"{label}.epoch")
        iteration = f.whole("iteration", 1, True, record, f"{label}.iteration")
        loss = f.number("loss", "a number", least=None, source=record, label=f"{label}.loss", required=True)
        assert epoch is not None and iteration is not None and loss is not None  # required: checked
        history.append(
            EpochRecord(
                epoch=epoch,
                iteration=iteration,
                loss=loss,
                train_acc=train_acc,
                test_acc=test_acc,
                seconds=f.number("seconds", source=record, label=f"{label}.seconds") or 0.0,
            )
        )
    return tuple(history)


def _corrupt(where: str, err: BaseException) -> GraphcError:
    reason = str(err) or type(err).__name__
    return GraphcError(
        f"corrupt or truncated .npz file ({_clip(reason, 120)})", where=where, hint=_DAMAGED, code="E701"
    )


class _Shaped(Protocol):
    """An array, or an .npy header: what the checks below read of a tensor."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...


def check_tensors(program: Program, held: Mapping[str, _Shaped], where: str) -> None:
    """Raise a GraphcError naming the first tensor that does not fit the program's params."""
    graph = program.name
    for name in program.param_names:
        if name not in held:
            listing = ", ".join(f"`{_clip(n)}`" for n in list(held)[:20]) or "nothing"
            raise GraphcError(
                f"no tensor for param `{name}` of graph `{graph}`",
                where=where,
                hint=f"the file holds {listing}",
                code="E706",
            )
        array = held[name]
        expected = program.types[name].shape
        if array.dtype.kind not in "biuf":
            raise GraphcError(f"tensor `{name}` holds {array.dtype} values, not numbers", where=where, code="E707")
        if tuple(array.shape) != tuple(expected):
            raise GraphcError(
                f"tensor `{name}` has shape {list(array.shape)}, but param `{name}` of graph `{graph}` "
                f"has shape {list(expected)}",
                where=where,
                hint="the weights were saved from a graph with different layer sizes",
                code="E707",
            )
    for name in held:
        if name not in program.param_names:
            raise GraphcError(
                f"tensor `{_clip(name)}` is not a param of graph `{graph}`",
                where=where,
                hint="params: " + ", ".join(f"`{n}`" for n in program.param_names),
                code="E708",
            )


def check_op_state(program: Program, held: Mapping[str, _Shaped], where: str) -> None:
    """Raise a GraphcError naming the first tensor of the ops' state (running
    statistics) that is missing, of the wrong shape, or not the program's."""
    for name, t in program.state_types.items():
        if name not in held:
            raise GraphcError(
                f"no tensor for state `{name}` of graph `{program.name}`",
                where=where,
                hint="the checkpoint was saved without the running statistics this graph keeps",
                code="E706",
            )
        array = held[name]
        if array.dtype.kind != "f" or tuple(array.shape) != program.state[name].shape:
            raise GraphcError(
                f"state `{name}` is {array.dtype}{list(array.shape)}, but graph `{program.name}` keeps "
                f"{t.dtype}{list(program.state[name].shape)}",
                where=where,
                code="E707",
            )
    for name in held:
        if name not in program.state_types:
            raise GraphcError(f"corrupt checkpoint: unexpected entry `state/{_clip(name)}`", where=where, code="E702")


def check_structure(program: Program, meta: CheckpointMeta | None, where: str) -> None:
    """Raise a GraphcError naming the first line where the graph the weights were
    saved from differs from `program`."""
    if meta is None or meta.structure_hash == structure_hash(program):
        return
    here, saved = structure(program), meta.structure
    if _lines_hash(saved) != meta.structure_hash:  # read_checkpoint refuses these; a Checkpoint made in code may not be
        raise GraphcError(
            "the checkpoint's structure hash does not match its own structure lines", where=where, code="E702"
        )
    for ours, theirs in zip(here, saved):
        if ours != theirs:
            break
    else:  # one is the other and more: the first line only one of them has
        ours = here[len(saved)] if len(here) > len(saved) else "(nothing)"
        theirs = saved[len(here)] if len(saved) > len(here) else "(nothing)"
    raise GraphcError(
        f"the weights were saved from a graph of a different structure: `{_clip(theirs, 200)}` there, "
        f"`{_clip(ours, 200)}` here",
        where=where,
        hint=f"load them into the graph they were trained with (`{_clip(meta.graph)}`)",
        code="E705",
    )


def check_weights(program: Program, checkpoint: Checkpoint) -> None:
    """Raise a GraphcError naming the first tensor (or node) where the weights do not fit."""
    check_tensors(program, checkpoint.params, checkpoint.path)
    check_structure(program, checkpoint.meta, checkpoint.path)


def apply_weights(program: Program, checkpoint: Checkpoint) -> None:
    """Check `checkpoint` fits `program`, then set the program's params from it."""
    check_weights(program, checkpoint)
    if checkpoint.meta is not None:  # a plain .npz of params leaves the running statistics as they are
        check_op_state(program, checkpoint.state, checkpoint.path)
    for name in program.param_names:
        # A private, writable copy in the program's dtype: training updates params in place.
        program.params[name] = np.array(checkpoint.params[name], dtype=program.params[name].dtype)
    for name, value in checkpoint.state.items():
        program.state[name][...] = value  # in place, where every plan and generated module reads it


def load_weights(program: Program, path: str | Path) -> Checkpoint:
    """Read `path`, check it fits `program`, and set the program's params from it."""
    checkpoint = read_checkpoint(path, program)
    apply_weights(program, checkpoint)
    return checkpoint

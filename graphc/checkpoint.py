"""Checkpoints: a model's params, and what it takes to resume training, in one .npz.

Layout of the file (a plain numpy .npz; nothing in it is pickled):

    params/W1, params/b1, ...      each param, in the dtype it was trained in
    optimizer/steps                updates the optimizer has done (int64)
    optimizer/v/W1, ...            the optimizer's per-param state, if it has any
    meta                           one JSON string: format, version, graph name,
                                   structure and its SHA-256, iteration, optimizer
                                   and its hyperparameters, batch, seed, dtype, data,
                                   the minibatch generator's state, and the
                                   per-epoch history

A plain .npz whose names are exactly the graph's params (numpy.savez(path,
W1=..., b1=...)) also loads as weights; it has nothing to resume from.

The structure is the graph as text, one line per declaration (name, op,
operands, declared shapes and dtypes): weights saved from one graph are
refused by a graph that computes something else, naming the first line where
the two differ. Tensors are checked first, so a changed layer size is
reported as the tensor and its two shapes.

Files are written atomically (a temporary file beside the target, then a
rename) and read with allow_pickle=False; every way a file can be wrong is a
GraphcError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphc.errors import GraphcError
from graphc.fileio import atomic_open
from graphc.ir import ConstDecl, InputDecl, OpNode, ParamDecl, TensorType
from graphc.program import Program

FORMAT = "graphc-checkpoint"
VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_NPY_MAGIC = b"\x93NUMPY"


@dataclass
class Checkpoint:
    """What a checkpoint file holds. `meta` is empty for a plain .npz of params."""

    params: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = "<memory>"

    @property
    def iteration(self) -> int:
        return int(self.meta.get("iteration", 0))

    @property
    def graph(self) -> str | None:
        return self.meta.get("graph")

    @property
    def optimizer(self) -> str | None:
        opt = self.meta.get("optimizer")
        return opt.get("name") if isinstance(opt, dict) else None

    @property
    def resumable(self) -> bool:
        return bool(self.meta) and "rng" in self.meta


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
        elif isinstance(decl, ConstDecl):
            lines.append(f"const {name}: {_type_text(t)} = {_const_text(decl.value)}")
        elif isinstance(decl, OpNode):
            attrs = "".join(f", {k}={decl.attrs[k]!r}" for k in sorted(decl.attrs))
            lines.append(f"{name} = {decl.op.name}({', '.join(decl.args)}{attrs}): {_type_text(t)}")
    lines.extend(f"output {name}" for name, _ in ir.outputs)
    return lines


def structure_hash(program: Program) -> str:
    return hashlib.sha256("\n".join(structure(program)).encode("utf-8")).hexdigest()


# --- saving -----------------------------------------------------------------------


def dtype_name(program: Program) -> str:
    """The float dtype the program computes in: float32 or float64."""
    dtypes = [program.types[name].dtype for name in program.param_names] or [program.dtype or "f64"]
    return "float32" if dtypes[0] == "f32" else "float64"


def save_checkpoint(
    path: str | Path,
    program: Program,
    *,
    iteration: int = 0,
    optimizer: Any = None,
    rng: np.random.Generator | None = None,
    history: list[dict[str, Any]] | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """Write program's params (and the training state given) to `path`, atomically.

    `optimizer` is a graphc.optim.Optimizer; `info` adds JSON-able entries to
    the metadata (batch, seed, dtype, data, ...).
    """
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "graph": program.name,
        "structure_hash": structure_hash(program),
        "structure": structure(program),
        "iteration": int(iteration),
        "dtype": dtype_name(program),
    }
    arrays: dict[str, np.ndarray] = {f"params/{name}": program.params[name] for name in program.param_names}
    if optimizer is not None:
        meta["optimizer"] = {"name": optimizer.name, **optimizer.hyperparams()}
        arrays.update({f"optimizer/{key}": value for key, value in optimizer.state_dict().items()})
    if rng is not None:
        meta["rng"] = rng.bit_generator.state
    if history is not None:
        meta["history"] = list(history)
    if info:
        meta.update(info)
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
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
        raise GraphcError("no such weights file", where=where,
                          hint="write one with `graphc train FILE --save W.npz`")
    if path.is_dir():
        raise GraphcError("is a directory, not a weights file", where=where)
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as err:
        raise GraphcError(f"cannot read weights: {err.strerror or err}", where=where) from None
    if head.startswith(_NPY_MAGIC):
        raise GraphcError("is a single .npy array, not an .npz of weights", where=where,
                          hint="save weights with numpy.savez(path, W1=W1, b1=b1, ...) or `graphc train --save`")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_EMPTY_ZIP_MAGIC)):
        raise GraphcError("not an .npz file (it does not start as a zip archive does)", where=where,
                          hint="weights are written by `graphc train --save W.npz` or numpy.savez")
    arrays: dict[str, np.ndarray] = {}
    key = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise GraphcError(f"`{key}` holds pickled Python objects, which graphc never loads", where=where,
                              hint="store numbers only, e.g. numpy.savez(path, W1=W1)") from None
        raise _corrupt(where, err) from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as err:
        raise _corrupt(where, err) from None

    if "meta" not in arrays:
        # A plain .npz of params, named as the graph names them.
        return Checkpoint(params=arrays, path=where)
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (json.JSONDecodeError, TypeError):
        raise GraphcError("corrupt checkpoint: its `meta` entry is not JSON", where=where) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GraphcError("not a graphc checkpoint: its `meta` entry names no graphc format", where=where)
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise GraphcError(f"checkpoint format version {version} is newer than this graphc reads ({VERSION})",
                          where=where, hint="upgrade graphc")
    params, state = {}, {}
    for name, array in arrays.items():
        if name.startswith("params/"):
            params[name.removeprefix("params/")] = array
        elif name.startswith("optimizer/"):
            state[name.removeprefix("optimizer/")] = array
        else:
            raise GraphcError(f"corrupt checkpoint: unexpected entry `{name}`", where=where)
    return Checkpoint(params=params, optimizer_state=state, meta=meta, path=where)


def _corrupt(where: str, err: BaseException) -> GraphcError:
    reason = str(err) or type(err).__name__
    return GraphcError(f"corrupt or truncated .npz file ({reason})", where=where,
                       hint="the file is damaged; use another checkpoint or train again")


def check_weights(program: Program, checkpoint: Checkpoint) -> None:
    """Raise a GraphcError naming the first tensor (or node) where the weights do not fit."""
    where = checkpoint.path
    held = checkpoint.params
    graph = program.name
    for name in program.param_names:
        if name not in held:
            listing = ", ".join(f"`{n}`" for n in held) or "nothing"
            raise GraphcError(f"no tensor for param `{name}` of graph `{graph}`", where=where,
                              hint=f"the file holds {listing}")
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
            raise GraphcError(f"tensor `{name}` is not a param of graph `{graph}`", where=where,
                              hint="params: " + ", ".join(f"`{n}`" for n in program.param_names))
    saved_hash = checkpoint.meta.get("structure_hash")
    if saved_hash is None or saved_hash == structure_hash(program):
        return
    saved = checkpoint.meta.get("structure")
    here = structure(program)
    if isinstance(saved, list):
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
    raise GraphcError("the weights were saved from a graph of a different structure", where=where)


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

"""Checkpoints: round trips, atomic writes, and every way a weights file can be wrong."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import graphc
from graphc.checkpoint import (
    load_weights, read_checkpoint, save_checkpoint, structure, structure_hash,
)
from graphc.errors import GraphcError
from graphc.optim import Adam, Momentum

TINY = """
graph tiny {
    input x: f64[N, 4] from images
    input t: f64[N, 3] from labels
    param W: [4, 3] = normal(0.1)
    param b: [3] = zeros
    x -> affine(W, b) -> relu -> affine(V, c) -> y
    param V: [3, 3] = normal(0.1)
    param c: [3] = zeros
    loss = softmax_loss(y, t)
    output loss
}
"""


def tiny(seed: int = 0, dtype: str | None = None, text: str = TINY) -> graphc.Program:
    return graphc.compile_source(text, "tiny.graph", seed=seed, dtype=dtype)


def error_text(path, call=read_checkpoint, *args) -> str:
    with pytest.raises(GraphcError) as err:
        call(*args, path) if args else call(path)
    return err.value.render()


def test_round_trip(tmp_path):
    program = tiny(seed=1)
    optimizer = Adam(program.params)
    rng = np.random.default_rng(7)
    grads = {name: np.ones_like(value) for name, value in program.params.items()}
    optimizer.step(program.params, grads)
    rng.integers(0, 10, 5)
    path = tmp_path / "w.npz"
    save_checkpoint(path, program, iteration=42, optimizer=optimizer, rng=rng,
                    history=[{"epoch": 1}], info={"batch": 100})

    checkpoint = read_checkpoint(path)
    for name in program.param_names:
        assert checkpoint.params[name].tobytes() == program.params[name].tobytes()
    assert checkpoint.iteration == 42
    assert checkpoint.graph == "tiny"
    assert checkpoint.optimizer == "adam"
    assert checkpoint.meta["optimizer"] == {"name": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999}
    assert checkpoint.meta["batch"] == 100
    assert checkpoint.meta["history"] == [{"epoch": 1}]
    assert checkpoint.meta["structure_hash"] == structure_hash(program)
    assert checkpoint.resumable
    again = np.random.default_rng(0)
    again.bit_generator.state = checkpoint.meta["rng"]
    assert again.integers(0, 1 << 30, 4).tolist() == rng.integers(0, 1 << 30, 4).tolist()
    state = optimizer.state_dict()
    assert sorted(checkpoint.optimizer_state) == sorted(state)
    for key, value in state.items():
        assert np.array_equal(checkpoint.optimizer_state[key], value)

    other = tiny(seed=2)
    load_weights(other, path)
    for name in program.param_names:
        assert other.params[name].tobytes() == program.params[name].tobytes()
        other.params[name] += 1  # private, writable copies
    assert checkpoint.params["W"].tobytes() == program.params["W"].tobytes()


def test_file_layout(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny(), optimizer=Momentum(tiny().params))
    names = zipfile.ZipFile(path).namelist()
    assert names == [
        "params/W.npy", "params/b.npy", "params/V.npy", "params/c.npy",
        "optimizer/steps.npy", "optimizer/v/W.npy", "optimizer/v/b.npy", "optimizer/v/V.npy", "optimizer/v/c.npy",
        "meta.npy",
    ]
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
    assert meta["format"] == "graphc-checkpoint"
    assert meta["version"] == 1
    assert meta["dtype"] == "float64"


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny(seed=1))
    before = path.read_bytes()
    program = tiny(seed=2)
    program.params["W"] = np.full((4, 3), np.nan)
    save_checkpoint(path, program)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]


def test_float32_weights_load_into_float64(tmp_path):
    path = tmp_path / "w.npz"
    trained = tiny(seed=3, dtype="float32")
    save_checkpoint(path, trained)
    assert read_checkpoint(path).meta["dtype"] == "float32"
    program = tiny(dtype="float64")
    load_weights(program, path)
    assert program.params["W"].dtype == np.float64
    assert np.array_equal(program.params["W"], trained.params["W"].astype(np.float64))


def test_a_plain_npz_of_params_loads(tmp_path):
    path = tmp_path / "plain.npz"
    source = tiny(seed=4)
    np.savez(path, **{name: source.params[name] for name in source.param_names})
    program = tiny()
    checkpoint = load_weights(program, path)
    assert checkpoint.meta == {}
    assert not checkpoint.resumable
    assert np.array_equal(program.params["V"], source.params["V"])


def test_structure():
    assert structure(tiny()) == [
        "graph tiny",
        "input x: f64[N, 4]",
        "input t: f64[N, 3]",
        "param W: f64[4, 3]",
        "param b: f64[3]",
        "affine1 = affine(x, W, b): f64[N, 3]",
        "relu1 = relu(affine1): f64[N, 3]",
        "param V: f64[3, 3]",
        "param c: f64[3]",
        "y = affine(relu1, V, c): f64[N, 3]",
        "loss = softmax_loss(y, t, reduction='mean'): f64[]",
        "output loss",
    ]
    # The run's dtype and the seed are no part of it; the ops are.
    assert structure_hash(tiny(dtype="float32", seed=9)) == structure_hash(tiny())
    assert structure_hash(tiny(text=TINY.replace("relu", "sigmoid"))) != structure_hash(tiny())


# --- errors, each with its whole message ---------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nothing.npz"
    assert error_text(path) == f"{path}: error: no such weights file\nhint: write one with `graphc train FILE --save W.npz`"


def test_a_directory(tmp_path):
    assert error_text(tmp_path) == f"{tmp_path}: error: is a directory, not a weights file"


def test_a_npy_file(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(3))
    assert error_text(path) == (
        f"{path}: error: is a single .npy array, not an .npz of weights\n"
        "hint: save weights with numpy.savez(path, W1=W1, b1=b1, ...) or `graphc train --save`"
    )


def test_not_an_npz(tmp_path):
    path = tmp_path / "w.npz"
    path.write_text("W = [1, 2, 3]\n")
    assert error_text(path) == (
        f"{path}: error: not an .npz file (it does not start as a zip archive does)\n"
        "hint: weights are written by `graphc train --save W.npz` or numpy.savez"
    )


def test_truncated(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert error_text(path) == (
        f"{path}: error: corrupt or truncated .npz file (File is not a zip file)\n"
        "hint: the file is damaged; use another checkpoint or train again"
    )


def test_corrupt(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny())
    data = bytearray(path.read_bytes())
    start = data.index(b"\x93NUMPY") + 200  # inside the first tensor's data
    data[start:start + 8] = b"garbage!"
    path.write_bytes(bytes(data))
    assert error_text(path) == (
        f"{path}: error: corrupt or truncated .npz file (Bad CRC-32 for file 'params/W.npy')\n"
        "hint: the file is damaged; use another checkpoint or train again"
    )


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, W=np.array([{"evil": 1}], dtype=object))
    assert error_text(path) == (
        f"{path}: error: `W` holds pickled Python objects, which graphc never loads\n"
        "hint: store numbers only, e.g. numpy.savez(path, W1=W1)"
    )


def test_meta_not_json(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, meta=np.array("{not json"), **{"params/W": np.zeros((4, 3))})
    assert error_text(path) == f"{path}: error: corrupt checkpoint: its `meta` entry is not JSON"


def test_meta_of_something_else(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, meta=np.array('{"format": "other"}'))
    assert error_text(path) == f"{path}: error: not a graphc checkpoint: its `meta` entry names no graphc format"


def test_newer_version(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, meta=np.array('{"format": "graphc-checkpoint", "version": 7}'))
    assert error_text(path) == (
        f"{path}: error: checkpoint format version 7 is newer than this graphc reads (1)\nhint: upgrade graphc"
    )


def test_missing_tensor(tmp_path):
    path = tmp_path / "w.npz"
    source = tiny()
    np.savez(path, W=source.params["W"], b=source.params["b"])
    assert error_text(path, load_weights, tiny()) == (
        f"{path}: error: no tensor for param `V` of graph `tiny`\nhint: the file holds `W`, `b`"
    )


def test_wrong_shape_names_the_first_mismatching_tensor(tmp_path):
    path = tmp_path / "w.npz"
    wider = tiny(text=TINY.replace("[4, 3]", "[4, 5]").replace("[3] = zeros\n    x", "[5] = zeros\n    x")
                 .replace("[3, 3]", "[5, 3]"))
    save_checkpoint(path, wider)
    assert error_text(path, load_weights, tiny()) == (
        f"{path}: error: tensor `W` has shape [4, 5], but param `W` of graph `tiny` has shape [4, 3]\n"
        "hint: the weights were saved from a graph with different layer sizes"
    )


def test_extra_tensor(tmp_path):
    path = tmp_path / "w.npz"
    source = tiny()
    np.savez(path, U=np.zeros(2), **{n: source.params[n] for n in source.param_names})
    assert error_text(path, load_weights, tiny()) == (
        f"{path}: error: tensor `U` is not a param of graph `tiny`\nhint: params: `W`, `b`, `V`, `c`"
    )


def test_different_structure(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny(text=TINY.replace("relu", "sigmoid")))
    assert error_text(path, load_weights, tiny()) == (
        f"{path}: error: the weights were saved from a graph of a different structure: "
        "`sigmoid1 = sigmoid(affine1): f64[N, 3]` there, `relu1 = relu(affine1): f64[N, 3]` here\n"
        "hint: load them into the graph they were trained with (`tiny`)"
    )


def test_a_failed_load_leaves_the_params_alone(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny(text=TINY.replace("relu", "sigmoid"), seed=5))
    program = tiny()
    before = {n: program.params[n].copy() for n in program.param_names}
    with pytest.raises(GraphcError):
        load_weights(program, path)
    for name, value in before.items():
        assert np.array_equal(program.params[name], value)


def test_save_into_a_missing_directory(tmp_path):
    path = tmp_path / "no" / "w.npz"
    with pytest.raises(GraphcError) as err:
        save_checkpoint(path, tiny())
    assert err.value.render() == f"{path}: error: cannot write: no such directory\nhint: create `{path.parent}` first"

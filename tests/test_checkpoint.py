"""Checkpoints: round trips, atomic writes, and every way a weights file can be wrong."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import graphc
from graphc.checkpoint import (
    EpochRecord,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    structure,
    structure_hash,
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
    record = EpochRecord(epoch=1, iteration=40, loss=0.5, train_acc=0.75, test_acc=None, seconds=1.5)
    save_checkpoint(
        path,
        program,
        iteration=42,
        optimizer=optimizer,
        rng=rng,
        history=[record],
        batch=100,
        epoch_loss=1.25,
        epoch_count=2,
    )

    checkpoint = read_checkpoint(path)
    for name in program.param_names:
        assert checkpoint.params[name].tobytes() == program.params[name].tobytes()
    assert checkpoint.iteration == 42
    assert checkpoint.graph == "tiny"
    assert checkpoint.optimizer == "adam"
    meta = checkpoint.meta
    assert dict(meta.hyperparams) == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999} and meta.lr == 0.001
    assert (meta.batch, meta.seed, meta.data) == (100, None, None)
    assert meta.history == (record,)
    assert (meta.epoch_loss, meta.epoch_count) == (1.25, 2)
    assert meta.structure_hash == structure_hash(program)
    assert checkpoint.resumable
    assert meta.rng().integers(0, 1 << 30, 4).tolist() == rng.integers(0, 1 << 30, 4).tolist()
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
        "params/W.npy",
        "params/b.npy",
        "params/V.npy",
        "params/c.npy",
        "optimizer/steps.npy",
        "optimizer/v/W.npy",
        "optimizer/v/b.npy",
        "optimizer/v/V.npy",
        "optimizer/v/c.npy",
        "meta.npy",
    ]
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
    assert meta["format"] == "graphc-checkpoint"
    assert meta["version"] == 1
    assert meta["dtype"] == "float64"
    assert meta["optimizer"] == {"name": "momentum", "lr": 0.01, "momentum": 0.9}


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
    assert read_checkpoint(path).dtype == "float32"
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
    assert checkpoint.meta is None
    assert not checkpoint.resumable
    assert np.array_equal(program.params["V"], source.params["V"])


def test_a_param_called_meta_loads_from_a_plain_npz(tmp_path):
    text = TINY.replace("param c: [3]", "param meta: [3]").replace("affine(V, c)", "affine(V, meta)")
    source = tiny(seed=4, text=text)
    path = tmp_path / "plain.npz"
    np.savez(path, **{name: source.params[name] for name in source.param_names})
    program = tiny(text=text)
    assert load_weights(program, path).meta is None
    assert np.array_equal(program.params["meta"], source.params["meta"])


def test_the_dtype_of_a_graph_that_mixes_them_is_none(tmp_path):
    path = tmp_path / "w.npz"
    mixed = TINY.replace("    param c: [3] = zeros", "    param c: [3] = zeros\n    param s: f32[] = 1")
    save_checkpoint(path, tiny(text=mixed))
    assert read_checkpoint(path).dtype is None  # resuming keeps the declared dtypes
    save_checkpoint(path, tiny(text=mixed, dtype="float32"))
    assert read_checkpoint(path).dtype == "float32"


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
    assert (
        error_text(path)
        == f"{path}: error[E601]: no such weights file\nhint: write one with `graphc train FILE --save W.npz`"
    )


def test_a_directory(tmp_path):
    assert error_text(tmp_path) == f"{tmp_path}: error[E602]: is a directory, not a weights file"


def test_a_npy_file(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(3))
    assert error_text(path) == (
        f"{path}: error[E701]: is a single .npy array, not an .npz of weights\n"
        "hint: save weights with numpy.savez(path, W1=W1, b1=b1, ...) or `graphc train --save`"
    )


def test_not_an_npz(tmp_path):
    path = tmp_path / "w.npz"
    path.write_text("W = [1, 2, 3]\n")
    assert error_text(path) == (
        f"{path}: error[E701]: not an .npz file (it does not start as a zip archive does)\n"
        "hint: weights are written by `graphc train --save W.npz` or numpy.savez"
    )


def test_truncated(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert error_text(path) == (
        f"{path}: error[E701]: corrupt or truncated .npz file (File is not a zip file)\n"
        "hint: the file is damaged; use another checkpoint or train again"
    )


def test_corrupt(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny())
    data = bytearray(path.read_bytes())
    start = data.index(b"\x93NUMPY") + 200  # inside the first tensor's data
    data[start : start + 8] = b"garbage!"
    path.write_bytes(bytes(data))
    assert error_text(path) == (
        f"{path}: error[E701]: corrupt or truncated .npz file (Bad CRC-32 for file 'params/W.npy')\n"
        "hint: the file is damaged; use another checkpoint or train again"
    )


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, W=np.array([{"evil": 1}], dtype=object))
    assert error_text(path) == (
        f"{path}: error[E702]: `W` holds pickled Python objects, which graphc never loads\n"
        "hint: store numbers only, e.g. numpy.savez(path, W1=W1)"
    )


def test_meta_not_json(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, meta=np.array("{not json"), **{"params/W": np.zeros((4, 3))})
    assert error_text(path) == f"{path}: error[E702]: corrupt checkpoint: its `meta` entry is not JSON"


def test_meta_of_something_else(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, meta=np.array('{"format": "other"}'))
    assert error_text(path) == f"{path}: error[E703]: not a graphc checkpoint: its `meta` entry names no graphc format"


def saved_meta(tmp_path) -> tuple:
    """A real training checkpoint's file and its meta, as JSON."""
    from graphc.optim import SGD

    path = tmp_path / "w.npz"
    program = tiny()
    record = EpochRecord(epoch=1, iteration=60, loss=0.5, train_acc=0.75, test_acc=0.5, seconds=1.5)
    save_checkpoint(
        path,
        program,
        iteration=70,
        optimizer=SGD(program.params),
        rng=np.random.default_rng(0),
        history=[record],
        data="mnist",
        batch=100,
        seed=0,
        iters=130,
        seconds=2.0,
    )
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    return path, arrays, json.loads(str(arrays["meta"]))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seconds", "abc", 'meta field `seconds` must be a number at least 0, got "abc"'),
        ("iteration", "abc", 'meta field `iteration` must be a whole number at least 0, got "abc"'),
        ("iteration", -5, "meta field `iteration` must be a whole number at least 0, got -5"),
        ("iteration", None, "meta field `iteration` is missing"),
        ("batch", "abc", 'meta field `batch` must be a whole number at least 1, got "abc"'),
        ("batch", 0, "meta field `batch` must be a whole number at least 1, got 0"),
        ("seed", "abc", 'meta field `seed` must be a whole number at least 0, got "abc"'),
        ("seed", -1, "meta field `seed` must be a whole number at least 0, got -1"),
        ("seed", 1.5, "meta field `seed` must be a whole number at least 0, got 1.5"),
        ("iters", True, "meta field `iters` must be a whole number at least 1, got true"),
        ("version", "x", 'meta field `version` must be a whole number at least 1, got "x"'),
        ("dtype", "float16", 'meta field `dtype` must be float32 or float64, got "float16"'),
        ("graph", 3, "meta field `graph` must be a name, got 3"),
        ("structure", "lines", 'meta field `structure` must be a list of lines, got "lines"'),
        ("optimizer", "sgd", 'meta field `optimizer` must be an optimizer\'s name and hyperparameters, got "sgd"'),
        ("optimizer.lr", "fast", 'meta field `optimizer.lr` must be a positive number, got "fast"'),
        ("optimizer.lr", -0.1, "meta field `optimizer.lr` must be a positive number, got -0.1"),
        (
            "optimizer.name",
            "rmsprop",
            'meta field `optimizer.name` must be one of sgd, momentum, adagrad, adam, got "rmsprop"',
        ),
        (
            "rng",
            {"bit_generator": "MT19937"},
            'meta field `rng` must be the state of a numpy PCG64 generator, got {"bit_generator": "MT19937"}',
        ),
        ("history", {}, "meta field `history` must be a list of epoch records, got {}"),
        (
            "history.0",
            {"epoch": 1},
            "meta field `history[0]` must be a record of epoch, iteration, loss, train_acc, "
            'test_acc, seconds, got {"epoch": 1}',
        ),
        ("history.0.loss", "low", 'meta field `history[0].loss` must be a number, got "low"'),
        ("history.0.epoch", 0, "meta field `history[0].epoch` must be a whole number at least 1, got 0"),
        ("history.0.test_acc", 2, "meta field `history[0].test_acc` must be an accuracy between 0 and 1, got 2"),
        ("epoch_count", -1, "meta field `epoch_count` must be a whole number at least 0, got -1"),
        ("epoch_loss", "lots", 'meta field `epoch_loss` must be a number, got "lots"'),
    ],
)
def test_every_wrong_meta_field_is_named(tmp_path, field, value, message):
    path, arrays, meta = saved_meta(tmp_path)
    *parents, key = field.split(".")
    target = meta
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if key.isdigit():
        target[int(key)] = value
    else:
        target[key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    assert error_text(path) == (
        f"{path}: error[E702]: corrupt checkpoint: {message}\n"
        "hint: the file is damaged; use another checkpoint or train again"
    )


def test_a_checkpoint_of_an_older_graphc_still_reads(tmp_path):
    path, arrays, meta = saved_meta(tmp_path)
    for key in ("epoch_loss", "epoch_count", "seconds", "iters", "data"):
        del meta[key]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    checkpoint = read_checkpoint(path)
    assert (checkpoint.meta.seconds, checkpoint.meta.epoch_count, checkpoint.meta.iters) == (0.0, 0, None)
    assert checkpoint.resumable


def test_newer_version(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, meta=np.array('{"format": "graphc-checkpoint", "version": 7}'))
    assert error_text(path) == (
        f"{path}: error[E704]: checkpoint format version 7 is newer than this graphc reads (1)\nhint: upgrade graphc"
    )


def test_missing_tensor(tmp_path):
    path = tmp_path / "w.npz"
    source = tiny()
    np.savez(path, W=source.params["W"], b=source.params["b"])
    assert error_text(path, load_weights, tiny()) == (
        f"{path}: error[E706]: no tensor for param `V` of graph `tiny`\nhint: the file holds `W`, `b`"
    )


def test_wrong_shape_names_the_first_mismatching_tensor(tmp_path):
    path = tmp_path / "w.npz"
    wider = tiny(
        text=TINY.replace("[4, 3]", "[4, 5]")
        .replace("[3] = zeros\n    x", "[5] = zeros\n    x")
        .replace("[3, 3]", "[5, 3]")
    )
    save_checkpoint(path, wider)
    assert error_text(path, load_weights, tiny()) == (
        f"{path}: error[E707]: tensor `W` has shape [4, 5], but param `W` of graph `tiny` has shape [4, 3]\n"
        "hint: the weights were saved from a graph with different layer sizes"
    )


def test_extra_tensor(tmp_path):
    path = tmp_path / "w.npz"
    source = tiny()
    np.savez(path, U=np.zeros(2), **{n: source.params[n] for n in source.param_names})
    assert error_text(path, load_weights, tiny()) == (
        f"{path}: error[E708]: tensor `U` is not a param of graph `tiny`\nhint: params: `W`, `b`, `V`, `c`"
    )


def test_different_structure(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, tiny(text=TINY.replace("relu", "sigmoid")))
    assert error_text(path, load_weights, tiny()) == (
        f"{path}: error[E705]: the weights were saved from a graph of a different structure: "
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
    assert (
        err.value.render()
        == f"{path}: error[E604]: cannot write: no such directory\nhint: create `{path.parent}` first"
    )

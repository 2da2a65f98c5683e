"""MNIST stays bytes in memory: load_data's images are ByteImages, made numbers
a minibatch or an evaluation chunk at a time, and training on them gives the
weights training on the whole set as floats gives, bit for bit."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import graphc
from graphc.data import load_mnist
from graphc.train import EVAL_CHUNK, ByteImages, Trainer, TrainOptions, load_data, predict, prepare_data

NET = "models/two_layer_net.graph"


def net(dtype: str) -> graphc.Program:
    return graphc.compile_file(NET, dtype=dtype, seed=0)


def weights(program: graphc.Program) -> str:
    digest = hashlib.sha256()
    for name in sorted(program.params):
        digest.update(np.ascontiguousarray(program.params[name]).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_images_stay_the_loaders_bytes(dtype):
    data = load_data("mnist", net(dtype), progress=False)
    (train_bytes, _), (test_bytes, _) = load_mnist(normalize=False, dtype=np.uint8)
    for images, raw in ((data.x_train, train_bytes), (data.x_test, test_bytes)):
        assert isinstance(images, ByteImages)
        assert images.bytes.dtype == np.uint8 and np.shares_memory(images.bytes, raw)
        assert images.dtype == np.dtype(dtype) and images.shape == (len(raw), 784)
    assert data.x_train_bytes is data.x_train.bytes  # minibatches are gathered from the same bytes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_numbers_are_those_of_dividing_the_whole_set(dtype):
    data = load_data("mnist", net(dtype), progress=False)
    _, (x_test, _) = load_mnist(dtype=np.dtype(dtype))  # the set as floats, divided at once
    assert np.asarray(data.x_test).tobytes() == x_test.tobytes()
    rows = np.array([0, 5, 9999, 5])
    assert data.x_test[rows].tobytes() == x_test[rows].tobytes()
    head = data.x_test[:300]
    assert isinstance(head, ByteImages) and np.shares_memory(head.bytes, data.x_test.bytes)
    assert np.asarray(head).tobytes() == x_test[:300].tobytes()


def test_predictions_do_not_depend_on_the_chunk():
    program = net("float32")
    data = load_data("mnist", program, progress=False)
    whole = predict(program, data, data.x_test, chunk=10000)
    assert np.array_equal(predict(program, data, data.x_test, chunk=EVAL_CHUNK), whole)
    assert np.array_equal(predict(program, data, data.x_test, chunk=777), whole)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_on_bytes_gives_the_weights_training_on_floats_gives(dtype):
    options = TrainOptions(iters=700, batch=100)  # an epoch, its evaluation, and the end's
    bytes_program = net(dtype)
    from_bytes = Trainer(bytes_program, load_data("mnist", bytes_program, progress=False), options).run()
    floats_program = net(dtype)
    train, test = load_mnist(dtype=np.dtype(dtype))
    floats = prepare_data(floats_program, train, test, name="mnist")
    assert not isinstance(floats.x_train, ByteImages)
    from_floats = Trainer(floats_program, floats, options).run()
    assert weights(bytes_program) == weights(floats_program)
    assert [(r.loss, r.train_acc, r.test_acc) for r in from_bytes.history] == [
        (r.loss, r.train_acc, r.test_acc) for r in from_floats.history
    ]


def test_feeding_floats_into_an_equal_or_wider_float_input_copies_nothing():
    program = graphc.compile_source("graph g {\n  input x: f64[N, 3]\n  y = mul(x, 2)\n  output y\n}\n")
    wide = np.ones((4, 3))
    assert program.feed("x", wide) is wide or np.shares_memory(program.feed("x", wide), wide)
    narrow = np.ones((4, 3), np.float32)
    assert program.feed("x", narrow).dtype == np.float64


def test_the_range_check_scans_only_where_a_value_may_not_fit():
    from graphc.ir import unrepresentable

    assert unrepresentable(np.arange(256, dtype=np.uint8), "f32") is None  # bytes fit any float
    assert unrepresentable(np.full(3, 2**32 - 1, np.uint32), "i64") is None
    assert unrepresentable(np.array([1, 2**63], np.uint64), "i64") == 2**63  # this one can fail, and is scanned
    assert unrepresentable(np.array([1.0, 1e300]), "f32") == 1e300

"""Training on MNIST: roles, the loop, determinism, resuming, stopping, accuracy,
and the `train`, `eval` and `run --weights` commands."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest
from helpers import error_of, graphc_cli, mnist_slice, rewrite_meta, two_layer_net

import graphc
from graphc.checkpoint import read_checkpoint, save_checkpoint
from graphc.data import load_mnist
from graphc.train import (
    Diverged,
    MinibatchDraws,
    Trainer,
    TrainOptions,
    find_roles,
    load_data,
    log_csv,
    prepare_data,
)

GRAPH = """
graph g {{
    input x: {x}
    input t: {t}
    param W: [784, 10] = normal(0.01)
    param b: [10] = zeros
    x -> affine(W, b) -> y
    loss = softmax_loss(y, t)
    output loss
}}
"""


def source(x: str = "f64[N, 784]", t: str = "f64[N, 10]") -> str:
    return GRAPH.format(x=x, t=t)


def program_of(text: str, **kwargs) -> graphc.Program:
    return graphc.compile_source(text, "g.graph", **kwargs)


@pytest.fixture
def net():
    return two_layer_net


@pytest.fixture(scope="module")
def data32():
    """MNIST for the two-layer net in float32, loaded once: trainers never write into it."""
    return load_data("mnist", two_layer_net("float32"))


@pytest.fixture(scope="module")
def small():
    """600 training and 100 test images: with batches of SMALL_BATCH, epochs of 60
    iterations as the whole set's 600 at batch 100, each a tenth of the work."""
    return mnist_slice(two_layer_net("float32"), 600, 100)


SMALL_BATCH = 10


def params_of(program: graphc.Program) -> dict[str, bytes]:
    return {name: program.params[name].tobytes() for name in program.param_names}


# --- which input gets what ----------------------------------------------------------


def test_roles_declared(net):
    assert find_roles(net()) == ("x", "t")


def test_roles_inferred_from_shapes():
    assert find_roles(program_of(source())) == ("x", "t")
    assert find_roles(program_of(source("f64[N, 1, 28, 28]", "i64[N]"))) == ("x", "t")


def test_roles_declared_win_over_shapes():
    text = source("f64[N, 784] from images\n    input z: f64[N, 784]", "f64[N, 10]")
    assert find_roles(program_of(text.replace("loss = ", "u = mul(z, 2)\n    loss = "))) == ("x", "t")


def test_roles_ambiguous():
    text = source("f64[N, 784]\n    input z: f64[N, 784]").replace("x -> affine", "v = add(x, z)\n    v -> affine")
    assert error_of(find_roles, program_of(text)) == (
        "g.graph:3:11: error[E903]: cannot tell which input takes the MNIST images: `x` and `z` both fit\n"
        " 3 |     input x: f64[N, 784]\n"
        "   |           ^\n"
        " 4 |     input z: f64[N, 784]\n"
        "   |           ^\n"
        "hint: say which with `from images`, e.g. `input x: ... from images`"
    )


def test_roles_none_fits():
    text = source("f64[N, 784]", "f64[N, 10]").replace("[784, 10]", "[784, 12]").replace("[10] = zeros", "[12] = zeros")
    text = text.replace("f64[N, 10]", "f64[N, 12]")
    assert error_of(find_roles, program_of(text)) == (
        "g.graph:2:7: error[E903]: no input of graph `g` can take the MNIST labels: it needs a [N, 10] one-hot or [N] i64 input\n"
        " 2 | graph g {\n"
        "   |       ^\n"
        "hint: declare one, e.g. `input t: f64[N, 10] from labels`"
    )


def test_roles_declared_with_a_shape_that_does_not_fit():
    text = source("f64[N, 100] from images").replace("[784, 10]", "[100, 10]")
    assert error_of(find_roles, program_of(text)) == (
        "g.graph:3:31: error[E903]: input `x` is fed `from images`, but MNIST images need a [N, 784] "
        "(or [N, 1, 28, 28]) float input; `x` is f64[N, 100]\n"
        " 3 |     input x: f64[N, 100] from images\n"
        "   |                               ^^^^^^"
    )


# --- data ------------------------------------------------------------------------------


@pytest.mark.slow
def test_data_is_checked_once_and_not_copied(net):
    program = net("float32")
    data = load_data("mnist", program)
    (x_train, y_train), (x_test, _) = load_mnist(normalize=False, dtype=np.uint8)
    # The images stay the loader's bytes, not copies (made numbers a minibatch at a time).
    assert np.shares_memory(data.x_train.bytes, x_train) and np.shares_memory(data.x_test.bytes, x_test)
    assert data.t_train.dtype == np.int64 and data.t_train.shape == (60000,)  # indices, not one-hot
    assert data.y_train is data.t_train or np.array_equal(data.y_train, y_train)
    assert (data.images, data.labels, data.scores) == ("x", "t", "y")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["f64[N, 784]", "f64[N, 1, 28, 28]"])
def test_minibatches_gathered_from_bytes_are_the_normalized_images(dtype, layout):
    program = program_of(source(layout, "i64[N]"), dtype=dtype)
    data = load_data("mnist", program)
    (raw, _), _ = load_mnist(normalize=False, dtype=np.uint8)
    assert data.x_train_bytes.dtype == np.uint8 and data.x_train_bytes.shape == data.x_train.shape
    assert np.shares_memory(data.x_train_bytes, raw)  # the loader's bytes, not a copy
    # Rows that hold every byte value 0..255 between them, gathered as training does.
    index = np.unique(np.concatenate([np.flatnonzero((raw == v).any(axis=1))[:1] for v in range(256)]))
    assert len(index) > 1
    out = np.empty((len(index),) + data.x_train.shape[1:], data.x_train.dtype)
    data.image_gatherer(out)(index)
    assert out.tobytes() == data.x_train[index].tobytes()  # bit for bit
    floats = dataclasses.replace(data, x_train_bytes=None)
    out[:] = 0
    floats.image_gatherer(out)(index)
    assert out.tobytes() == data.x_train[index].tobytes()


@pytest.mark.slow
def test_training_from_bytes_or_floats_gives_the_same_weights(net):
    runs = []
    for from_bytes in (True, False):
        program = net("float32")
        data = load_data("mnist", program)
        if not from_bytes:
            data = dataclasses.replace(data, x_train_bytes=None)
        Trainer(program, data, TrainOptions(iters=100, evaluate=False)).run()
        runs.append(params_of(program))
    assert runs[0] == runs[1]


def test_bytes_must_match_the_images(data32):
    data = data32
    with pytest.raises(
        ValueError,
        match=r"x_train_bytes must be uint8 shaped like x_train \(60000, 784\), "
        r"got float32\[60000, 784\]",
    ):
        dataclasses.replace(data, x_train_bytes=data.x_train)


def test_data_one_hot_where_the_graph_reads_labels_as_values():
    text = source().replace("output loss", "s = mul(t, 2)\n    output loss\n    output s")
    program = program_of(text, dtype="float32")
    data = load_data("mnist", program)
    assert data.t_train.shape == (60000, 10) and data.t_train.dtype == np.float32
    assert np.array_equal(data.t_train.argmax(axis=1), data.y_train)


@pytest.mark.slow
def test_data_reshaped_for_image_inputs():
    program = program_of(source("f64[N, 1, 28, 28]", "i64[N]"))
    data = load_data("mnist", program)
    assert data.x_train.shape == (60000, 1, 28, 28)
    assert np.shares_memory(data.x_train.bytes, load_mnist(normalize=False, dtype=np.uint8)[0][0])


def test_prepare_data_from_arrays(net):
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 28, 28)), rng.integers(0, 10, 200)
    program = net("float32")
    data = prepare_data(program, (x, y), (x[:50], y[:50]), name="noise")
    assert data.x_train.shape == (200, 784) and data.x_train.dtype == np.float32
    trainer = Trainer(program, data, TrainOptions(iters=5, batch=100))
    assert (trainer.iters_per_epoch, trainer.epochs) == (2, 3)
    assert [r.iteration for r in trainer.run().history] == [2, 4, 5]
    assert error_of(prepare_data, program, (x, y * 1.0), (x, y), name="noise") == (
        "graphc: error[E903]: noise train: expected 200 integer class labels, got float64[200]"
    )


def test_unknown_dataset(net):
    assert (
        error_of(load_data, "cifar", net())
        == "graphc: error[E503]: unknown dataset `cifar`\nhint: known datasets: mnist"
    )


@pytest.mark.slow
def test_other_inputs_need_a_fixed_value():
    text = (
        source()
        .replace("output loss", "u = mul(y, k)\n    output loss")
        .replace("input t", "input k: f64[10]\n    input t")
    )
    assert error_of(load_data, "mnist", program_of(text)) == (
        "g.graph:4:11: error[E903]: input `k` is fed neither images nor labels, and has no fixed value to train with\n"
        " 4 |     input k: f64[10]\n"
        "   |           ^\n"
        "hint: give it a value (`input k = 0.5`) or make it a param"
    )
    fixed = program_of(text.replace("input k: f64[10]", "input k = 2"))
    data = load_data("mnist", fixed)
    assert data.extra["k"] == 2
    assert Trainer(fixed, data, TrainOptions(iters=5, evaluate=False)).run().iteration == 5


# --- minibatches -------------------------------------------------------------------------


def test_minibatch_rows_resume_at_any_iteration():
    def draws():
        return MinibatchDraws(np.random.default_rng(7), size=500, batch=30)

    straight = draws()
    assert straight.block == 100
    rows = [straight.indices(i).copy() for i in range(260)]
    assert all(r.shape == (30,) and r.min() >= 0 and r.max() < 500 for r in rows)
    assert len({r.tobytes() for r in rows}) == 260  # a fresh draw every iteration
    for stop in (0, 1, 99, 100, 101, 199, 200, 259):
        stopped = draws()
        for i in range(stop):  # a run that stopped before iteration `stop`
            stopped.indices(i)
        resumed = MinibatchDraws(stopped.resumable_rng(stop), size=500, batch=30)
        assert all(np.array_equal(resumed.indices(i), rows[i]) for i in range(stop, 260)), stop


def test_minibatch_blocks_stay_small_for_large_batches():
    assert MinibatchDraws(np.random.default_rng(0), 60000, 100).block == 100
    assert MinibatchDraws(np.random.default_rng(0), 60000, 1000).block == 10
    assert MinibatchDraws(np.random.default_rng(0), 60000, 60000).block == 1


# --- the loop --------------------------------------------------------------------------


def test_same_seed_same_weights_bit_for_bit(net, small):
    options = dict(iters=200, batch=SMALL_BATCH, evaluate=False)
    runs = []
    for _ in range(2):
        program = net(seed=3)
        Trainer(program, small, TrainOptions(seed=3, **options)).run()
        runs.append(params_of(program))
    assert runs[0] == runs[1]
    other = net(seed=3)
    Trainer(other, small, TrainOptions(seed=4, **options)).run()
    assert params_of(other) != runs[0]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_resume_continues_bit_for_bit(net, small, tmp_path, optimizer):
    # 130 iterations: a resume at 70 crosses the end of an epoch (120) and of the
    # block of minibatch rows drawn at once (100).
    options = dict(optimizer=optimizer, batch=SMALL_BATCH, evaluate=False)
    straight = net()
    uninterrupted = Trainer(straight, small, TrainOptions(iters=130, **options)).run().history

    path = tmp_path / "w.npz"
    first = net()
    result = Trainer(first, small, TrainOptions(iters=70, **options)).run(checkpoint=path)
    assert result.iteration == 70 and read_checkpoint(path).iteration == 70
    second = net(seed=99)  # the params come from the checkpoint, not the seed
    trainer = Trainer(second, small, TrainOptions(iters=130, **options), resume=read_checkpoint(path))
    assert trainer.iteration == 70
    result = trainer.run()
    assert (result.start_iteration, result.iteration, result.iters) == (70, 130, 60)
    assert params_of(second) == params_of(straight)
    assert [r.iteration for r in trainer.history] == [60, 120, 130]
    assert without_seconds(trainer.history) == without_seconds(uninterrupted)


def without_seconds(history) -> list[dict]:
    return [{k: v for k, v in r.as_dict().items() if k != "seconds"} for r in history]


@pytest.mark.parametrize("stop", ["completed", "interrupted"])
def test_a_resumed_history_is_an_uninterrupted_ones(net, small, tmp_path, stop):
    """One record per epoch, each loss the mean over the whole epoch, across a save and a resume."""
    straight = Trainer(net(), small, TrainOptions(iters=130, batch=SMALL_BATCH)).run()
    path = tmp_path / "w.npz"
    first = Trainer(net(), small, TrainOptions(iters=70 if stop == "completed" else 130, batch=SMALL_BATCH))
    first.run(checkpoint=path, on_iteration=lambda i, loss: i == 75 and first.request_stop())
    assert [(r.epoch, r.iteration) for r in first.history] == ([(1, 60), (2, 70)] if stop == "completed" else [(1, 60)])
    resumed = Trainer(net(), small, TrainOptions(iters=130, batch=SMALL_BATCH), resume=read_checkpoint(path))
    result = resumed.run()
    assert [(r.epoch, r.iteration) for r in result.history] == [(1, 60), (2, 120), (3, 130)]
    assert without_seconds(result.history) == without_seconds(straight.history)
    assert log_csv(result.history).splitlines()[2].startswith("2,120,")


def test_resume_needs_the_same_optimizer(net, data32, tmp_path):
    path = tmp_path / "w.npz"
    Trainer(net(), data32, TrainOptions(iters=10, optimizer="adam", evaluate=False)).run(checkpoint=path)
    message = error_of(Trainer, net(), data32, TrainOptions(iters=20), resume=read_checkpoint(path))
    assert (
        message
        == f"{path}: error[E710]: the checkpoint was trained with adam, not sgd\nhint: resume with `--optimizer adam`"
    )


def test_resume_needs_training_state(net, data32, tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, net())
    message = error_of(Trainer, net(), data32, TrainOptions(iters=20), resume=read_checkpoint(path))
    assert message == (
        f"{path}: error[E709]: these weights hold no training state to resume from\n"
        "hint: resume from a checkpoint written by `graphc train --save`"
    )


@pytest.mark.slow
def test_epochs_and_history(net, data32):
    trainer = Trainer(net(), data32, TrainOptions(iters=1300))
    seen = []
    result = trainer.run(on_epoch=seen.append)
    assert trainer.iters_per_epoch == 600 and trainer.epochs == 3
    assert [(r.epoch, r.iteration) for r in seen] == [(1, 600), (2, 1200), (3, 1300)]
    assert seen == result.history
    assert 0.85 < result.test_acc < 1 and 0.85 < result.train_acc < 1
    assert len(result.losses) == 1300 and result.losses[0] == pytest.approx(np.log(10), abs=0.05)
    assert result.history[0].loss == pytest.approx(result.losses[:600].mean())
    assert log_csv(result.history).splitlines()[0] == "epoch,iteration,loss,train_acc,test_acc,seconds"


def test_ctrl_c_stops_cleanly_and_saves(net, data32, tmp_path):
    path = tmp_path / "w.npz"
    before = signal.getsignal(signal.SIGINT)

    def interrupt(iteration, loss):
        if iteration == 30:
            os.kill(os.getpid(), signal.SIGINT)

    trainer = Trainer(net(), data32, TrainOptions(iters=1000, evaluate=False))
    result = trainer.run(on_iteration=interrupt, checkpoint=path, handle_sigint=True)
    assert (result.status, result.iteration) == ("interrupted", 30)
    assert read_checkpoint(path).iteration == 30
    assert signal.getsignal(signal.SIGINT) is before


def test_request_stop(net, small):
    trainer = Trainer(net(), small, TrainOptions(iters=1000, batch=SMALL_BATCH, evaluate=False))
    result = trainer.run(on_iteration=lambda i, loss: i == 5 and trainer.request_stop())
    assert (result.status, result.iteration) == ("interrupted", 5)
    # A request before run() stops it before its first iteration; the next run goes on.
    trainer.request_stop()
    assert (trainer.run().status, trainer.iteration) == ("interrupted", 5)
    assert (trainer.run().status, trainer.iteration) == ("completed", 1000)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(net, small, tmp_path):
    path = tmp_path / "w.npz"
    Trainer(net(), small, TrainOptions(iters=600, batch=SMALL_BATCH, evaluate=False)).run(checkpoint=path)
    good = path.read_bytes()
    options = TrainOptions(iters=1300, batch=SMALL_BATCH, lr=1e30, evaluate=False)
    trainer = Trainer(net(), small, options, resume=read_checkpoint(path))
    with pytest.raises(Diverged) as err:
        trainer.run(checkpoint=path)
    assert err.value.render() == (
        "graphc: error[E901]: training diverged at iteration 602: the loss is nan; "
        "the first tensor holding NaN or inf is `y = affine(relu1, W2, b2)`\n"
        f"hint: lower the learning rate (it is 1e+30), e.g. --lr 1e+29; nothing was saved to {path}"
    )
    assert (err.value.iteration, err.value.tensor) == (602, "`y = affine(relu1, W2, b2)`")
    assert path.read_bytes() == good


def test_divergence_after_a_save_names_it(net, small, tmp_path):
    path = tmp_path / "w.npz"
    trainer = Trainer(net(), small, TrainOptions(iters=1300, batch=SMALL_BATCH, evaluate=False))

    def blow_up(iteration, loss):
        if iteration == 600:
            trainer.optimizer.lr = 1e30

    with pytest.raises(Diverged) as err:
        trainer.run(checkpoint=path, on_iteration=blow_up)
    assert err.value.diagnostics[0].hint.endswith(f"; {path} keeps the last good state, from iteration 600")
    assert read_checkpoint(path).iteration == 600


def test_training_needs_a_scalar_loss():
    text = source().replace("output loss", "output y\n    output loss")
    program = program_of(text)
    assert error_of(load_data, "mnist", program) == (
        "g.graph:9:12: error[E902]: cannot train graph `g`: its output `y` is f64[N, 10], not a scalar loss\n"
        " 9 |     output y\n"
        "   |            ^\n"
        "hint: training minimises the first output; make it one number, e.g. "
        "`loss = softmax_loss(y, t)` and `output loss`"
    )
    x, y = np.zeros((5, 784)), np.arange(5)
    assert error_of(prepare_data, program, (x, y), (x, y)).startswith(
        "g.graph:9:12: error[E902]: cannot train graph `g`"
    )


def test_options_are_checked():
    assert error_of(TrainOptions, iters=0) == "graphc: error[E502]: iterations must be at least 1, got 0"
    assert error_of(TrainOptions, batch=-1) == "graphc: error[E502]: batch size must be at least 1, got -1"
    assert (
        error_of(TrainOptions, lr=float("nan"))
        == "graphc: error[E502]: learning rate must be a positive number, got nan"
    )
    assert (
        error_of(TrainOptions, optimizer="adma")
        == "graphc: error[E503]: unknown optimizer `adma`\nhint: did you mean `adam`?"
    )
    assert (
        error_of(TrainOptions, engine="jit")
        == "graphc: error[E503]: unknown engine `jit`\nhint: engines: auto, codegen, interpreter"
    )


# --- engines: the interpreter and the generated module ------------------------------


@pytest.mark.parametrize("dtype, optimizer", [("float32", "sgd"), ("float64", "sgd"), ("float32", "adam")])
def test_engines_train_bit_identical_weights(net, data32, dtype, optimizer):
    weights = {}
    for engine in ("interpreter", "codegen"):
        program = net(dtype, seed=5)
        options = TrainOptions(iters=40, seed=5, evaluate=False, engine=engine, optimizer=optimizer)
        trainer = Trainer(program, data32, options)
        trainer.run()
        assert trainer.engine == engine
        assert all(program.params[n].dtype == np.dtype(dtype) for n in program.param_names)
        weights[engine] = params_of(program)
    assert weights["interpreter"] == weights["codegen"]


@pytest.mark.parametrize("engine", ["interpreter", "codegen"])
def test_sgd_steps_are_seeded_with_the_learning_rate(net, engine):
    # Backward seeded with lr hands SGD lr * gradient: the same step as
    # multiplying afterwards, up to rounding.
    program = net("float64")
    data = mnist_slice(program, 600, 100)
    before = {n: program.params[n].copy() for n in program.param_names}
    Trainer(program, data, TrainOptions(iters=1, lr=0.5, evaluate=False, engine=engine)).run()
    index = np.random.default_rng(0).integers(0, data.train_size, 100)  # the trainer's first minibatch
    _, grads = net("float64").loss_and_grads({"x": data.x_train[index], "t": data.t_train[index]})
    for n in program.param_names:
        np.testing.assert_allclose(program.params[n], before[n] - 0.5 * grads[n], rtol=1e-12, atol=1e-17)
        assert not np.array_equal(program.params[n], before[n])


def test_auto_engine_is_codegen_where_a_module_can_be_generated(net, data32):
    trainer = Trainer(net(), data32, TrainOptions(iters=5, evaluate=False))
    trainer.run()
    assert trainer.engine == "codegen"


def test_auto_engine_falls_back_to_the_interpreter(data32):
    # f32 images into f64 params: a generated module has one float dtype.
    mixed = source(x="f32[N, 784]", t="f32[N, 10]").replace("param W: [784, 10]", "param W: f32[784, 10]")
    mixed = mixed.replace("param b: [10]", "param b: f32[10]")
    mixed = mixed.replace("    x -> affine(W, b) -> y", "    param s: f64[] = 1\n    x -> affine(W, b) -> y")
    program = program_of(mixed)
    data = prepare_data(
        program, (data32.x_train[:500], data32.y_train[:500]), (data32.x_test[:100], data32.y_test[:100]), name="mnist"
    )
    trainer = Trainer(program, data, TrainOptions(iters=5, evaluate=False))
    trainer.run()
    assert trainer.engine == "interpreter"
    forced = Trainer(program, data, TrainOptions(iters=5, evaluate=False, engine="codegen"))
    assert "mixes f32 and f64" in error_of(forced.run)


# --- accuracy: the book's figures ------------------------------------------------------


@pytest.mark.slow
def test_short_run_reaches_94_percent(net, data32):
    """The book's settings (SGD, lr 0.1, batch 100) for 3000 of its 10000 iterations."""
    result = Trainer(net("float32"), data32, TrainOptions(iters=3000)).run()
    assert result.test_acc >= 0.94


@pytest.mark.slow
def test_full_run_reaches_97_percent(net, data32):
    """The book's whole run: 10000 iterations; it reports about 97% test accuracy."""
    result = Trainer(net("float32"), data32, TrainOptions()).run()
    assert result.iteration == 10000 and len(result.history) == 17
    assert result.test_acc >= 0.97


# --- the command line ------------------------------------------------------------------


@pytest.mark.slow
def test_cli_train_json_save_log_plot(models, capsys, tmp_path):
    save, log, plot = tmp_path / "w.npz", tmp_path / "log.csv", tmp_path / "curves.png"
    status, out, err = graphc_cli(
        capsys,
        "train",
        models / "two_layer_net.graph",
        "--data",
        "mnist",
        "--iters",
        50,
        "--dtype",
        "float32",
        "--save",
        save,
        "--log",
        log,
        "--plot",
        plot,
        "--json",
    )
    assert status == 0, err
    summary = json.loads(out)
    assert {"train_acc", "test_acc", "iters", "seconds"} <= set(summary)
    assert summary["iters"] == 50 and summary["status"] == "completed" and summary["saved"] == str(save)
    assert 0.5 < summary["test_acc"] < 1
    assert (summary["optimizer"], summary["lr"], summary["batch"], summary["dtype"]) == ("sgd", 0.1, 100, "float32")
    assert read_checkpoint(save).iteration == 50
    assert log.read_text().splitlines()[0] == "epoch,iteration,loss,train_acc,test_acc,seconds"
    assert log.read_text().splitlines()[1].startswith("1,50,")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train_text(models, capsys):
    status, out, err = graphc_cli(capsys, "train", models / "two_layer_net.graph", "--iters", 50, "--dtype", "float32")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "training two_layer_net on mnist: 60000 train / 10000 test images, float32, sgd lr 0.1, batch 100, seed 0"
    )
    assert lines[1] == "50 iterations (1 epoch of 600)"
    assert lines[2].startswith("epoch 1/1  iter     50  loss ")
    assert lines[3].startswith("trained 50 iterations in ")
    assert lines[4].startswith("final: train acc 0.")
    assert err == ""  # no progress bar when stderr is not a terminal


@pytest.mark.slow
def test_cli_resume_matches_a_straight_run(models, capsys, tmp_path):
    model = models / "two_layer_net.graph"
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    options = ("--batch", 50, "--optimizer", "adam", "--dtype", "float32")
    assert graphc_cli(capsys, "train", model, "--iters", 120, *options, "--save", a)[0] == 0
    assert graphc_cli(capsys, "train", model, "--iters", 60, *options, "--save", b)[0] == 0
    # --resume takes the optimizer, its lr, the batch and the dtype from the checkpoint
    status, out, _ = graphc_cli(capsys, "train", model, "--iters", 120, "--resume", b, "--save", b, "--json")
    assert status == 0
    assert json.loads(out)["iters_run"] == 60
    pa, pb = read_checkpoint(a).params, read_checkpoint(b).params
    assert all(pa[name].tobytes() == pb[name].tobytes() for name in pa)


@pytest.mark.slow
def test_cli_resume_with_nothing_left(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    model = models / "two_layer_net.graph"
    assert graphc_cli(capsys, "train", model, "--iters", 20, "--save", path)[0] == 0
    status, out, _ = graphc_cli(capsys, "train", model, "--iters", 20, "--resume", path)
    assert status == 0
    assert f"nothing to do: {path} is at iteration 20 already; pass a larger --iters to train further" in out


@pytest.mark.slow
def test_cli_declared_float32_stays_float32(capsys, tmp_path):
    """Without --dtype, train and eval keep the dtypes the graph declares."""
    model = tmp_path / "g32.graph"
    model.write_text(
        source("f32[N, 784]", "f32[N, 10]")
        .replace("param W: [784, 10]", "param W: f32[784, 10]")
        .replace("param b: [10]", "param b: f32[10]")
    )
    path = tmp_path / "w.npz"
    status, out, err = graphc_cli(capsys, "train", model, "--iters", 20, "--save", path, "--json")
    assert status == 0, err
    assert json.loads(out)["dtype"] == "float32"
    assert read_checkpoint(path).params["W"].dtype == np.float32
    status, out, err = graphc_cli(capsys, "eval", model, "--weights", path, "--json")
    assert status == 0, err
    assert json.loads(out)["dtype"] == "float32"
    np.savez(tmp_path / "plain.npz", **read_checkpoint(path).params)  # no dtype of its own
    status, out, err = graphc_cli(capsys, "eval", model, "--weights", tmp_path / "plain.npz", "--json")
    assert json.loads(out)["dtype"] == "float32"
    status, out, err = graphc_cli(capsys, "eval", model, "--weights", path, "--dtype", "float64", "--json")
    assert json.loads(out)["dtype"] == "float64"


def test_cli_a_graph_whose_output_is_not_a_loss(capsys, tmp_path):
    model = tmp_path / "g.graph"
    model.write_text(source().replace("output loss", "output y\n    output loss"))
    status, out, err = graphc_cli(capsys, "train", model, "--iters", 5)
    assert status == 2
    assert err.startswith(
        f"{model}:9:12: error[E902]: cannot train graph `g`: its output `y` is f64[N, 10], not a scalar loss"
    )


@pytest.mark.slow
def test_cli_resume_keeps_the_run_going_as_one(models, capsys, tmp_path):
    """A resumed run's log has one row per epoch, as an uninterrupted one's."""
    model = models / "two_layer_net.graph"
    straight, resumed, w = tmp_path / "straight.csv", tmp_path / "resumed.csv", tmp_path / "w.npz"
    common = ("--batch", 1000, "--dtype", "float32")
    assert graphc_cli(capsys, "train", model, "--iters", 130, *common, "--log", straight)[0] == 0
    assert graphc_cli(capsys, "train", model, "--iters", 70, *common, "--save", w)[0] == 0
    assert graphc_cli(capsys, "train", model, "--iters", 130, "--resume", w, "--log", resumed)[0] == 0
    rows = [[line.split(",")[:5] for line in path.read_text().splitlines()] for path in (straight, resumed)]
    assert rows[0] == rows[1] and [r[:2] for r in rows[0][1:]] == [["1", "60"], ["2", "120"], ["3", "130"]]


@pytest.mark.slow
def test_cli_resume_from_a_corrupt_checkpoint(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    model = models / "two_layer_net.graph"
    assert graphc_cli(capsys, "train", model, "--iters", 5, "--save", path)[0] == 0
    rewrite_meta(path, lambda meta: meta.update(seed=-1))
    status, out, err = graphc_cli(capsys, "train", model, "--iters", 10, "--resume", path)
    assert status == 2
    assert err == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `seed` must be a whole number at least 0, got -1\n"
        "hint: the file is damaged; use another checkpoint or train again\n"
    )


def test_cli_epochs(models, capsys):
    # An epoch is the whole training set whatever the batch: large batches make it few steps.
    status, out, _ = graphc_cli(
        capsys, "train", models / "two_layer_net.graph", "--epochs", 1, "--batch", 10000, "--dtype", "float32", "--json"
    )
    assert status == 0
    assert json.loads(out)["iters"] == 6


def test_cli_ctrl_c_saves_and_exits_130(models, capsys, tmp_path, monkeypatch):
    import graphc.train as command  # the train command takes its Trainer from here when it runs

    class Interrupted(Trainer):
        def run(self, **kwargs):
            def interrupt(iteration, loss):
                if iteration == 25:
                    os.kill(os.getpid(), signal.SIGINT)

            kwargs["on_iteration"] = interrupt
            return super().run(**kwargs)

    monkeypatch.setattr(command, "Trainer", Interrupted)
    monkeypatch.chdir(tmp_path)
    status, out, err = graphc_cli(capsys, "train", models / "two_layer_net.graph", "--iters", 100)
    assert status == 130
    assert err.splitlines() == [
        "interrupted at iteration 25; saved two_layer_net-interrupted.npz",
        f"continue with: graphc train {models / 'two_layer_net.graph'} --resume two_layer_net-interrupted.npz "
        "--save two_layer_net-interrupted.npz",
    ]
    assert read_checkpoint(tmp_path / "two_layer_net-interrupted.npz").iteration == 25


def test_cli_divergence_exits_1(models, capsys, tmp_path):
    status, out, err = graphc_cli(
        capsys, "train", models / "two_layer_net.graph", "--iters", 20, "--lr", "1e30", "--dtype", "float32", "--json"
    )
    assert status == 1
    assert json.loads(out)["status"] == "diverged"
    assert err.startswith("graphc: error[E901]: training diverged at iteration 2: the loss is nan; ")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--iters", "-5"], "graphc: error[E502]: --iters must be at least 1, got -5\nhint: e.g. `--iters 100`"),
        (["--iters", "ten"], "graphc: error[E502]: --iters takes a whole number, got `ten`\nhint: e.g. `--iters 100`"),
        (["--batch", "0"], "graphc: error[E502]: --batch must be at least 1, got 0\nhint: e.g. `--batch 100`"),
        (
            ["--lr", "fast"],
            "graphc: error[E502]: --lr takes a number, got `fast`\nhint: e.g. `--lr 0.1` or `--lr 1e-3`",
        ),
        (
            ["--lr", "-1"],
            "graphc: error[E502]: --lr must be a positive number, got -1\nhint: e.g. `--lr 0.1` or `--lr 1e-3`",
        ),
        (
            ["--iters", "10", "--epochs", "2"],
            "graphc: error[E505]: give --iters or --epochs, not both\n"
            "hint: --epochs E is E * (train size / batch) iterations, e.g. 600 an epoch for MNIST with batch 100",
        ),
        (["--data", "cifar"], "graphc: error[E503]: unknown dataset `cifar`\nhint: known datasets: mnist"),
        (
            ["--save", "/no/such/dir/w.npz"],
            "graphc: error[E604]: --save /no/such/dir/w.npz: cannot write: no such directory\n"
            "hint: create `/no/such/dir` first",
        ),
        (["--seed", "-1"], "graphc: error[E502]: --seed must be at least 0, got -1\nhint: e.g. `--seed 100`"),
        (["--dtype", "float16"], None),
    ],
)
def test_cli_flag_errors(models, capsys, flags, message):
    status, out, err = graphc_cli(capsys, "train", models / "two_layer_net.graph", *flags)
    assert status == 2
    assert message is None or err.rstrip("\n") == message


@pytest.mark.parametrize("flag", ["--save", "--log", "--plot"])
def test_cli_an_unwritable_output_fails_before_training(models, capsys, flag):
    # /proc takes no new files, whoever asks (root included).
    status, out, err = graphc_cli(capsys, "train", models / "two_layer_net.graph", "--iters", 5, flag, "/proc/w.png")
    assert status == 2 and out == ""  # not a line of training
    assert err.startswith(f"graphc: error[E604]: {flag} /proc/w.png: cannot write: ") and err.count("\n") == 1


def test_cli_checking_an_output_leaves_no_file_behind(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    status, _, _ = graphc_cli(capsys, "train", models / "two_layer_net.graph", "--iters", "0", "--save", path)
    assert status == 2 and list(tmp_path.iterdir()) == []
    path.write_bytes(b"an earlier checkpoint")
    status, _, _ = graphc_cli(capsys, "train", models / "two_layer_net.graph", "--batch", "x", "--log", path)
    assert status == 2 and path.read_bytes() == b"an earlier checkpoint"


@pytest.mark.slow
def test_cli_eval(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    model = models / "two_layer_net.graph"
    assert graphc_cli(capsys, "train", model, "--iters", 100, "--dtype", "float32", "--save", path)[0] == 0
    status, out, err = graphc_cli(capsys, "eval", model, "--weights", path, "--data", "mnist", "--json")
    assert status == 0, err
    report = json.loads(out)
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10000 == report["images"]
    assert report["accuracy"] == np.trace(confusion) / 10000
    assert [c["images"] for c in report["per_class"]] == confusion.sum(axis=1).tolist()
    assert report["dtype"] == "float32" and report["iteration"] == 100
    status, out, _ = graphc_cli(capsys, "eval", model, "--weights", path)
    assert status == 0
    assert f"accuracy {report['accuracy']:.4f}  ({np.trace(confusion)} of 10000 images)" in out
    assert "confusion matrix: rows are the true class, columns the predicted class" in out


def test_cli_eval_wrong_weights(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, W1=np.zeros((784, 100)))
    status, _, err = graphc_cli(capsys, "eval", models / "two_layer_net.graph", "--weights", path)
    assert status == 2
    assert err.startswith(
        f"{path}: error[E707]: tensor `W1` has shape [784, 100], but param `W1` of graph `two_layer_net` has shape [784, 50]"
    )


@pytest.mark.slow
def test_cli_run_and_gradcheck_with_weights(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    model = models / "two_layer_net.graph"
    trained = graphc.compile_file(model, seed=5)
    save_checkpoint(path, trained)
    status, out, _ = graphc_cli(capsys, "run", model, "--weights", path, "--json")
    expected = graphc.compile_file(model, seed=0)
    for name in expected.param_names:
        expected.params[name] = trained.params[name]
    assert json.loads(out)["outputs"]["loss"] == pytest.approx(float(expected.forward()["loss"]), rel=1e-12)
    status, out, _ = graphc_cli(capsys, "gradcheck", model, "--weights", path, "--json")
    assert status == 0 and json.loads(out)["ok"]
    status, _, err = graphc_cli(capsys, "run", model, "--weights", tmp_path / "none.npz")
    assert status == 2 and err.startswith(f"{tmp_path / 'none.npz'}: error[E601]: no such weights file")

"""`graphc train --eval-sample K`: each epoch's accuracies on the first K images
of each set (the book's evaluate_sample_num_per_epoch), the end's on the whole
sets; kept in the JSON report and in checkpoints, and on --resume; bad K refused."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest
from helpers import graphc_cli, mnist_slice, rewrite_meta, two_layer_net

from graphc.checkpoint import read_meta
from graphc.errors import GraphcError
from graphc.train import Trainer, TrainOptions, load_data

K = 300
# In-process runs train on the first 3000 and test on the first 1000 images: at batch 20
# an epoch is 150 iterations, and 310 make two whole epochs and the start of a third.
TRAIN, TEST = 3000, 1000
BATCH, ITERS = 20, 310
# The command line trains on the whole of MNIST: at batch 2000 an epoch is 30 iterations.
CLI_BATCH = 2000


def by_hand(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The two-layer net's accuracy on (x, y), in numpy: affine, relu, affine, argmax."""
    hidden = np.maximum(x @ params["W1"] + params["b1"], 0)
    scores = hidden @ params["W2"] + params["b2"]
    return float(np.mean(scores.argmax(axis=1) == y))


@functools.cache
def measured(eval_sample: int | None) -> tuple[list, list[dict[str, float]], dict[str, np.ndarray]]:
    """(history, accuracies by hand at each epoch's end, final params) of a short run on the slice
    (made once per process: the tests only read it)."""
    program = two_layer_net()
    data = mnist_slice(program, TRAIN, TEST)
    trainer = Trainer(program, data, TrainOptions(iters=ITERS, batch=BATCH, eval_sample=eval_sample))
    hand: list[dict[str, float]] = []

    def on_epoch(record) -> None:
        params = program.params
        hand.append(
            {
                "train_k": by_hand(params, data.x_train[:K], data.y_train[:K]),
                "test_k": by_hand(params, data.x_test[:K], data.y_test[:K]),
                "train": by_hand(params, data.x_train, data.y_train),
                "test": by_hand(params, data.x_test, data.y_test),
            }
        )

    result = trainer.run(on_epoch=on_epoch)
    return result.history, hand, {name: program.params[name].copy() for name in program.param_names}


def test_each_epoch_is_measured_on_the_first_k_images_and_the_end_on_the_whole_sets():
    history, hand, _ = measured(K)
    assert [r.iteration for r in history] == [150, 300, 310]
    for record, expected in zip(history[:-1], hand[:-1]):
        assert (record.train_acc, record.test_acc) == (expected["train_k"], expected["test_k"])
        # A sample, not the whole set: the two differ at this point of training.
        assert (record.train_acc, record.test_acc) != (expected["train"], expected["test"])
    assert (history[-1].train_acc, history[-1].test_acc) == (hand[-1]["train"], hand[-1]["test"])
    assert history[-1].test_acc > 0.8  # it learned (chance is 0.1)


def test_without_the_flag_every_epoch_is_measured_on_the_whole_sets_and_training_is_the_same():
    history, hand, params = measured(None)
    assert len(history) == len(hand) == 3
    for record, expected in zip(history, hand):
        assert (record.train_acc, record.test_acc) == (expected["train"], expected["test"])
    _, _, sampled_params = measured(K)
    for name, value in params.items():
        assert value.tobytes() == sampled_params[name].tobytes(), name


def test_trainer_says_what_each_record_measured():
    program = two_layer_net()
    data = mnist_slice(program, TRAIN, TEST)
    options = TrainOptions(iters=ITERS, batch=BATCH, eval_sample=2000)
    history = Trainer(program, data, options).run().history
    trainer = Trainer(program, data, options)
    # K larger than the test set: the whole test set.
    assert [trainer.measured_on(r) for r in history] == [(2000, 1000), (2000, 1000), (3000, 1000)]
    plain = Trainer(program, data, TrainOptions(iters=ITERS, batch=BATCH))
    assert plain.measured_on(history[0]) == (3000, 1000)


def train_args(models, *more) -> list:
    graph = models / "two_layer_net.graph"
    return ["train", graph, "--batch", CLI_BATCH, "--dtype", "float32", "--no-progress", *more]


def test_cli_marks_the_sampled_accuracies(models, capsys):
    # 35 iterations: one whole epoch (30), measured on the sample, and the end.
    status, out, _ = graphc_cli(capsys, *train_args(models, "--iters", 35, "--eval-sample", 20000))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].endswith("batch 2000, seed 0, each epoch measured on the first 20000 images")
    acc = r"\d\.\d{4}"
    # The train set sampled; the test set, smaller than K, whole.
    assert re.search(rf"^epoch 1/2 .*  train acc {acc} \(20000\)  test acc {acc}  ", lines[2]), lines[2]
    assert re.search(rf"^epoch 2/2 .*  train acc {acc}  test acc {acc}  ", lines[3]), lines[3]  # the end: whole sets
    assert re.fullmatch(rf"final: train acc {acc}  test acc {acc}", lines[-1]), lines[-1]


def test_cli_json_reports_k_and_the_whole_sets_at_the_end(models, capsys):
    status, out, _ = graphc_cli(capsys, *train_args(models, "--iters", 35, "--eval-sample", K, "--json"))
    assert status == 0
    report = json.loads(out)
    assert report["eval_sample"] == K
    # The same run in-process, measured by hand: the epoch on the first K images, the end on the whole sets.
    program = two_layer_net()
    data = load_data("mnist", program, progress=False)
    hand = []

    def on_epoch(record) -> None:
        hand.append(
            (
                by_hand(program.params, data.x_train[:K], data.y_train[:K]),
                by_hand(program.params, data.x_test[:K], data.y_test[:K]),
            )
        )

    Trainer(program, data, TrainOptions(iters=35, batch=CLI_BATCH, eval_sample=K)).run(on_epoch=on_epoch)
    whole = (by_hand(program.params, data.x_train, data.y_train), by_hand(program.params, data.x_test, data.y_test))
    assert [(r["train_acc"], r["test_acc"]) for r in report["history"]] == [hand[0], whole]
    assert (report["train_acc"], report["test_acc"]) == whole
    status, out, _ = graphc_cli(capsys, *train_args(models, "--iters", 2, "--json"))
    assert status == 0 and json.loads(out)["eval_sample"] is None


def test_cli_resume_keeps_the_checkpoints_k_unless_told_otherwise(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    status, _, _ = graphc_cli(capsys, *train_args(models, "--iters", 2, "--eval-sample", K, "--save", path))
    assert status == 0 and read_meta(path).eval_sample == K
    status, out, _ = graphc_cli(capsys, *train_args(models, "--iters", 3, "--resume", path, "--save", path, "--json"))
    assert status == 0 and json.loads(out)["eval_sample"] == K
    assert read_meta(path).eval_sample == K
    status, out, _ = graphc_cli(
        capsys, *train_args(models, "--iters", 4, "--resume", path, "--eval-sample", 50, "--json")
    )
    assert status == 0 and json.loads(out)["eval_sample"] == 50


def test_a_checkpoint_without_k_has_none(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    status, _, _ = graphc_cli(capsys, *train_args(models, "--iters", 2, "--save", path))
    assert status == 0
    with np.load(path, allow_pickle=False) as npz:
        assert "eval_sample" not in json.loads(str(npz["meta"]))
    assert read_meta(path).eval_sample is None


def test_a_bad_k_in_a_checkpoint_is_corrupt(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    status, _, _ = graphc_cli(capsys, *train_args(models, "--iters", 2, "--eval-sample", K, "--save", path))
    assert status == 0
    rewrite_meta(path, lambda meta: meta.update(eval_sample=0))
    with pytest.raises(GraphcError) as err:
        read_meta(path)
    assert err.value.render() == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `eval_sample` must be a whole number at least 1, got 0\n"
        "hint: the file is damaged; use another checkpoint or train again"
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "--eval-sample must be at least 1, got 0"),
        ("-5", "--eval-sample must be at least 1, got -5"),
        ("1.5", "--eval-sample takes a whole number, got `1.5`"),
        ("lots", "--eval-sample takes a whole number, got `lots`"),
    ],
)
def test_cli_refuses_a_bad_k(models, capsys, value, message):
    status, out, err = graphc_cli(capsys, "train", models / "two_layer_net.graph", f"--eval-sample={value}")
    assert (status, out) == (2, "")
    assert err == f"graphc: error[E502]: {message}\nhint: e.g. `--eval-sample 100`\n"


@pytest.mark.parametrize("sample", [0, -1])
def test_train_options_refuse_a_bad_k(sample):
    with pytest.raises(GraphcError) as err:
        TrainOptions(eval_sample=sample)
    assert err.value.render() == f"graphc: error[E502]: the evaluation sample must be at least 1 image, got {sample}"


def test_an_interrupted_run_keeps_its_last_sampled_measurement_and_says_so():
    program = two_layer_net()
    data = mnist_slice(program, TRAIN, TEST)
    trainer = Trainer(program, data, TrainOptions(iters=ITERS, batch=BATCH, eval_sample=K))
    result = trainer.run(on_epoch=lambda record: trainer.request_stop())
    assert (result.status, result.iteration) == ("interrupted", 150)
    assert trainer.measured_on(result.history[-1]) == (K, K)
    x, y = data.x_test[:K], data.y_test[:K]
    assert result.test_acc == by_hand(program.params, x, y)

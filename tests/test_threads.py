"""--threads N|auto (graphc/threads.py): the flag on train, eval, time and run,
the BLAS limit really in force during the steps, the default's bit-identical
reruns, and auto's choices, made deterministic with a fake clock."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import graphc_cli, mnist_slice, rewrite_meta, two_layer_net

from graphc import threads
from graphc.checkpoint import read_meta
from graphc.errors import GraphcError
from graphc.threads import ThreadChoice, blas_thread_counts
from graphc.train import Trainer, TrainOptions

HINT = "hint: e.g. `--threads 1`, or `--threads auto` to choose by measuring\n"
BATCH = 10  # with 600 training images: epochs of 60 iterations


@pytest.fixture(scope="module")
def small():
    return mnist_slice(two_layer_net("float32"), 600, 100)


def params_of(program) -> dict[str, bytes]:
    return {name: program.params[name].tobytes() for name in program.param_names}


# --- the flag --------------------------------------------------------------------------


def command_line(models, command: str) -> list:
    graph = models / "two_layer_net.graph"
    return {"eval": ["eval", graph, "--weights", "w.npz"]}.get(command, [command, graph])


@pytest.mark.parametrize("command", ["train", "eval", "time", "run"])
@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "--threads must be from 1 to 1024, got 0"),
        ("-2", "--threads must be from 1 to 1024, got -2"),
        ("5000", "--threads must be from 1 to 1024, got 5000"),
        ("x", "--threads takes a whole number or `auto`, got `x`"),
        ("1.5", "--threads takes a whole number or `auto`, got `1.5`"),
        ("", "--threads takes a whole number or `auto`, got ``"),
    ],
)
def test_every_command_refuses_a_bad_count(models, capsys, command, value, message):
    status, out, err = graphc_cli(capsys, *command_line(models, command), f"--threads={value}")
    assert (status, out) == (2, "")
    assert err == f"graphc: error[E502]: {message}\n{HINT}"


@pytest.mark.parametrize("text, setting", [("1", 1), ("2", 2), ("auto", "auto"), ("AUTO", "auto"), ("1e0", 1)])
def test_the_flag_reads_counts_and_auto(text, setting):
    from graphc.commands.common import threads_setting

    assert threads_setting(text) == setting


def test_train_options_refuse_a_bad_setting():
    for bad in (0, "two", 1.5):
        with pytest.raises(GraphcError) as err:
            TrainOptions(threads=bad)
        assert err.value.render() == (
            f"graphc: error[E502]: threads must be a whole number at least 1 or `auto`, got {bad!r}"
        )


def test_candidates_run_from_one_to_the_cores_available(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 3)
    assert threads.candidate_counts() == (1, 2, 3)
    monkeypatch.undo()
    assert 1 <= threads.available_cores() <= (__import__("os").cpu_count() or 1)


# --- fixed counts ------------------------------------------------------------------------


def counts_during_steps(program, data, **options) -> list[list[int]]:
    """The BLAS thread counts threadpoolctl reads after every step of a run."""
    seen: list[list[int]] = []
    trainer = Trainer(program, data, TrainOptions(batch=BATCH, evaluate=False, **options))
    trainer.run(on_iteration=lambda iteration, loss: seen.append(blas_thread_counts()))
    return seen


def test_the_default_is_one_thread_in_force_during_the_steps_and_restored_after(small):
    before = blas_thread_counts()
    assert TrainOptions().threads == threads.DEFAULT_THREADS == 1
    seen = counts_during_steps(two_layer_net(), small, iters=20)
    assert seen == [[1] * len(before)] * 20
    assert blas_thread_counts() == before


@pytest.mark.parametrize("count", [1, 2])
def test_a_fixed_count_is_in_force_during_the_steps(small, count):
    before = blas_thread_counts()
    seen = counts_during_steps(two_layer_net(), small, iters=15, threads=count)
    assert seen == [[count] * len(before)] * 15
    assert blas_thread_counts() == before


def test_the_default_gives_bit_identical_weights(small):
    runs = []
    for _ in range(2):
        program = two_layer_net(seed=5)
        Trainer(program, small, TrainOptions(iters=150, batch=BATCH, seed=5, evaluate=False)).run()
        runs.append(params_of(program))
    assert runs[0] == runs[1]


def test_one_and_two_threads_both_train(small):
    trained = {}
    for count in (1, 2):
        program = two_layer_net(seed=1)
        result = Trainer(program, small, TrainOptions(iters=120, batch=BATCH, seed=1, threads=count)).run()
        assert result.test_acc is not None and result.test_acc > 0.5
        trained[count] = program.params
    # Not asserted equal: another split of the products may round differently.
    for name in trained[1]:
        np.testing.assert_allclose(trained[1][name], trained[2][name], rtol=1e-3, atol=1e-4)


# --- auto, with a fake clock -----------------------------------------------------------


class FakeClock:
    """Time that passes only as a step hook says: each step takes cost(iteration,
    threads in force), so auto's choices follow from the costs, not the machine."""

    def __init__(self, cost):
        self.now = 0.0
        self.cost = cost
        self.seen: list[int] = []

    def __call__(self) -> float:
        return self.now

    def step(self, iteration: int, loss: float) -> None:
        [count] = set(blas_thread_counts())
        self.seen.append(count)
        self.now += self.cost(iteration, count)


def auto_run(monkeypatch, data, cost, iters: int, **options) -> tuple[Trainer, FakeClock]:
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    clock = FakeClock(cost)
    monkeypatch.setattr(threads, "clock", clock)
    trainer = Trainer(two_layer_net(), data, TrainOptions(iters=iters, batch=BATCH, threads="auto", **options))
    trainer.run(on_iteration=clock.step)
    return trainer, clock


def test_auto_times_each_count_and_keeps_the_fastest(monkeypatch, small):
    trainer, clock = auto_run(monkeypatch, small, lambda i, n: {1: 3.0, 2: 1.0}[n], iters=40, evaluate=False)
    assert trainer.thread_choices == [ThreadChoice(0, "train", 2, ((1, 3.0), (2, 1.0)))]
    # 1 + 8 steps at the count in use first (1), 1 + 8 at 2; then 2 for the rest
    assert clock.seen == [1] * 9 + [2] * 31


def test_auto_gives_up_a_count_far_slower_after_one_timed_step(monkeypatch, small):
    trainer, clock = auto_run(monkeypatch, small, lambda i, n: {1: 1.0, 2: 8.0}[n], iters=30, evaluate=False)
    assert trainer.thread_choices == [ThreadChoice(0, "train", 1, ((1, 1.0), (2, 8.0)))]
    assert clock.seen == [1] * 9 + [2] * 2 + [1] * 19


def test_auto_rechecks_at_every_epoch_and_evaluation_chooses_separately(monkeypatch, small):
    # Two threads are fast until iteration 60 (the first epoch's end), then slow.
    def cost(iteration, count):
        return {1: 2.0, 2: 1.0}[count] if iteration <= 60 else {1: 1.0, 2: 4.0}[count]

    trainer, clock = auto_run(monkeypatch, small, cost, iters=100)
    train = [(c.iteration, c.threads, dict(c.seconds)) for c in trainer.thread_choices if c.stage == "train"]
    assert train == [(0, 2, {1: 2.0, 2: 1.0}), (60, 1, {2: 4.0, 1: 1.0})]
    evals = [(c.iteration, c.threads) for c in trainer.thread_choices if c.stage == "eval"]
    assert evals == [(60, 1), (100, 1)]  # the fake clock stands still while evaluating: a tie, the fewer threads
    assert clock.seen[60:68] == [2] * 4 + [1] * 4  # the recheck: the count training ran at first, 1 + 3 steps each
    assert set(clock.seen[68:]) == {1}


def test_auto_on_one_core_has_nothing_to_time(monkeypatch, small):
    monkeypatch.setattr(threads, "available_cores", lambda: 1)
    seen: list[list[int]] = []
    trainer = Trainer(two_layer_net(), small, TrainOptions(iters=70, batch=BATCH, threads="auto", evaluate=False))
    trainer.run(on_iteration=lambda iteration, loss: seen.append(blas_thread_counts()))
    assert trainer.thread_choices == [ThreadChoice(0, "train", 1, ())]
    assert {tuple(s) for s in seen} == {(1,) * len(seen[0])}


def test_choose_threads_sets_the_fastest(monkeypatch):
    clock = FakeClock(None)
    monkeypatch.setattr(threads, "clock", clock)

    def work():
        [count] = set(blas_thread_counts())
        clock.now += {1: 5.0, 2: 2.0, 3: 4.0}[count]

    with threads.BlasThreads() as blas:
        chosen, seconds = threads.choose_threads(work, (1, 2, 3), blas)
        assert (chosen, seconds) == (2, {1: 5.0, 2: 2.0, 3: 4.0})
        assert set(blas_thread_counts()) == {2}


# --- auto on the command line ------------------------------------------------------------


def train_command(models, *more) -> list:
    graph = models / "two_layer_net.graph"
    return ["train", graph, "--batch", 2000, "--dtype", "float32", "--no-progress", *more]


def test_train_auto_records_its_choices_in_json_and_meta(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    status, out, err = graphc_cli(capsys, *train_command(models, "--iters", 35, "--threads", "auto"), "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["threads"] == "auto"
    stages = [(c["iteration"], c["stage"]) for c in report["thread_choices"]]
    assert stages[:2] == [(0, "train"), (30, "eval")] and stages[-1] == (35, "eval")
    cores = threads.candidate_counts()
    assert all(c["threads"] in cores for c in report["thread_choices"])

    status, out, err = graphc_cli(capsys, *train_command(models, "--iters", 35, "--threads", "auto", "--save", path))
    assert status == 0, err
    meta = read_meta(path)
    assert meta is not None and meta.threads == "auto"
    assert [(c.iteration, c.stage) for c in meta.thread_choices] == stages
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    for line in epoch_lines:
        train_count, eval_count = line.split("  threads ")[1].split(", eval ")
        assert int(train_count) in cores and int(eval_count) in cores
    assert "BLAS threads chosen by timing (--threads auto)" in out.splitlines()[0]


def test_train_default_records_one_thread_and_no_choices(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    status, out, err = graphc_cli(capsys, *train_command(models, "--iters", 3, "--save", path), "--json")
    assert status == 0, err
    report = json.loads(out)
    assert (report["threads"], report["thread_choices"]) == (1, [])
    meta = read_meta(path)
    assert meta is not None and (meta.threads, meta.thread_choices) == (1, ())


def test_a_damaged_thread_record_is_refused(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    assert graphc_cli(capsys, *train_command(models, "--iters", 3, "--save", path))[0] == 0
    rewrite_meta(path, lambda meta: meta.update(threads=0))
    with pytest.raises(GraphcError) as err:
        read_meta(path)
    assert err.value.render() == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `threads` must be a whole number at least 1, got 0\n"
        "hint: the file is damaged; use another checkpoint or train again"
    )
    rewrite_meta(path, lambda meta: meta.update(threads=1, thread_choices=[{"stage": "train"}]))
    with pytest.raises(GraphcError) as err:
        read_meta(path)
    assert err.value.render() == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `thread_choices[0]` must be a record of iteration, "
        'stage, threads, seconds, got {"stage": "train"}\n'
        "hint: the file is damaged; use another checkpoint or train again"
    )


def test_eval_auto_reports_its_choice(models, capsys, tmp_path):
    path = tmp_path / "w.npz"
    assert graphc_cli(capsys, *train_command(models, "--iters", 3, "--save", path))[0] == 0
    graph = models / "two_layer_net.graph"
    status, out, err = graphc_cli(capsys, "eval", graph, "--weights", path, "--threads", "auto", "--json")
    assert status == 0, err
    chosen = json.loads(out)["threads"]
    assert chosen["setting"] == "auto" and chosen["used"] in threads.candidate_counts()
    assert sorted(chosen["seconds"]) == [str(c) for c in threads.candidate_counts()]
    status, out, err = graphc_cli(capsys, "eval", graph, "--weights", path, "--json")
    assert "threads" not in json.loads(out)  # a fixed count is the flag's: nothing chosen to report


def test_time_runs_at_the_count_given(models, capsys):
    graph = models / "two_layer_net.graph"
    for count, words in ((1, "1 thread"), (2, "2 threads")):
        status, out, err = graphc_cli(capsys, "time", graph, "--iters", 2, "--no-codegen", "--threads", count)
        assert status == 0, err
        assert out.splitlines()[1].endswith(f", {words}")
    status, out, err = graphc_cli(capsys, "time", graph, "--iters", 2, "--no-codegen", "--threads", "auto", "--json")
    report = json.loads(out)
    assert report["threads"]["used"] in threads.candidate_counts()
    assert report["blas"].endswith(f", {report['threads']['used']} thread" + "s" * (report["threads"]["used"] != 1))


def test_run_auto_gives_the_same_outputs(models, capsys):
    graph = models / "two_layer_net.graph"
    status, fixed, err = graphc_cli(capsys, "run", graph, "--json")
    assert status == 0, err
    status, chosen, err = graphc_cli(capsys, "run", graph, "--threads", "auto", "--json")
    assert status == 0, err
    report = json.loads(chosen)
    assert report.pop("threads")["used"] in threads.candidate_counts()
    expected = json.loads(fixed)
    np.testing.assert_allclose(report["outputs"]["loss"], expected["outputs"]["loss"], rtol=1e-12)
    assert blas_thread_counts() == blas_thread_counts()  # restored: nothing left limited


def test_run_auto_keeps_forwards_errors(models, capsys, tmp_path):
    graph = tmp_path / "g.graph"
    graph.write_text("graph g {\n  input x: f64[2]\n  y = relu(x)\n  output y\n}\n")
    status, out, err = graphc_cli(capsys, "run", graph, "--threads", "auto")
    assert status == 2
    assert "input `x` has no value" in err


def test_a_resumed_run_keeps_the_choices_before_it(monkeypatch, small, tmp_path):
    from graphc.checkpoint import read_checkpoint

    path = tmp_path / "w.npz"
    first, _ = auto_run(monkeypatch, small, lambda i, n: {1: 1.0, 2: 2.0}[n], iters=70, evaluate=False)
    first.save(path)
    clock = FakeClock(lambda i, n: {1: 2.0, 2: 1.0}[n])
    monkeypatch.setattr(threads, "clock", clock)
    options = TrainOptions(iters=130, batch=BATCH, threads="auto", evaluate=False)
    second = Trainer(two_layer_net(), small, options, resume=read_checkpoint(path))
    second.run(on_iteration=clock.step)
    assert second.thread_choices[:2] == first.thread_choices  # at 0 and at 60: one thread
    assert [(c.iteration, c.threads) for c in second.thread_choices] == [(0, 1), (60, 1), (70, 2), (120, 2)]

"""Data-parallel training (graphc.distributed, `graphc train --workers N`, torchrun's
environment): 2 workers on half a minibatch each train the very weights one process
trains on the whole, a lost worker stops the job and leaves the checkpoint as it
was, rank 1 writes nothing, and a mistake every worker finds is printed once. Every
job runs on 127.0.0.1 under a timeout, so a hang fails the test instead of blocking
the run. CI installs torch (.ci/run)."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import NET, graphc_cli, mnist_slice, needs, two_layer_net

from graphc import distributed
from graphc.errors import GraphcError
from graphc.train import Trainer, TrainOptions

JOB_SECONDS = 300  # a job taking longer than this has hung (workers start in seconds even under load)
ITERS = 20


@pytest.fixture
def torch() -> None:
    """For the tests that run torch.distributed (the flags' tests run without it)."""
    present = importlib.util.find_spec("torch") is not None
    needs("torch", present, 'pip install "torch==2.13.0", the CPU wheel; CI installs it')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the same weights as one process -----------------------------------------------------


def _train(optimizer: str, team: Any = None) -> dict[str, np.ndarray]:
    program = two_layer_net("float64")
    data = mnist_slice(program, 1000, 100)
    options = TrainOptions(iters=ITERS, batch=100, optimizer=optimizer, evaluate=False)
    trainer = Trainer(program, data, options, team=team)
    trainer.run()
    # What this worker trained on, and how many all-reduces it took part in: the weights
    # alone would also agree if every worker trained on the whole minibatch by itself.
    rows = np.array([trainer.rows.start, trainer.rows.stop])
    return {**program.params, "rows": rows, "reduced": np.array(team.reduced if team else 0)}


class _CountingTeam(distributed.Team):
    reduced = 0

    def average(self, *args: Any, **kwargs: Any) -> Any:
        self.reduced += 1
        return super().average(*args, **kwargs)


def _worker(rank: int, port: int, optimizer: str, out: Path) -> None:
    """One of two workers, spawned: its weights after ITERS iterations into out/rankR.npz."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    team = distributed.join(distributed.Place(rank, 2))
    try:
        np.savez(out / f"rank{rank}.npz", **_train(optimizer, _CountingTeam(team.dist, distributed.Place(rank, 2))))
    finally:
        distributed.leave(team)


def _run_two(target: Any, *args: Any) -> None:
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=target, args=(rank, port, *args)) for rank in range(2)]
    for p in processes:
        p.start()
    try:
        for p in processes:
            p.join(JOB_SECONDS)
            assert p.exitcode == 0, f"worker exit code {p.exitcode} (None: hung)"
    finally:
        for p in processes:
            if p.is_alive():
                p.kill()
                p.join()


@pytest.mark.parametrize("optimizer", ["sgd", pytest.param("adam", marks=pytest.mark.slow)])
def test_two_workers_at_half_the_batch_train_what_one_process_does(optimizer: str, torch: None, tmp_path: Path) -> None:
    _run_two(_worker, optimizer, tmp_path)
    alone = _train(optimizer)
    first = two_layer_net("float64").params
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for rank, weights in enumerate(ranks):
        assert list(weights["rows"]) == [50 * rank, 50 * rank + 50]
        assert int(weights["reduced"]) == ITERS
    for name in first:
        value = alone[name]
        assert not np.array_equal(value, first[name]), name  # it trained
        for weights in ranks:
            np.testing.assert_allclose(weights[name], value, rtol=0, atol=1e-12, err_msg=name)
        assert np.array_equal(ranks[0][name], ranks[1][name]), name  # one step, taken by both


# --- the team's all-reduce, with a stand-in for torch.distributed ---------------------------------


class _OtherWorker:
    """torch.distributed as rank 0 of 2 sees it: the other worker adds `theirs`."""

    class ReduceOp:
        SUM = "sum"

    def __init__(self, theirs: np.ndarray | None):
        self.theirs = theirs

    def all_reduce(self, tensor: Any, op: str) -> None:
        assert op == "sum"
        if self.theirs is None:
            raise RuntimeError("Connection closed by peer [127.0.0.1]:41234\nmore detail")
        import torch

        tensor += torch.from_numpy(self.theirs)


def test_one_all_reduce_averages_gradients_loss_and_the_wish_to_stop(torch: None) -> None:
    theirs = np.array([3.0, 5.0, 7.0, 0.5, 1.0])  # their W [2, 1], b [1], loss, stop
    team = distributed.Team(_OtherWorker(theirs), distributed.Place(0, 2))
    grads = {"W": np.array([[1.0], [1.0]]), "b": np.array([1.0])}
    loss, averaged = team.average(0, np.array(1.5), grads, stop=False)
    assert float(loss) == 1.0
    np.testing.assert_array_equal(averaged["W"], [[2.0], [3.0]])
    np.testing.assert_array_equal(averaged["b"], [4.0])
    assert team.stopping  # the other worker was interrupted: both stop after this step
    assert team.rows(100) == slice(0, 50)


def test_a_lost_worker_is_an_error_naming_the_iteration(torch: None) -> None:
    team = distributed.Team(_OtherWorker(None), distributed.Place(0, 2))
    with pytest.raises(GraphcError) as err:
        team.average(6, np.array(1.0), {"W": np.ones(2)}, stop=False)
    assert err.value.render() == (
        "graphc: error[E910]: worker 0 of 2: the all-reduce of iteration 7 failed: another worker stopped or cannot "
        "be reached (Connection closed by peer [127.0.0.1]:41234)\n"
        "hint: the job stops; the last checkpoint --save wrote is intact: resume from it"
    )


class _Meeting(_OtherWorker):
    """torch.distributed as rank 0 of 2 sees the meeting before training: the other
    worker's rendered error, or None (it is ready); no other worker: "lost"."""

    def __init__(self, theirs: str | None):
        super().__init__(None)
        self.their_error = theirs

    def all_gather_object(self, errors: list[str | None], mine: str | None) -> None:
        if self.their_error == "lost":
            raise RuntimeError("Connection closed by peer [127.0.0.1]:41234")
        errors[:] = [mine, self.their_error]


def test_a_ready_worker_stops_silently_when_another_could_not_prepare(torch: None) -> None:
    team = distributed.Team(_Meeting("graphc: error[E503]: unknown dataset `nope`"), distributed.Place(0, 2))
    with pytest.raises(distributed.Stopped) as stop:
        team.ready()
    assert stop.value.status == 2
    distributed.Team(_Meeting(None), distributed.Place(0, 2)).ready()  # both ready: it trains


def test_a_worker_lost_before_training_is_an_error(torch: None) -> None:
    team = distributed.Team(_Meeting("lost"), distributed.Place(0, 2))
    with pytest.raises(GraphcError) as err:
        team.ready()
    assert err.value.render() == (
        "graphc: error[E910]: worker 0 of 2: the workers could not meet before training: another worker stopped "
        "or cannot be reached (Connection closed by peer [127.0.0.1]:41234)\n"
        "hint: the job stops before its first iteration"
    )


@pytest.mark.parametrize(
    ("errors", "silent"),
    [
        (["E1", "E1", "E1"], [False, True, True]),  # the same mistake everywhere: rank 0 prints it
        ([None, "E1", "E1"], [False, False, True]),  # rank 0 ready: rank 1 prints what it and rank 2 found
        (["E1", "E2", None], [False, False, False]),  # two different mistakes: each printed by its worker
        ([None, None, "E2"], [False, False, False]),
    ],
)
def test_each_error_is_printed_by_the_lowest_rank_that_found_it(errors: list[str | None], silent: list[bool]) -> None:
    assert [distributed.printed_by_lower_rank(errors, rank) for rank in range(3)] == silent


def test_each_worker_draws_its_own_dropout_masks(torch: None) -> None:
    program = two_layer_net("float64")
    first = program.rng.bit_generator.state
    distributed.Team(_OtherWorker(None), distributed.Place(0, 2)).spread_dropout(program)
    assert program.rng.bit_generator.state == first
    distributed.Team(_OtherWorker(None), distributed.Place(1, 2)).spread_dropout(program)
    assert program.rng.bit_generator.state != first


# --- the command line: flags ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("0", "graphc: error[E502]: --workers must be at least 1, got 0"),
        ("two", "graphc: error[E502]: --workers takes a whole number, got `two`"),
        ("1.5", "graphc: error[E502]: --workers takes a whole number, got `1.5`"),
    ],
)
def test_workers_takes_a_whole_number(capsys: pytest.CaptureFixture[str], flag: str, message: str) -> None:
    status, out, err = graphc_cli(capsys, "train", NET, "--workers", flag)
    assert (status, out, err) == (2, "", message + "\nhint: e.g. `--workers 2`\n")


def test_workers_are_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = graphc_cli(capsys, "train", NET, "--workers", "100000")
    assert (status, out, err) == (
        2,
        "",
        "graphc: error[E502]: --workers must be at most 64, got 100000\n"
        "hint: one process per core of this machine; for more, launch on several machines with torchrun\n",
    )


def test_a_batch_that_does_not_split_is_refused_before_any_worker_starts(
    capsys: pytest.CaptureFixture[str], torch: None
) -> None:
    status, out, err = graphc_cli(capsys, "train", NET, "--workers", "2", "--batch", "101")
    assert (status, out) == (2, "")
    assert err == (
        "graphc: error[E502]: a minibatch of 101 rows does not split evenly over 2 workers\n"
        "hint: every worker must train on as many rows as the others; take a multiple of 2, "
        "e.g. `--batch 100` or `--batch 102`\n"
    )


def test_a_mistake_in_the_graph_is_shown_once_not_by_every_worker(
    capsys: pytest.CaptureFixture[str], torch: None, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.graph"
    bad.write_text("graph g {\n  input x: f64[N, 784]\n  y = relu(x, x)\n  output y\n}\n")
    status, out, err = graphc_cli(capsys, "train", bad, "--workers", "2")
    assert (status, out) == (2, "")
    assert err == (
        f"{bad}:3:7: error[E106]: wrong number of arguments: `relu` takes 1 (x), got 2\n"
        " 3 |   y = relu(x, x)\n"
        "   |       ^^^^^^^^^^\n"
        "hint: write `relu(x)`\n"
    )


def test_missing_torch_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed, "_torch_installed", lambda: False)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails
    monkeypatch.delitem(sys.modules, "torch.distributed", raising=False)
    status, out, err = graphc_cli(capsys, "train", NET, "--workers", "2")
    assert (status, out) == (2, "")
    assert err == (
        "graphc: error[E509]: training on several processes needs PyTorch (torch.distributed), which is not installed\n"
        'hint: install it with `pip install "graphc[distributed]"` (on a machine without a GPU, the CPU wheel is '
        "enough and much smaller: `pip install torch --index-url https://download.pytorch.org/whl/cpu`)\n"
    )


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"RANK": "0"}, "RANK or WORLD_SIZE is set, so this is one worker of a job, but WORLD_SIZE, MASTER_ADDR and "
         "MASTER_PORT are not"),
        ({"RANK": "x", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
         "environment variable RANK must be a whole number, got `x`"),
        ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
         "RANK 2 does not fit WORLD_SIZE 2: ranks run from 0 to WORLD_SIZE - 1"),
    ],
)  # fmt: skip
def test_torchruns_environment_is_checked(environment: dict[str, str], message: str) -> None:
    with pytest.raises(GraphcError) as err:
        distributed.place_from_environment(environment)
    assert err.value.message == message


# --- the command line: jobs on full MNIST -------------------------------------------------------------


def _graphc(*argv: object, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "graphc", "train", str(NET), *map(str, argv), "--no-progress"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=JOB_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"the job hung for {JOB_SECONDS} s") from None
    return process.returncode, out, err


def _torchrun(root: Path, *argv: Sequence[object]) -> list[tuple[int, str, str]]:
    """Workers started as torchrun starts them (environment variables), rank r with
    the flags argv[r], in its own directory root/rankR: each one's status, stdout and stderr."""
    port = str(_free_port())
    processes = []
    for rank, flags in enumerate(argv):
        (root / f"rank{rank}").mkdir(exist_ok=True)
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(len(argv))}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        processes.append(_graphc(*flags, cwd=root / f"rank{rank}", env=env))
    return [_finish(process) for process in processes]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    needs("torch", importlib.util.find_spec("torch") is not None, 'pip install "torch==2.13.0"; CI installs it')
    """Two workers started as torchrun starts them, with relative --save and --log paths: 5 iterations."""
    root = tmp_path_factory.mktemp("torchrun")
    flags = ("--iters", 5, "--save", "w.npz", "--log", "log.csv")
    return {"root": root, "results": dict(enumerate(_torchrun(root, flags, flags)))}


def _corrupt_mnist(where: Path) -> Path:
    """A data directory whose four MNIST files are not gzip files."""
    where.mkdir(parents=True)
    for name in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (where / f"{name}-ubyte.gz").write_bytes(b"junk\n")
    return where


def _not_gzip(path: str) -> str:
    return (
        f"{path}: error[E607]: not a gzip file: the name ends in .gz but the file does not start with the gzip "
        "magic bytes 1f 8b\n"
        "hint: rename the file without .gz if it is a raw IDX file, or download it again\n"
    )


def test_a_mistake_every_worker_finds_is_printed_once(torch: None, tmp_path: Path) -> None:
    bad = _corrupt_mnist(tmp_path / "bad")
    job = _graphc("--workers", 2, "--data-dir", bad, "--iters", 2, cwd=tmp_path, env=dict(os.environ))
    assert _finish(job) == (2, "", _not_gzip(f"{bad}/train-images-idx3-ubyte.gz"))


def test_a_mistake_only_rank_1_finds_is_printed_by_rank_1(torch: None, tmp_path: Path) -> None:
    _corrupt_mnist(tmp_path / "rank1" / "bad")
    rank0, rank1 = _torchrun(tmp_path, ("--iters", 2), ("--iters", 2, "--data-dir", "bad"))
    assert rank0 == (2, "", "")  # ready, it stops without a word: rank 1 says why
    assert rank1 == (2, "", _not_gzip("bad/train-images-idx3-ubyte.gz"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]


def test_workers_under_torchrun_is_refused_once(torch: None, tmp_path: Path) -> None:
    rank0, rank1 = _torchrun(tmp_path, ("--workers", 2), ("--workers", 2))
    assert rank0 == (
        2,
        "",
        "graphc: error[E505]: --workers starts its own processes on this machine, but RANK and WORLD_SIZE say that "
        "torchrun started this one\n"
        "hint: leave --workers out under torchrun: its --nproc-per-node says how many workers a machine runs\n",
    )
    assert rank1 == (2, "", "")


@pytest.mark.slow
def test_under_torchrun_rank_0_alone_prints_and_writes(launched: dict[str, Any]) -> None:
    root, results = launched["root"], launched["results"]
    assert results[1] == (0, "", "")  # rank 1: nothing said
    status, out, err = results[0]
    assert (status, err) == (0, "")
    assert "saved w.npz (iteration 5)\nwrote log.csv\n" in out
    assert sorted(p.name for p in (root / "rank0").iterdir()) == ["log.csv", "w.npz"]
    assert list((root / "rank1").iterdir()) == []  # rank 1: nothing written


@pytest.mark.slow
def test_a_worker_killed_mid_run_stops_the_job_and_leaves_the_checkpoint(
    launched: dict[str, Any], tmp_path: Path
) -> None:
    checkpoint = tmp_path / "w.npz"
    checkpoint.write_bytes((launched["root"] / "rank0" / "w.npz").read_bytes())
    before = checkpoint.read_bytes()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env[distributed.DIE_VARIABLE] = "1:8"  # rank 1 is SIGKILLed at iteration 8; the next save is at 600
    job = _graphc("--workers", 2, "--resume", checkpoint, "--save", checkpoint, "--iters", 600, cwd=tmp_path, env=env)
    status, out, err = _finish(job)
    assert status == 2
    assert err.endswith(
        "graphc: error[E910]: worker 1 of 2 was killed by SIGKILL; the other workers were stopped\n"
        "hint: the last checkpoint --save wrote is intact: resume from it with --resume\n"
    ), err
    assert "graphc: error[E910]: worker 0 of 2: the all-reduce of iteration 8 failed: another worker stopped" in err
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]  # no lock or temporary file left

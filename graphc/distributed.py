"""Data-parallel training over several processes or machines, on torch.distributed.

Every worker holds the whole model and draws the same minibatch sequence a
single process would (same seed, same generator); worker r of N trains on rows
[r*B/N, (r+1)*B/N) of each minibatch of B rows, with graphc's own plan. Each
gradient (a mean over the worker's rows) is copied into one flat numpy buffer
that torch shares without a copy (torch.from_numpy), the buffer is summed over
the workers with ONE all-reduce per step and divided by N: the mean gradient
of the whole minibatch, on every worker. Every worker then takes the same
optimizer step, so the params stay identical without ever being sent.

The loss and a "stop" flag ride in the same buffer: every worker reports the
same mean loss (so a divergence stops all of them at once), and a Ctrl-C seen
by any worker stops all of them after the same iteration.

Before the first iteration the workers meet once (`Team.meet`): each says whether
its preparation (the graph, the flags, the data, the files) succeeded, and if not,
its error. A mistake every worker makes (a bad .graph file, a missing data
directory) is then printed once, by the lowest rank that made it; an error only
rank 1 hits is printed by rank 1; every worker exits with status 2.

Two launches:

    graphc train FILE --workers N             # N processes on this machine (gloo, 127.0.0.1)
    torchrun ... -m graphc train FILE         # any number of machines: RANK, WORLD_SIZE,
                                              # MASTER_ADDR, MASTER_PORT from the environment

torch is imported only here, and only when one of them is used; it is an
optional dependency (`pip install "graphc[distributed]"`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.errors import ExitCode, GraphcError

if TYPE_CHECKING:
    import argparse

    from graphc.program import Program

INSTALL = 'pip install "graphc[distributed]"'
CPU_WHEEL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
# What torchrun sets in every worker's environment (LOCAL_RANK is optional here).
ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# A worker that stops answering makes the others give up after this long: long
# enough for rank 0 to evaluate on the whole sets and write a checkpoint.
TIMEOUT = timedelta(minutes=30)
# After one worker fails, how long the others get to notice and exit on their own.
GRACE_SECONDS = 10.0
# Tests only: "RANK:ITERATION" makes that worker kill itself (SIGKILL) at that
# iteration (1-based, before its all-reduce): a machine lost mid-run.
DIE_VARIABLE = "GRAPHC_TEST_WORKER_DIES"


def import_distributed() -> Any:
    """torch.distributed, or a GraphcError saying how to install torch."""
    try:
        import torch.distributed as dist
    except ImportError:
        raise GraphcError(
            "training on several processes needs PyTorch (torch.distributed), which is not installed",
            hint=f"install it with `{INSTALL}` (on a machine without a GPU, the CPU wheel is enough "
            f"and much smaller: `{CPU_WHEEL}`)",
            code="E509",
        ) from None
    if not dist.is_available():
        raise GraphcError(
            "this PyTorch build has no torch.distributed", hint=f"install another: `{CPU_WHEEL}`", code="E509"
        )
    return dist


# --- where this process stands in the job ----------------------------------------------


@dataclass(frozen=True)
class Place:
    """This worker's rank among `world`; it meets the others at MASTER_ADDR:MASTER_PORT."""

    rank: int
    world: int


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether torchrun (or a person following the docs) set RANK or WORLD_SIZE."""
    return "RANK" in environ or "WORLD_SIZE" in environ


def place_from_environment(environ: Mapping[str, str] = os.environ) -> Place:
    """RANK and WORLD_SIZE as torchrun sets them, checked; MASTER_ADDR and MASTER_PORT must be set too."""
    missing = [name for name in ENVIRONMENT if not environ.get(name)]
    if missing:
        names = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        raise GraphcError(
            f"RANK or WORLD_SIZE is set, so this is one worker of a job, but {names} "
            f"{'is' if len(missing) == 1 else 'are'} not",
            hint="launch with torchrun (docs/interop.md shows how), or unset RANK and WORLD_SIZE",
            code="E511",
        )
    numbers = {}
    for name in ("RANK", "WORLD_SIZE", "MASTER_PORT"):
        text = environ[name]
        if not text.isdigit():
            raise GraphcError(f"environment variable {name} must be a whole number, got `{text}`", code="E511")
        numbers[name] = int(text)
    rank, world = numbers["RANK"], numbers["WORLD_SIZE"]
    if world < 1 or rank >= world:
        raise GraphcError(
            f"RANK {rank} does not fit WORLD_SIZE {world}: ranks run from 0 to WORLD_SIZE - 1", code="E511"
        )
    return Place(rank, world)


def check_split(batch: int, world: int) -> int:
    """The rows each worker trains on: the batch split evenly, else a GraphcError."""
    if batch % world:
        lower, upper = batch - batch % world, batch - batch % world + world
        example = f"`--batch {upper}`" if not lower else f"`--batch {lower}` or `--batch {upper}`"
        raise GraphcError(
            f"a minibatch of {batch} row{'s' * (batch != 1)} does not split evenly over {world} workers",
            hint=f"every worker must train on as many rows as the others; take a multiple of {world}, e.g. {example}",
            code="E502",
        )
    return batch // world


# --- the team a Trainer joins -------------------------------------------------------------


class WorkerLost(GraphcError):
    """The all-reduce failed: another worker died or cannot be reached."""


class Stopped(Exception):
    """This worker stops before training with `status`, saying nothing: the
    worker that failed to prepare says why."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def printed_by_lower_rank(errors: list[str | None], rank: int) -> bool:
    """Whether a worker below `rank` reports the very error this one has (`errors`:
    every worker's rendered error, None where its preparation succeeded)."""
    return errors[rank] is not None and errors[rank] in errors[:rank]


class Team:
    """This worker's part in the job: which rows of every minibatch it trains on,
    and the one all-reduce per step that averages gradients, loss and the stop
    flag over all workers. Made after init_process_group (see `join`)."""

    def __init__(self, dist: Any, place: Place):
        import torch

        self.dist, self.rank, self.world = dist, place.rank, place.world
        self._from_numpy = torch.from_numpy
        self._flat: np.ndarray | None = None  # [every gradient..., loss, stop]
        self._tensor: Any = None  # the same memory, as torch sees it
        self._views: dict[str, np.ndarray] = {}
        self.stopping = False  # what the workers agreed at the last all-reduce
        self.met = False  # whether the meeting before the first iteration took place
        self._dies_at = _test_death(place.rank)

    def rows(self, batch: int) -> slice:
        """This worker's rows of a minibatch of `batch` (a contiguous slice: one view, no copy)."""
        share = check_split(batch, self.world)
        return slice(self.rank * share, (self.rank + 1) * share)

    def spread_dropout(self, program: Program) -> None:
        """Give each worker its own dropout masks: rank r's generator jumps r times
        (2^127 draws each) ahead of rank 0's, which a checkpoint stores."""
        bits = program.rng.bit_generator
        assert isinstance(bits, np.random.PCG64)  # default_rng's
        if self.rank:
            bits.state = bits.jumped(self.rank).state

    def meet(self, error: GraphcError | None) -> list[str | None]:
        """The meeting before the first iteration: this worker's preparation error
        (None: it is ready to train) given to every worker, and every worker's
        received, as rendered text, by rank."""
        self.met = True
        errors: list[str | None] = [None] * self.world
        try:
            self.dist.all_gather_object(errors, error.render() if error is not None else None)
        except RuntimeError as err:  # another worker died before training
            raise WorkerLost(
                f"worker {self.rank} of {self.world}: the workers could not meet before training: "
                f"another worker stopped or cannot be reached ({_first_line(err)})",
                hint="the job stops before its first iteration",
                code="E910",
            ) from None
        return errors

    def ready(self) -> None:
        """This worker's preparation succeeded; it trains if every other one's did,
        else it stops (Stopped, status 2) and leaves the saying why to them."""
        if any(self.meet(None)):
            raise Stopped(ExitCode.USER_ERROR)

    def _layout(self, grads: Mapping[str, np.ndarray]) -> None:
        """One flat buffer that every gradient is packed into, in the same order on every worker."""
        dtype = np.result_type(*(g.dtype for g in grads.values())) if grads else np.float64
        sizes = [g.size for g in grads.values()]
        self._flat = np.zeros(sum(sizes) + 2, dtype)
        self._tensor = self._from_numpy(self._flat)  # shares the numpy buffer: no copy either way
        start = 0
        for (name, grad), size in zip(grads.items(), sizes):
            self._views[name] = self._flat[start : start + size].reshape(grad.shape)
            start += size

    def average(
        self, iteration: int, loss: Any, grads: Mapping[str, np.ndarray], stop: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(mean loss, mean gradients) over all workers for the 0-based `iteration`;
        `stop` is this worker's wish to stop, `self.stopping` whether any worker has one."""
        if self._dies_at == iteration + 1:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._flat is None:
            self._layout(grads)
        flat = self._flat
        assert flat is not None
        for name, grad in grads.items():
            np.copyto(self._views[name], grad)
        flat[-2] = float(loss)
        flat[-1] = 1.0 if stop else 0.0
        try:
            self.dist.all_reduce(self._tensor, op=self.dist.ReduceOp.SUM)
        except RuntimeError as err:  # gloo's "Connection closed by peer", a timeout, ...
            raise WorkerLost(
                f"worker {self.rank} of {self.world}: the all-reduce of iteration {iteration + 1} failed: "
                f"another worker stopped or cannot be reached ({_first_line(err)})",
                hint="the job stops; the last checkpoint --save wrote is intact: resume from it",
                code="E910",
            ) from None
        np.divide(flat, self.world, out=flat)
        self.stopping = bool(flat[-1] > 0)
        averaged = {
            name: view if view.dtype == grads[name].dtype else view.astype(grads[name].dtype)
            for name, view in self._views.items()
        }
        return np.asarray(flat[-2]), averaged


def _first_line(err: Exception) -> str:
    """What torch says went wrong, without its pages of C++ context."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _test_death(rank: int) -> int | None:
    text = os.environ.get(DIE_VARIABLE, "")
    who, _, when = text.partition(":")
    return int(when) if who.isdigit() and int(who) == rank and when.isdigit() else None


def join(place: Place) -> Team:
    """Meet the other workers (gloo: CPU tensors; the same code would take NCCL on GPUs)."""
    dist = import_distributed()
    try:
        dist.init_process_group("gloo", init_method="env://", rank=place.rank, world_size=place.world, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as err:  # torch's DistNetworkError, DistStoreError, ... are RuntimeErrors
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise GraphcError(
            f"worker {place.rank} of {place.world} could not join the job at {where}: {_first_line(err)}",
            hint="MASTER_ADDR:MASTER_PORT must reach rank 0's machine, on a port no other program uses",
            code="E910",
        ) from None
    return Team(dist, place)


def leave(team: Team) -> None:
    if team.dist.is_initialized():
        team.dist.destroy_process_group()


# --- the command line ------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """`graphc train` with --workers N, or as one worker of a torchrun job."""
    if launched_by_torchrun():
        return work(place_from_environment(), args)
    return launch(args, args.workers)


def work(place: Place, args: argparse.Namespace) -> int:
    """One worker's run: the ordinary `graphc train`, with a team; rank 0 alone prints
    and writes files. A mistake found before the first iteration is shown once
    (see `Team.meet`), however many workers find it."""
    team = join(place)
    try:
        return _as_worker(team, args)
    except GraphcError as err:
        if not team.met and printed_by_lower_rank(_meet_failed(team, err), team.rank):
            return ExitCode.USER_ERROR
        raise
    except Stopped as stop:
        return stop.status
    finally:
        leave(team)


def _meet_failed(team: Team, error: GraphcError) -> list[str | None]:
    """Every worker's error, this one's among them; only this one if the others cannot be met."""
    try:
        return team.meet(error)
    except WorkerLost:
        return [error.render() if rank == team.rank else None for rank in range(team.world)]


def _as_worker(team: Team, args: argparse.Namespace) -> int:
    """`graphc train` as this worker: rank 0 as usual, the others silent and writing nothing."""
    from graphc.commands import train as train_command

    if args.workers is not None:  # the launcher's workers are given none
        raise GraphcError(
            "--workers starts its own processes on this machine, but RANK and WORLD_SIZE say that "
            "torchrun started this one",
            hint="leave --workers out under torchrun: its --nproc-per-node says how many workers a machine runs",
            code="E505",
        )
    if team.rank == 0:
        return train_command.train(args, team)
    quiet = open(os.devnull, "w")  # noqa: SIM115 -- kept open for the whole run
    sys.stdout = quiet
    silent = {"save": None, "log": None, "plot": None, "json": False, "no_progress": True}
    worker_args = type(args)(**{**vars(args), **silent})
    return train_command.train(worker_args, team)


def _worker_main(args: argparse.Namespace) -> None:
    """A process --workers started: `graphc train` as one worker (its place in the
    environment, as under torchrun), with the command line's error handling."""
    try:
        status = work(place_from_environment(), args)
    except GraphcError as err:
        print(err.render(), file=sys.stderr)
        status = ExitCode.USER_ERROR
    except KeyboardInterrupt:  # before training began (after, Ctrl-C stops it cleanly)
        if os.environ.get("RANK") == "0":
            print("graphc: interrupted", file=sys.stderr)
        status = ExitCode.INTERRUPTED
    sys.stdout.flush()
    sys.exit(int(status))


def _blas_threads(workers: int) -> dict[str, str]:
    """Each worker's BLAS threads: the cores shared out, unless the environment already says."""
    variables = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    if any(v in os.environ for v in variables):
        return {}
    share = str(max(1, (os.cpu_count() or 1) // workers))
    return {v: share for v in variables}


def _torch_installed() -> bool:
    """Whether torch can be imported, without importing it (seconds): the workers do."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for rank 0's store (as torchrun --standalone finds one)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch(args: argparse.Namespace, workers: int) -> int:
    """Start `workers` processes on this machine (spawned, not forked), with the
    environment torchrun would give them; wait for all, and stop them all as soon
    as one fails. The job's exit status."""
    from graphc.commands.train import check_iters

    check_iters(args)
    if not _torch_installed():
        import_distributed()  # the error, with the install command
    _before_spawning(args, workers)
    worker_args = type(args)(**{**vars(args), "workers": None})  # each is one worker
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    saved = dict(os.environ)
    port, threads = str(_free_port()), _blas_threads(workers)
    processes = []
    try:
        for rank in range(workers):
            os.environ.update(threads)
            os.environ.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(workers),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            )
            process = context.Process(target=_worker_main, args=(worker_args,), name=f"graphc-worker-{rank}")
            process.daemon = True  # never outlive the launcher
            process.start()  # a new interpreter, with this environment
            processes.append(process)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # Ctrl-C reaches every worker (one process group): they agree to stop and rank 0 saves.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        failures = _supervise(processes, wait)
    finally:
        signal.signal(signal.SIGINT, previous)
    return _status(failures, workers)


def _before_spawning(args: argparse.Namespace, workers: int) -> None:
    """What can be refused once, here, rather than by every worker: a mistake in
    the graph, a checkpoint that is not one, a batch that does not split."""
    from graphc.checkpoint import read_meta
    from graphc.commands.common import load_graphs, select_graph
    from graphc.commands.train import DEFAULT_BATCH

    select_graph(load_graphs(args), args)
    meta = read_meta(args.resume) if args.resume else None
    check_split(args.batch or (meta.batch if meta is not None else None) or DEFAULT_BATCH, workers)


def _supervise(processes: list[Any], wait: Any) -> list[tuple[int, int]]:
    """Wait for every worker; after the first failure, give the rest GRACE_SECONDS to
    exit on their own (they see the broken all-reduce), then kill them. The failures
    as (rank, exit code), in the order seen."""
    running = {p.sentinel: rank for rank, p in enumerate(processes)}
    failures: list[tuple[int, int]] = []
    deadline = None
    while running:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait(list(running), timeout)
        if not ready:  # the grace period is over: what is still running is stopped
            for rank in running.values():
                processes[rank].kill()
                processes[rank].join()
            break
        for sentinel in ready:
            rank = running.pop(sentinel)
            processes[rank].join()
            code = processes[rank].exitcode
            if code:
                failures.append((rank, code))
                deadline = deadline or time.monotonic() + GRACE_SECONDS
    return failures


def _status(failures: list[tuple[int, int]], workers: int) -> int:
    """The job's exit status. Rank 0 has already reported its own end (a divergence,
    a mistake, Ctrl-C), or exited with status 2 after another worker reported a mistake
    before training; a worker killed, or failing alone, is reported here, by rank."""
    if not failures:
        return ExitCode.OK
    killed = [(rank, code) for rank, code in failures if code < 0]
    own = dict(failures).get(0)
    if killed or own is None:
        rank, code = (killed or failures)[0]
        raise GraphcError(
            f"worker {rank} of {workers} {_how_it_ended(code)}; the other workers were stopped",
            hint="the last checkpoint --save wrote is intact: resume from it with --resume",
            code="E910",
        )
    return own


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"

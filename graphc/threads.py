"""How many threads numpy's BLAS (the matrix products) may use, and how
`--threads auto` chooses that count by measuring.

The default is a fixed count, DEFAULT_THREADS = 1, chosen for robustness:
at the textbook's sizes (784-50-10, batch 100) a second OpenBLAS thread gains
10-15% on a quiet machine, and when another process holds a core the threads
wait on each other and a step gets several times slower (docs/speed.md,
bench/busy.py). A fixed count also keeps graphc's promise that the same seed
and flags give bit-identical weights: a different thread count splits the
products differently and rounds differently in the last bits.

`auto` times real work at each count from 1 to the cores this process may
run on and takes the fastest:

- training: the first steps of the run, a few at each count (ThreadTuner),
  and again a few at each count after every epoch, since conditions change;
- evaluation chooses separately (choose_threads over a forward pass on a
  slice of the images): large products profit more from threads.

A choice made from timings depends on the machine's load, so reruns with
`auto` may differ in the last bits. Every choice is recorded (ThreadChoice):
in the progress line, in `--json` and in the checkpoint's meta.

The limit is applied with threadpoolctl's threadpool_limits on the BLAS
(user_api "blas"), the same whatever BLAS numpy was built with.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

AUTO = "auto"
DEFAULT_THREADS = 1
# A thread setting: a fixed count, or AUTO.
Threads = int | str

# Steps timed at each count when training starts, and at each epoch boundary;
# each count's first step after a change is run untimed (OpenBLAS wakes its threads).
START_STEPS = 8
RECHECK_STEPS = 3
WARM_STEPS = 1
# A count whose steps take this many times those of a count measured in full is
# given up after one timed step: with a busy neighbour, two threads can take 8x.
GIVE_UP = 1.5
# Rows of the images a forward pass is timed on, to choose evaluation's count.
EVAL_PROBE_ROWS = 2000


def clock() -> float:
    """The clock auto times with (tests put a fake one here)."""
    return time.perf_counter()


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def candidate_counts() -> tuple[int, ...]:
    """The thread counts auto tries: 1 up to the cores available."""
    return tuple(range(1, available_cores() + 1))


# More threads than this is a typing mistake (OpenBLAS itself stops at 64 or so).
MOST_THREADS = 1024


# --- applying a count ------------------------------------------------------------------


class BlasThreads:
    """Sets the BLAS's thread count, and puts the original one back on close().

    A context manager; set() may be called again inside it (auto's re-choices).
    """

    def __init__(self) -> None:
        from threadpoolctl import ThreadpoolController

        self._controller = ThreadpoolController()
        self._limiter: Any = None
        self.count: int | None = None

    def set(self, count: int) -> None:
        if count == self.count:
            return
        if self._limiter is not None:
            self._limiter.restore_original_limits()
        self._limiter = self._controller.limit(limits=count, user_api="blas")
        self.count = count

    def close(self) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None
        self.count = None

    def __enter__(self) -> BlasThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def blas_thread_counts() -> list[int]:
    """The thread count of each BLAS numpy has loaded, as threadpoolctl reads it now."""
    from threadpoolctl import threadpool_info

    return [int(pool["num_threads"]) for pool in threadpool_info() if pool.get("user_api") == "blas"]


# --- choosing a count --------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadChoice:
    """One choice of auto: at which iteration, for what (`train` or `eval`), which
    count, and the seconds per step (or per pass) it measured at each count."""

    iteration: int
    stage: str  # "train" or "eval"
    threads: int
    seconds: tuple[tuple[int, float], ...]  # (count, seconds), in the order tried

    def as_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "stage": self.stage,
            "threads": self.threads,
            "seconds": {str(count): round(s, 9) for count, s in self.seconds},
        }


def fastest(seconds: dict[int, float]) -> int:
    """The count that measured fastest; on a tie, the fewer threads."""
    return min(seconds, key=lambda count: (seconds[count], count))


def choose_threads(
    measure: Callable[[], Any],
    counts: tuple[int, ...],
    blas: BlasThreads,
) -> tuple[int, dict[int, float]]:
    """Time `measure()` at each count (once untimed, then once timed), set the
    fastest count on `blas`, and return it with the seconds measured.

    `measure` must leave no trace (a forward pass in eval mode, a copy's step).
    """
    seconds: dict[int, float] = {}
    for count in counts:
        blas.set(count)
        measure()
        began = clock()
        measure()
        seconds[count] = clock() - began
    chosen = fastest(seconds)
    blas.set(chosen)
    return chosen, seconds


class ThreadTuner:
    """auto in the training loop: the run's own steps, timed a few at each count.

    The loop calls start(iteration) first, tick() before each step while
    `trying` is true, finish() before each epoch's evaluation and
    recheck(iteration) after it. A trial runs WARM_STEPS
    untimed and `steps` timed steps at each count (the count in use first; one
    far slower is given up after one step), then sets the fastest count and
    records a ThreadChoice. The timed steps are real training steps: no
    work is thrown away, and a run of fewer steps than a trial ends it early
    with what it measured.
    """

    def __init__(
        self,
        blas: BlasThreads,
        counts: tuple[int, ...] | None = None,
        on_choice: Callable[[ThreadChoice], None] | None = None,
    ):
        self.blas = blas
        self.counts = counts or candidate_counts()
        self.on_choice = on_choice
        self.trying = False
        self.choices: list[ThreadChoice] = []
        self._plan: list[tuple[int, bool]] = []  # (count, timed) of each step still to run
        self._running: tuple[int, bool] | None = None  # the step running since _since
        self._since = 0.0
        self._seconds: dict[int, list[float]] = {}
        self._began_at = 0

    def start(self, iteration: int, steps: int = START_STEPS) -> None:
        """Begin a trial with the step `iteration`."""
        if len(self.counts) == 1:  # nothing to choose
            self.blas.set(self.counts[0])
            if not self.choices:
                self._record(iteration, {})
            return
        # The count training ran at first (not evaluation's): the others are measured against it.
        current = self.choices[-1].threads if self.choices else self.counts[0]
        order = [current, *(count for count in self.counts if count != current)]
        self._plan = [(count, step >= WARM_STEPS) for count in order for step in range(WARM_STEPS + steps)]
        self._seconds = {count: [] for count in order}
        self._running = None
        self._began_at = iteration
        self.trying = True

    def recheck(self, iteration: int) -> None:
        """At an epoch boundary: a cheaper trial, from the next step on."""
        self.start(iteration, RECHECK_STEPS)

    def tick(self) -> None:
        """Before a step: close the timing of the step before, set the next one's count."""
        self._close()
        if not self._plan:
            self.finish()
            return
        self._running = self._plan.pop(0)
        self.blas.set(self._running[0])
        self._since = clock()

    def _close(self) -> None:
        """The running step has ended: keep its time if it is a timed one, and
        drop the rest of a count already far slower than one measured in full."""
        if self._running is None:
            return
        count, timed = self._running
        self._running = None
        if not timed:
            return
        samples = self._seconds[count]
        samples.append(clock() - self._since)
        measured = [sum(s) / len(s) for c, s in self._seconds.items() if c != count and s and c not in self._pending()]
        if measured and sum(samples) / len(samples) > GIVE_UP * min(measured):
            self._plan = [(c, t) for c, t in self._plan if c != count]

    def _pending(self) -> set[int]:
        return {count for count, _ in self._plan}

    def finish(self) -> None:
        """End the trial (also at an epoch's end, or when training stops, in the
        middle of one): set the count that measured fastest."""
        if not self.trying:
            return
        self._close()
        self.trying = False
        self._plan = []
        means = {count: sum(s) / len(s) for count, s in self._seconds.items() if s}
        self._record(self._began_at, means)

    def _record(self, iteration: int, means: dict[int, float]) -> None:
        chosen = fastest(means) if means else self.counts[0]
        self.blas.set(chosen)
        choice = ThreadChoice(iteration, "train", chosen, tuple(means.items()))
        self.choices.append(choice)
        if self.on_choice is not None:
            self.on_choice(choice)


@contextlib.contextmanager
def fixed_threads(setting: Threads) -> Iterator[BlasThreads]:
    """The BLAS limited to `setting` for the block (for AUTO, left as it is:
    the caller chooses with choose_threads or a ThreadTuner); restored after."""
    with BlasThreads() as blas:
        if setting != AUTO:
            assert isinstance(setting, int)
            blas.set(setting)
        yield blas

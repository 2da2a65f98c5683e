"""Write a benchmark's figures into docs/speed.md, between its markers.

The speed page's figures are written by the benchmarks, never by hand: each
benchmark run with --write-docs replaces the region between

    <!-- bench NAME: written by `python bench/NAME.py --write-docs`; do not edit -->
    <!-- end bench NAME -->

with its report, the machine it ran on, the date, and whether the machine
was quiet or busy (its load average before and after the run). The docs
checker (docs/examples.py) leaves these regions alone: timings differ from
run to run and machine to machine.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

SPEED = Path(__file__).resolve().parent.parent / "docs" / "speed.md"

# 1-minute load averages: below QUIET_BEFORE nothing else ran when the benchmark
# started; after it, the benchmark's own threads (up to one per core) are in the
# figure, so more than that means others were running too.
QUIET_BEFORE = 0.5


def begin_marker(name: str) -> str:
    return f"<!-- bench {name}: written by `python bench/{name}.py --write-docs`; do not edit -->"


def end_marker(name: str) -> str:
    return f"<!-- end bench {name} -->"


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def command_line(script: str, argv: list[str]) -> str:
    """How the benchmark was run, with the BLAS thread variables that were set."""
    threads = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if name in os.environ]
    return " ".join([*threads, f"python bench/{script}", *argv])


def load_average() -> float:
    """The 1-minute load average (0 where the system does not say)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else platform.machine()


def machine() -> str:
    """The CPU, cores, OS, Python, numpy and BLAS, in one line."""
    import numpy as np

    from graphc.profile import blas_info

    cores = os.cpu_count() or 1
    return (
        f"{cpu_name()}, {cores} core{'s' * (cores != 1)}, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, numpy {np.__version__}; BLAS: {blas_info()}"
    )


@dataclass(frozen=True)
class Conditions:
    """When and where a benchmark ran, and how busy the machine was."""

    date: str
    machine: str
    load_before: float
    load_after: float
    cores: int

    @property
    def quiet(self) -> bool:
        return self.load_before < QUIET_BEFORE and self.load_after < self.cores + QUIET_BEFORE

    def describe(self) -> str:
        busy = "**busy** (other work ran alongside: slower figures than it can do)"
        state = "quiet" if self.quiet else busy
        return (
            f"Measured on {self.date} on {self.machine}.\n"
            f"The machine was {state}: 1-minute load average {self.load_before:.2f} before the run "
            f"and {self.load_after:.2f} after it, on {self.cores} cores (quiet means below {QUIET_BEFORE:g} "
            f"before, and below {self.cores + QUIET_BEFORE:g} after, the benchmark's own threads included)."
        )


class Watch:
    """Conditions of a run: create before it, call .done() after it."""

    def __init__(self) -> None:
        self.load_before = load_average()

    def done(self) -> Conditions:
        return Conditions(
            date=datetime.date.today().isoformat(),
            machine=machine(),
            load_before=self.load_before,
            load_after=load_average(),
            cores=os.cpu_count() or 1,
        )


def region(name: str, command: str, report: str, conditions: Conditions) -> str:
    """The text between a benchmark's markers, markers included."""
    return "\n".join(
        [
            begin_marker(name),
            conditions.describe(),
            "",
            "```text",
            f"$ {command}",
            report.rstrip("\n"),
            "```",
            end_marker(name),
        ]
    )


def publish(name: str, argv: list[str] | None, report: str, conditions: Conditions) -> None:
    """--write-docs: bench/NAME.py's report into its region of the speed page, with the
    command line that made it (`argv`, or the process's own when None)."""
    write_docs(name, command_line(f"{name}.py", argv if argv is not None else sys.argv[1:]), report, conditions)


def write_docs(name: str, command: str, report: str, conditions: Conditions, path: Path | None = None) -> None:
    """Replace the benchmark's region of the speed page (which must have its markers)."""
    path = path or SPEED
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin_marker(name)) + r".*?" + re.escape(end_marker(name)), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no region for {name}: add the lines\n{begin_marker(name)}\n{end_marker(name)}")
    fresh = pattern.sub(lambda _: region(name, command, report, conditions), text)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(fresh, encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")

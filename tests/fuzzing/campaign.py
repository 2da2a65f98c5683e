"""The long mode: many inputs per target, over worker processes, failures grouped by cause.

Unlike a Hypothesis test, a campaign does not stop at the first failure: it runs every input it
was asked to, records each finding under its signature (kind and cause), keeps the smallest input
of each, and at the end shrinks that input while the same signature still shows (for .graph text:
whole lines first, then ever smaller runs of bytes).

Inputs are drawn by Hypothesis in chunks of CHUNK examples, each chunk with its own seed, so
memory stays flat however long the run and the chunks spread over processes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from .harness import Problem, run_graphc
from .targets import TARGETS, Context, Finding, check_graph_bytes, make_context

CHUNK = 500
MEMORY_LIMIT = 8 * 2**30  # per worker: an allocation graphc fails to refuse ends as MemoryError, not a dead machine


@dataclass
class Found:
    finding: Finding  # the smallest input seen
    count: int = 1


@dataclass
class Result:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    found: dict[str, Found] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        known = self.found.get(finding.signature)
        if known is None:
            self.found[finding.signature] = Found(finding)
            return
        known.count += 1
        if len(finding.input) < len(known.finding.input):
            known.finding = finding

    def merge(self, other: Result) -> None:
        self.inputs += other.inputs
        for signature, found in other.found.items():
            known = self.found.get(signature)
            if known is None:
                self.found[signature] = found
            else:
                known.count += found.count
                if len(found.finding.input) < len(known.finding.input):
                    known.finding = found.finding


def run_chunk(context: Context, target_name: str, count: int, seed: int) -> Result:
    """`count` inputs of one target, drawn from `seed`."""
    target = TARGETS[target_name]
    result = Result(target_name)
    start = time.perf_counter()

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(seed)
    @given(target.strategy(context))
    def body(example):
        result.inputs += 1
        for finding in target.check(context, example):
            result.add(finding)

    try:
        body()
    except Exception as err:  # noqa: BLE001 - a bug of the fuzzer's own: say so, keep the other chunks
        problem = Problem("fuzzer error", f"{type(err).__name__} in chunk {seed} of {target_name}", repr(err)[:2000])
        result.add(Finding(problem, ("(fuzzer)",), b"", "none"))
    result.seconds = time.perf_counter() - start
    return result


def _limit_memory() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > MEMORY_LIMIT:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, hard))


def run_campaign(
    context: Context, total: int, jobs: int, progress: Callable[[str], None] = print, first_seed: int = 0
) -> dict[str, Result]:
    """`total` inputs over every target (each its share), on `jobs` processes."""
    tasks: list[tuple[str, int, int]] = []
    for name, target in TARGETS.items():
        want = max(1, round(total * target.share))
        for i, start in enumerate(range(0, want, CHUNK)):
            tasks.append((name, min(CHUNK, want - start), first_seed + 1000 * len(tasks) + i))
    results = {name: Result(name) for name in TARGETS}
    started = time.perf_counter()
    done = 0
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("fork"), initializer=_limit_memory
    )
    with pool:
        futures = {pool.submit(run_chunk, context, *task): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            chunk = future.result()
            results[chunk.target].merge(chunk)
            results[chunk.target].seconds += chunk.seconds
            done += chunk.inputs
            classes = sum(len(r.found) for r in results.values())
            elapsed = time.perf_counter() - started
            progress(f"fuzz: {done:,} inputs, {classes} failure classes, {elapsed:,.0f} s")
    return results


# --- shrinking ----------------------------------------------------------------------------


def still_fails(finding: Finding) -> Callable[[bytes], bool] | None:
    """A test for shrinking a .graph input: does `data` still give the same signature?
    None if the command reads other files of its run (fed .npy files, gone with it)."""
    command = ["FILE" if a == "TMP/FILE.graph" else a for a in finding.command]
    if any("TMP" in a for a in command):
        return None

    def test(data: bytes) -> bool:
        found = check_graph_bytes(data, [command])
        return any(f.signature == finding.signature for f in found)

    return test


def shrink(data: bytes, test: Callable[[bytes], bool], budget: int = 400, seconds: float = 10.0) -> bytes:
    """The smallest input found by deleting lines, then runs of bytes, while `test` holds
    (at most `budget` tries and about `seconds`)."""
    tries = 0
    deadline = time.perf_counter() + seconds

    def attempt(candidate: bytes) -> bool:
        nonlocal tries
        tries += 1
        if time.perf_counter() > deadline:
            tries = budget
        return tries <= budget and test(candidate)

    lines = data.split(b"\n")
    size = max(1, len(lines) // 2)
    while size >= 1 and tries < budget:
        i = 0
        while i < len(lines) and tries < budget:
            candidate = lines[:i] + lines[i + size :]
            if candidate and attempt(b"\n".join(candidate)):
                lines = candidate
            else:
                i += size
        size //= 2
    data = b"\n".join(lines)
    size = max(1, len(data) // 4)
    while size >= 1 and tries < budget:
        i = 0
        while i < len(data) and tries < budget:
            smaller = data[:i] + data[i + size :]
            if smaller and attempt(smaller):
                data = smaller
            else:
                i += size
        size //= 2
    return data


def shrink_finding(finding: Finding, budget: int = 400) -> Finding:
    """The finding with its .graph input shrunk as far as `budget` runs allow (others as they are)."""
    if not finding.input_name.endswith(".graph") or finding.command[0] == "(python)":
        return finding
    test = still_fails(finding)
    if test is None:
        return finding
    smaller = shrink(finding.input, test, budget)
    if smaller == finding.input:
        return finding
    # The problem as the smaller input shows it (its message, its traceback).
    command = ["FILE" if a == "TMP/FILE.graph" else a for a in finding.command]
    again = [f for f in check_graph_bytes(smaller, [command]) if f.signature == finding.signature]
    problem = again[0].problem if again else finding.problem
    return Finding(problem, finding.command, smaller, finding.input_name, finding.note)


def shrink_findings(results: dict[str, Result], budget: int = 400) -> None:
    """Shrink the kept input of every .graph finding in place."""
    for result in results.values():
        for found in result.found.values():
            found.finding = shrink_finding(found.finding, budget)


def _classes(results: dict[str, Result]) -> list[tuple[str, str, Found]]:
    found = [(name, sig, found) for name, r in results.items() for sig, found in r.found.items()]
    return sorted(found, key=lambda c: (c[1], c[0]))


def report(results: dict[str, Result], seconds: float, inputs_dir: str | None = None) -> str:
    """A markdown summary: counts per target, then each failure class with its reproducer
    (and, with `inputs_dir`, the file each input is saved in)."""
    inputs = sum(r.inputs for r in results.values())
    classes = _classes(results)
    lines = [f"# graphc fuzz: {inputs:,} inputs in {seconds:,.0f} s, {len(classes)} failure classes", ""]
    for name, r in results.items():
        lines.append(f"- {name}: {r.inputs:,} inputs in {r.seconds:,.0f} s, {len(r.found)} failure classes")
    for i, (name, signature, found) in enumerate(classes, 1):
        finding = found.finding
        lines += ["", f"## {i}. {signature}", "", f"target `{name}`, {found.count} inputs; {finding.note[:300]}"]
        if inputs_dir:
            lines.append(f"input saved as {inputs_dir}/{i:03d}-{finding.input_name}")
        if finding.problem.detail:
            lines += ["", "```", finding.problem.detail[-1500:].strip("\n"), "```"]
        lines += ["", "```", finding.reproducer(), "```"]
    return "\n".join(lines) + "\n"


def save_inputs(results: dict[str, Result], directory: Path) -> None:
    """Each class's input as a file, numbered as the report numbers the classes."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, (_, _, found) in enumerate(_classes(results), 1):
        name = found.finding.input_name.replace("/", "_").replace(" ", "_")
        (directory / f"{i:03d}-{name}").write_bytes(found.finding.input)


def main_campaign(
    total: int, jobs: int, report_path: str | None = None, first_seed: int = 0
) -> tuple[dict[str, Result], str]:
    """Make a context, run the campaign (its chunks seeded from `first_seed` on), shrink, and
    return (results, report)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graphc-fuzz-context-") as work:
        context = make_context(Path(work))
        run_graphc(["check", str(context.args_graph)])  # import every module before forking
        results = run_campaign(context, total, jobs, first_seed=first_seed)
        shrink_findings(results)
    inputs_dir = f"{report_path}.inputs" if report_path else None
    text = report(results, time.perf_counter() - start, inputs_dir)
    if report_path:
        Path(report_path).write_text(text)
        save_inputs(results, Path(f"{report_path}.inputs"))
    return results, text

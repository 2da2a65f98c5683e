"""Start-up time: how long a graphc command takes before it does any work,
against the floor every numpy program pays, `python -c "import numpy"`.

    python bench/startup.py                 # 10 rounds
    python bench/startup.py --runs 20 --json
    python bench/startup.py --write-docs    # and write the figures into docs/speed.md

Each round runs every command once, in turn (interleaved, so that a busy
spell of the machine slows all of them alike), each a fresh process with its
output discarded; the report gives min, median and max wall time and each
command's ratio to `import numpy` (median over median, and min over min).
Goal: `graphc --help` and `graphc check models/apple.graph` within 1.5x.

Before timing, graphc's bytecode is compiled (as pip does when it installs a
package; a source checkout run with PYTHONDONTWRITEBYTECODE=1 would compile
every module in every process) and each command runs once, which also fills
the Lark parser cache as a person's first command does.

Each round also takes apart one `graphc check`: `python -c pass` (the
interpreter itself), then, in one fresh process, the time to import numpy,
networkx and Lark, graphc's own modules, to load Lark's parser tables from
the cache, and to run the command itself, each stage timed after the ones
before it (so networkx's time does not include numpy, which it imports),
with the cycle collector paused as the command pauses it. Python's exit is
not among the stages.
"""

from __future__ import annotations

import argparse
import compileall
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _args import at_least
from _docs import Watch, publish

ROOT = Path(__file__).resolve().parent.parent
MODEL = "models/apple.graph"
GOAL = 1.5  # --help and check, over `import numpy`
FLOOR = "import numpy"
COMMANDS: dict[str, list[str]] = {
    FLOOR: ["-c", "import numpy"],
    "graphc --help": ["-m", "graphc", "--help"],
    f"graphc check {MODEL}": ["-m", "graphc", "check", MODEL],
    f"graphc run {MODEL}": ["-m", "graphc", "run", MODEL],
}
JUDGED = ("graphc --help", f"graphc check {MODEL}")

# One `graphc check`, stage by stage, in a fresh process: each stage's seconds as JSON on stdout.
_STAGES = f"""
import gc, time
gc.disable()  # as the command runs them: its imports and its work with the collector paused
began = time.perf_counter()
seconds = {{}}
def done(stage):
    global began
    now = time.perf_counter()
    seconds[stage] = now - began
    began = now
import numpy
done("import numpy")
import networkx
done("import networkx (numpy loaded)")
import lark
done("import lark")
import graphc.cli, graphc.commands.check, graphc.compiler, graphc.shapes
done("graphc's own modules")
from graphc import parse
parse._parser()
done("Lark's parser tables, from the cache")
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    graphc.cli.main(["check", "{MODEL}"])
done("the command: argv, parse, check, shapes, table")
import json, sys
sys.__stdout__.write(json.dumps(seconds))
"""
INTERPRETER = "python itself (`python -c pass`)"


def wall_seconds(args: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def stage_seconds() -> dict[str, float]:
    """One `graphc check`, taken apart: seconds per stage (see _STAGES), the interpreter's first."""
    interpreter = wall_seconds(["-c", "pass"])
    done = subprocess.run([sys.executable, "-c", _STAGES], cwd=ROOT, capture_output=True, text=True, check=True)
    return {INTERPRETER: interpreter, **json.loads(done.stdout)}


def measure(runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall seconds of each command, and of each stage of a check, `runs` rounds, interleaved."""
    compileall.compile_dir(ROOT / "graphc", quiet=1)
    for args in COMMANDS.values():
        wall_seconds(args)  # warm: the file cache, and Lark's parser cache
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    stages: dict[str, list[float]] = {}
    for _ in range(runs):
        for name, args in COMMANDS.items():
            times[name].append(wall_seconds(args))
        for stage, seconds in stage_seconds().items():
            stages.setdefault(stage, []).append(seconds)
    return times, stages


def summarise(times: dict[str, list[float]], stages: dict[str, list[float]] | None = None) -> dict:
    floor = times[FLOOR]
    stats = {
        name: {"min": min(t), "median": statistics.median(t), "max": max(t), "runs": len(t)}
        for name, t in times.items()
    }
    ratio = {name: s["median"] / stats[FLOOR]["median"] for name, s in stats.items()}
    ratio_min = {name: s["min"] / min(floor) for name, s in stats.items()}
    return {
        "seconds": stats,
        "ratio_median": ratio,
        "ratio_min": ratio_min,
        "goal": GOAL,
        "met": {name: ratio[name] <= GOAL for name in JUDGED},
        "check_stages": {
            stage: {"min": min(t), "median": statistics.median(t), "max": max(t)} for stage, t in (stages or {}).items()
        },
    }


def report_text(summary: dict) -> str:
    width = max(len(name) for name in summary["seconds"])
    lines = [f"{'wall seconds':<{width}}  {'min':>6}  {'median':>6}  {'max':>6}  {'x numpy (median, min)':>22}"]
    for name, s in summary["seconds"].items():
        ratios = f"{summary['ratio_median'][name]:.2f}x, {summary['ratio_min'][name]:.2f}x"
        lines.append(f"{name:<{width}}  {s['min']:6.3f}  {s['median']:6.3f}  {s['max']:6.3f}  {ratios:>22}")
    runs = next(iter(summary["seconds"].values()))["runs"]
    lines.append(f"({runs} rounds, interleaved)")
    for name, met in summary["met"].items():
        verdict = "met" if met else "NOT met"
        lines.append(f"goal {name} within {GOAL:g}x of `{FLOOR}`: {verdict} ({summary['ratio_median'][name]:.2f}x)")
    return "\n".join(lines) + "\n" + stages_text(summary["check_stages"])


def stages_text(stages: dict[str, dict[str, float]]) -> str:
    """Where a `graphc check` spends its time, stage by stage, in milliseconds."""
    if not stages:
        return ""
    width = max(len(stage) for stage in stages)
    lines = ["", f"graphc check {MODEL}, stage by stage (ms)", f"{'':<{width}}  {'min':>6}  {'median':>6}  {'max':>6}"]
    for stage, s in stages.items():
        lines.append(f"{stage:<{width}}  {1000 * s['min']:6.1f}  {1000 * s['median']:6.1f}  {1000 * s['max']:6.1f}")
    total = sum(s["median"] for s in stages.values())
    lines.append(f"{'sum of the medians':<{width}}  {'':>6}  {1000 * total:6.1f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=at_least(1), default=10, help="rounds of every command (default 10)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--write-docs", action="store_true", help="write the report into docs/speed.md")
    args = parser.parse_args(argv)
    watch = Watch()
    summary = summarise(*measure(args.runs))
    conditions = watch.done()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    text = report_text(summary)
    print(text, end="")
    if args.write_docs:
        publish("startup", argv, text, conditions)
    return 0


if __name__ == "__main__":
    sys.exit(main())

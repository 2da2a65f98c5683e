"""Run the examples of README.md and docs/*.md, and refresh or check them.

Every fenced block that shows a command is checked against a real run. An
HTML comment on the line before a block's opening fence says how:

    <!-- run -->                 ```console: run each `$ COMMAND` line and
                                 compare what it prints (stdout and stderr,
                                 as a terminal shows them) byte for byte.
                                 ```sh: run the block; it must exit 0.
                                 ```python: run it as a script; it must exit 0.
                                 ```pycon: run each `>>>` statement; compare
                                 what it prints, as the interpreter shows it.
    <!-- run; exit 1 -->         the last command exits with status 1 (every
                                 other command of the block with 0).
    <!-- run; numbers within 1e-6 -->
                                 each number may differ from the one shown by
                                 up to 1e-6 (rounding noise, such as a
                                 gradient check's errors); the rest exactly.
    <!-- run; timings masked --> durations and rates (`0.5 s`, `2.1 ms`,
                                 `2108 it/s`, JSON `seconds`) are not compared.
    <!-- run; figures vary -->   no number, nor the BLAS description, is
                                 compared, nor the order of the lines (a
                                 timing table sorted by time).
    <!-- run; needs graphviz --> skipped, with a note, where Graphviz's `dot`
                                 is not installed.
    <!-- run; needs torch -->    skipped, with a note, where PyTorch is not
                                 installed (the distributed extra, which the
                                 test extra leaves out for its size).
    Options combine: `<!-- run; timings masked; numbers within 1e-6 -->`.
    <!-- file: PATH -->          the block is the file PATH, whole.
    <!-- excerpt: COMMAND -->    the block is a run of consecutive lines of
                                 COMMAND's output, from its first line to its
                                 last (refreshed in between).
    <!-- not run: REASON -->     shown, not run (a benchmark that takes
                                 minutes, a transcript that needs a Ctrl-C);
                                 never on a ```console or ```pycon block.

A ```console, ```sh, ```python or ```pycon block without a marker is an
error, and so is an unmarked block of another kind whose lines start with
`$ `.

Each document's blocks run in order in a scratch copy of the repository
(the files git tracks, as a fresh clone has them), so what one block writes
is there for the next; `graphc` is the scratch copy's, MNIST is read from
$GRAPHC_DATA, with one BLAS thread. Output that names the scratch copy,
the checkout or Python's own directory is an error: a block must not depend
on where it runs. Documents run in parallel.

    python docs/examples.py            # refresh the blocks of every document that changed
    python docs/examples.py --check    # exit 1, with a diff, if any block is stale
    python docs/examples.py README.md docs/commands.md   # only these
    python docs/examples.py --rerecord   # write every output afresh, timings included

A block whose output matches what is shown (under its marker's rules) is
left as it is, so a refresh on another machine rewrites nothing.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import difflib
import functools
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUNNABLE = ("console", "sh", "python", "pycon")
MARKER = re.compile(r"^<!-- (?P<kind>run|file|excerpt|not run)(?P<rest>.*?) -->$")
OPTION_NUMBERS = re.compile(r"^numbers within (?P<tolerance>\S+)$")
OPTION_EXIT = re.compile(r"^exit (?P<status>\d+)$")
NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
TIMING = re.compile(
    r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?=\s?(?:s|ms|µs|us|it/s)\b)"
    r'|(?<=seconds": )-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?'
    r'|(?<=iters_per_second": )-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?'
)
BLAS = re.compile(r"(?<=BLAS: ).*$", re.M)
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class ExampleError(Exception):
    """A block that cannot be checked: no marker, a command that failed, ..."""


# --- blocks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    kind: str  # run, file, excerpt, not run
    argument: str = ""  # the path, the command or the reason
    options: tuple[str, ...] = ()

    @staticmethod
    def parse(line: str) -> Marker | None:
        found = MARKER.match(line.strip())
        if found is None:
            return None
        kind, rest = found["kind"], found["rest"]
        if kind == "run":
            options = tuple(o.strip() for o in rest.split(";") if o.strip())
            return Marker("run", options=options)
        return Marker(kind, argument=rest.lstrip(":").strip())

    @property
    def tolerance(self) -> float | None:
        for option in self.options:
            found = OPTION_NUMBERS.match(option)
            if found:
                return float(found["tolerance"])
        return None

    @property
    def status(self) -> int:
        for option in self.options:
            found = OPTION_EXIT.match(option)
            if found:
                return int(found["status"])
        return 0


@dataclass(frozen=True)
class Block:
    """A fenced block: its language, its body, and where the body sits in the document."""

    line: int  # of the opening fence, 1-based
    lang: str
    body: str  # the lines between the fences, each ending in a newline
    start: int  # offsets of the body in the document's text
    end: int
    marker: Marker | None

    def where(self, doc: str) -> str:
        return f"{doc}:{self.line}"


def blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, with the marker on the line before it."""
    found = []
    lines = text.splitlines(keepends=True)
    offset, i = 0, 0
    offsets = []
    for line in lines:
        offsets.append(offset)
        offset += len(line)
    offsets.append(offset)
    while i < len(lines):
        fence = re.match(r"^(```+)(\w*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        close = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == fence[1]), None)
        if close is None:
            raise ExampleError(f"line {i + 1}: a fence that is never closed")
        marker = Marker.parse(lines[i - 1]) if i > 0 else None
        found.append(Block(i + 1, fence[2], "".join(lines[i + 1 : close]), offsets[i + 1], offsets[close], marker))
        i = close + 1
    return found


def lint(block: Block, doc: str) -> None:
    """A block that shows a command must say how it is checked."""
    where = block.where(doc)
    marker = block.marker
    if block.lang in RUNNABLE and marker is None:
        raise ExampleError(f"{where}: a ```{block.lang} block needs a marker such as <!-- run --> before it")
    if marker is None:
        if block.lang not in RUNNABLE and any(line.startswith("$ ") for line in block.body.splitlines()):
            raise ExampleError(f"{where}: a command with its output belongs in a ```console block, with a marker")
        return
    if marker.kind == "not run" and block.lang in ("console", "pycon"):
        raise ExampleError(f"{where}: a ```{block.lang} block shows output: run it")
    if marker.kind == "not run" and not marker.argument:
        raise ExampleError(f"{where}: say why the block is not run: <!-- not run: REASON -->")
    if marker.kind == "run" and block.lang not in RUNNABLE:
        raise ExampleError(f"{where}: <!-- run --> needs a ```console, ```sh, ```python or ```pycon block")
    if marker.kind == "run" and block.lang == "console" and not block.body.startswith("$ "):
        raise ExampleError(f"{where}: a console block starts with `$ COMMAND`")
    known = {"timings masked", "figures vary", "needs graphviz", "needs torch"}
    if marker.options and marker.options[0].startswith(":"):
        raise ExampleError(f"{where}: write `<!-- run -->`: the command goes in the block, after `$ `")
    for option in marker.options:
        if option not in known and not OPTION_NUMBERS.match(option) and not OPTION_EXIT.match(option):
            raise ExampleError(f"{where}: unknown marker option `{option}`")


# --- comparing ----------------------------------------------------------------------


def _squeeze(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def within(shown: str, fresh: str, tolerance: float) -> bool:
    """The same text, every number within `tolerance` of the one shown (columns may shift)."""
    shown, fresh = _squeeze(shown), _squeeze(fresh)
    if NUMBER.sub("#", shown) != NUMBER.sub("#", fresh):
        return False
    pairs = zip(NUMBER.findall(shown), NUMBER.findall(fresh))
    return all(abs(float(a) - float(b)) <= tolerance for a, b in pairs)


def mask_timings(text: str) -> str:
    return _squeeze(TIMING.sub("#", text))


def mask_figures(text: str) -> list[str]:
    return sorted(NUMBER.sub("#", BLAS.sub("...", line)) for line in _squeeze(text).splitlines())


def matches(marker: Marker, shown: str, fresh: str) -> bool:
    """Whether what a run printed matches what the block shows, under the marker's rules."""
    if shown == fresh:
        return True
    if "figures vary" in marker.options:
        return mask_figures(shown) == mask_figures(fresh)
    if "timings masked" in marker.options:
        shown, fresh = mask_timings(shown), mask_timings(fresh)
    if marker.tolerance is not None:
        return within(shown, fresh, marker.tolerance)
    return shown == fresh


# --- running ------------------------------------------------------------------------


def _sources() -> list[Path]:
    """The files a fresh clone has: git's tracked and new files, else all but the usual litter."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return [Path(p) for p in listed.split("\0") if p and (ROOT / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
        return [
            p.relative_to(ROOT)
            for p in ROOT.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts) and p.suffix != ".npz"
        ]


@functools.cache
def _launcher_dir() -> Path:
    """A directory holding a `graphc` that runs `python -m graphc`, made once per process.

    Made before documents run in parallel threads: a script that is still open for writing
    in one thread when another forks cannot be executed until that child execs ("Text file
    busy"), so no launcher is written while commands are being started.
    """
    bin_dir = Path(tempfile.mkdtemp(prefix="graphc-docs-bin-"))
    atexit.register(shutil.rmtree, bin_dir, ignore_errors=True)
    launcher = bin_dir / "graphc"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m graphc "$@"\n', encoding="utf-8")
    launcher.chmod(0o755)
    return bin_dir


@dataclass
class Scratch:
    """A scratch copy of the repository, where one document's blocks run in order."""

    env: Mapping[str, str] = field(default_factory=dict)
    root: Path = field(init=False)
    _dir: tempfile.TemporaryDirectory = field(init=False)

    def __post_init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="graphc-docs-")
        base = Path(self._dir.name)
        self.root = base / "graphc"
        for path in _sources():
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, self.root / path)
        # `graphc` on the PATH is the scratch copy's (PYTHONPATH), installed or not.
        bin_dir = _launcher_dir()
        data = os.environ.get("GRAPHC_DATA") or str(ROOT.parent / "shared" / "data")
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(self.root),
            "PYTHONUNBUFFERED": "1",  # stdout and stderr interleaved as on a terminal
            "GRAPHC_DATA": data,
            "COLUMNS": "80",
            # One BLAS thread each: documents run in parallel, and OpenBLAS's threads
            # spin-wait, so two of them to a busy core make training many times slower.
            # The output is the same with more (tests/test_docs.py runs it with 2).
            **{name: "1" for name in THREAD_VARIABLES},
            **self.env,
        }

    def close(self) -> None:
        self._dir.cleanup()

    def run(self, command: str, where: str) -> tuple[int, str]:
        """Run a shell command in the scratch copy; its status and what it printed."""
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
        output = result.stdout.decode("utf-8", errors="replace")
        self.check_paths(output, where, f"`{command}`")
        return result.returncode, output

    def check_paths(self, output: str, where: str, what: str) -> None:
        """An example must not print where it runs: the scratch copy, the checkout, the Python."""
        for name, path in (("the scratch directory", self.root.parent), ("the checkout", ROOT), ("Python", sys.prefix)):
            if str(path) in output:
                raise ExampleError(f"{where}: {what} prints the path of {name}:\n{output}")


def console_commands(body: str) -> list[str]:
    return [line[2:] for line in body.splitlines() if line.startswith("$ ")]


def run_console(block: Block, scratch: Scratch, where: str) -> str:
    """`$ COMMAND` and what it printed, for each command of the block."""
    assert block.marker is not None
    commands = console_commands(block.body)
    parts = []
    for i, command in enumerate(commands):
        status, output = scratch.run(command, where)
        expected = block.marker.status if i == len(commands) - 1 else 0
        if status != expected:
            raise ExampleError(f"{where}: `{command}` exited with {status}, not {expected}:\n{output}")
        parts.append(f"$ {command}\n{output.rstrip()}\n" if output.strip() else f"$ {command}\n")
    return "".join(parts)


PYCON_RUNNER = r"""
import code, contextlib, io, sys, traceback
source = sys.stdin.read()
statements, current = [], None
for line in source.splitlines():
    if line.startswith(">>> "):
        current = [line[4:]]
        statements.append(current)
    elif line.startswith("... ") or line == "...":
        current.append(line[4:])
namespace = {"__name__": "__main__"}
for lines in statements:
    text = "\n".join(lines)
    print(">>> " + "\n... ".join(lines))
    try:
        exec(compile(text + "\n", "<doc>", "single"), namespace)
    except Exception:
        kind, value, _ = sys.exc_info()
        print("Traceback (most recent call last):\n  ...")
        print("".join(traceback.format_exception_only(kind, value)), end="")
"""


def run_pycon(block: Block, scratch: Scratch, where: str) -> str:
    """The statements of an interpreter session, each with what it prints."""
    result = subprocess.run(
        [sys.executable, "-c", PYCON_RUNNER],
        input=block.body.encode(),
        cwd=scratch.root,
        env=scratch.env,
        capture_output=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise ExampleError(f"{where}: the session failed:\n{result.stderr.decode(errors='replace')}")
    output = result.stdout.decode("utf-8", errors="replace")
    scratch.check_paths(output, where, "the session")
    return output


def run_script(block: Block, scratch: Scratch, where: str) -> None:
    if block.lang == "python":
        command = f"{shlex.quote(sys.executable)} -"
        result = subprocess.run(
            ["bash", "-c", command], input=block.body.encode(), cwd=scratch.root, env=scratch.env, capture_output=True
        )
    else:
        result = subprocess.run(
            ["bash", "-e", "-c", block.body], cwd=scratch.root, env=scratch.env, capture_output=True, timeout=600
        )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise ExampleError(f"{where}: the block exited with {result.returncode}:\n{output}")


def excerpt(block: Block, scratch: Scratch, where: str) -> str:
    """The lines of the command's output from the block's first line to its last."""
    assert block.marker is not None
    status, output = scratch.run(block.marker.argument, where)
    if status != 0:
        raise ExampleError(f"{where}: `{block.marker.argument}` exited with {status}:\n{output}")
    shown = block.body.splitlines()
    lines = output.splitlines()
    if not shown:
        raise ExampleError(f"{where}: an excerpt needs its first and last lines")
    starts = [i for i, line in enumerate(lines) if line == shown[0]]
    for start in starts:
        end = next((j for j in range(start, len(lines)) if lines[j] == shown[-1]), None)
        if end is not None:
            return "\n".join(lines[start : end + 1]) + "\n"
    raise ExampleError(
        f"{where}: `{block.marker.argument}` no longer prints the lines `{shown[0]}` ... `{shown[-1]}`; "
        "choose the excerpt's first and last lines again"
    )


def fresh_body(block: Block, scratch: Scratch, doc: str, rerecord: bool = False) -> str:
    """What the block should hold now: its own body where the run matches it
    (unless `rerecord`: then what the run printed, timings and all)."""
    where = block.where(doc)
    marker = block.marker
    if marker is None or marker.kind == "not run":
        return block.body
    if "needs graphviz" in marker.options and shutil.which("dot") is None:
        print(f"{where}: not run: Graphviz's `dot` is not installed", file=sys.stderr)
        return block.body
    if "needs torch" in marker.options and importlib.util.find_spec("torch") is None:
        print(f"{where}: not run: PyTorch is not installed", file=sys.stderr)
        return block.body
    if marker.kind == "file":
        path = ROOT / marker.argument
        if not path.is_file():
            raise ExampleError(f"{where}: no such file: {marker.argument}")
        return path.read_text(encoding="utf-8")
    if marker.kind == "excerpt":
        return excerpt(block, scratch, where)
    if block.lang == "console":
        fresh = run_console(block, scratch, where)
        return block.body if matches(marker, block.body, fresh) and not rerecord else fresh
    if block.lang == "pycon":
        return run_pycon(block, scratch, where)
    run_script(block, scratch, where)
    return block.body


# --- documents ----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    doc: str
    text: str  # the document as it is
    fresh: str  # as it should be
    stale: tuple[int, ...]  # lines of the blocks that changed
    error: str | None = None

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.text.splitlines(keepends=True), self.fresh.splitlines(keepends=True), self.doc, self.doc + " (run)"
            )
        )


def documents() -> list[str]:
    """README.md and every page of docs/, as paths relative to the repository."""
    return ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def outside_bench_regions(text: str, found: list[Block]) -> Iterator[Block]:
    """The blocks not inside a region a benchmark writes (bench/_docs.py)."""
    regions = [(m.start(), m.end()) for m in re.finditer(r"<!-- bench .*?<!-- end bench \S+ -->", text, re.S)]
    for block in found:
        if not any(start <= block.start < end for start, end in regions):
            yield block


def check_document(
    doc: str, env: Mapping[str, str] | None = None, text: str | None = None, rerecord: bool = False
) -> Result:
    """Run one document's blocks in order in a scratch copy; the document as they make it.
    `text` stands in for the document's own (for tests)."""
    if text is None:
        text = (ROOT / doc).read_text(encoding="utf-8")
    try:
        found = list(outside_bench_regions(text, blocks(text)))
        for block in found:
            lint(block, doc)
    except ExampleError as err:
        return Result(doc, text, text, (), str(err))
    scratch = Scratch(dict(env or {}))
    pieces, position, stale = [], 0, []
    try:
        for block in found:
            body = fresh_body(block, scratch, doc, rerecord)
            if body != block.body:
                stale.append(block.line)
            pieces += [text[position : block.start], body]
            position = block.end
    except (ExampleError, subprocess.TimeoutExpired) as err:
        return Result(doc, text, text, tuple(stale), str(err))
    finally:
        scratch.close()
    pieces.append(text[position:])
    return Result(doc, text, "".join(pieces), tuple(stale))


def _cost(doc: str) -> int:
    """A guess at how long a document takes to run: commands, and trainings above all."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    return text.count("\n$ ") + 10 * text.count("graphc train ")


def check_documents(docs: list[str], env: Mapping[str, str] | None = None, rerecord: bool = False) -> list[Result]:
    """Every document, in parallel (each has its own scratch copy), the longest first."""
    workers = min(len(docs), os.cpu_count() or 1) or 1
    _launcher_dir()  # before any thread starts a command
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {
            d: pool.submit(check_document, d, env, rerecord=rerecord) for d in sorted(docs, key=_cost, reverse=True)
        }
        return [futures[d].result() for d in docs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("docs", nargs="*", help="documents to run (default: README.md and docs/*.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any block is stale")
    parser.add_argument(
        "--rerecord", action="store_true", help="write what every run prints, even where it matches (new timings)"
    )
    args = parser.parse_args(argv)
    if args.check and args.rerecord:
        parser.error("--check changes nothing; --rerecord rewrites: give one")
    results = check_documents(args.docs or documents(), rerecord=args.rerecord)
    status = 0
    for result in results:
        if result.error is not None:
            print(f"{result.error}", file=sys.stderr)
            status = 1
        elif result.fresh != result.text:
            lines = ", ".join(str(n) for n in result.stale)
            if args.check:
                print(f"{result.doc}: stale examples at lines {lines}\n{result.diff()}", file=sys.stderr)
                status = 1
            else:
                (ROOT / result.doc).write_text(result.fresh, encoding="utf-8")
                print(f"refreshed {result.doc} (examples at lines {lines})")
    if args.check and status:
        print("run `python docs/examples.py` to refresh the examples", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

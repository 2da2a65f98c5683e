"""Start-up: what a command imports before it does any work, and Lark's
parser tables cached between processes. No timings here (bench/startup.py
measures them); these tests pin down the causes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BENCH, ROOT

from graphc import parse
from graphc.cli import build_parser, command_names, parser_for
from graphc.errors import GraphcError

# Heavy third-party packages: each loads inside the command (or function) that uses it.
HEAVY = ("networkx", "lark", "tabulate", "tqdm", "matplotlib", "graphviz", "torch", "onnx", "pygls", "threadpoolctl")

# Runs graphc's main in a fresh interpreter, then writes the top-level names of
# every module imported by then to the file named by argv[1].
# (json is imported after the list is taken: graphc itself may not need it.)
_PROBE = """
import sys
from graphc.cli import main
out, argv = sys.argv[1], sys.argv[2:]
try:
    main(argv)
except SystemExit:
    pass
modules = sorted(sys.modules)
import json
with open(out, "w") as handle:
    json.dump(modules, handle)
"""


def imported_by(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> set[str]:
    out = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *argv],
        cwd=ROOT,
        env={**os.environ, "GRAPHC_CACHE_DIR": str(tmp_path / "cache"), **(env or {})},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return set(json.loads(out.read_text()))


def packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_help_imports_no_heavy_package_and_no_numpy(tmp_path):
    modules = imported_by(tmp_path, "--help")
    assert not packages(modules) & {*HEAVY, "numpy", "difflib", "json"}
    # Nor graphc's own pipeline: only the command modules and what costs nothing (errors, limits, the gc
    # pause, and the thread settings --threads' default comes from: the standard library only).
    graphc_modules = {m for m in modules if m.startswith("graphc.") and not m.startswith("graphc.commands")}
    assert graphc_modules == {"graphc.cli", "graphc.errors", "graphc.limits", "graphc._gc", "graphc.threads"}


@pytest.mark.parametrize("command", command_names())
def test_each_commands_help_imports_no_heavy_package(tmp_path, command):
    modules = imported_by(tmp_path, command, "--help")
    assert not packages(modules) & {*HEAVY, "numpy"}


def test_check_imports_the_graph_stage_and_nothing_it_does_not_use(tmp_path):
    imported_by(tmp_path, "check", "models/apple.graph")  # fills the parser cache, as a first run does
    imported = imported_by(tmp_path, "check", "models/apple.graph")
    modules = packages(imported)
    assert {"numpy", "networkx", "lark"} <= modules  # parse, and the graph stage: networkx sorts and finds cycles
    assert not modules & (set(HEAVY) - {"networkx", "lark"})
    # Nor the standard library's modules that only a mistake (difflib's suggestions) or --json needs.
    assert not modules & {"difflib", "json"}
    # Nor graphc's stages after shapes: check stops there.
    assert not imported & {"graphc.plan", "graphc.program", "graphc.run", "graphc.codegen", "graphc.threads"}


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_command_imports_no_other_command(tmp_path, command):
    # Only the named command's module is imported and its arguments added; the rest are for --help.
    modules = imported_by(tmp_path, command, "models/apple.graph")
    commands = {m for m in modules if m.startswith("graphc.commands.")}
    assert commands == {f"graphc.commands.{command}", "graphc.commands.common"}


def test_a_command_after_traceback_is_read_as_without_it(tmp_path):
    modules = imported_by(tmp_path, "--traceback", "check", "models/apple.graph")
    commands = {m for m in modules if m.startswith("graphc.commands.")}
    assert commands == {"graphc.commands.check", "graphc.commands.common"}


def _reading(parser, argv: list[str], capsys) -> tuple:
    """What a parser makes of argv: the arguments, or its complaint, or what it printed on exit."""
    try:
        return ("args", vars(parser.parse_args(argv)))
    except GraphcError as err:
        return ("error", err.render())
    except SystemExit as exit:
        return ("exit", exit.code, capsys.readouterr())


@pytest.mark.parametrize("command", command_names())
@pytest.mark.parametrize(
    "rest",
    [[], ["models/apple.graph"], ["models/apple.graph", "--bogus"], ["--help"], ["-h", "x"], ["x", "--json", "--json"]],
    ids=repr,
)
def test_the_one_command_parser_reads_argv_as_the_whole_one_does(command, rest, capsys):
    for argv in ([command, *rest], ["--traceback", command, *rest]):
        assert _reading(parser_for(argv), argv, capsys) == _reading(build_parser(), argv, capsys)


def test_the_parsers_choices_agree_with_the_modules_that_define_them():
    import graphc.commands.common as common
    import graphc.commands.gradcheck as gradcheck
    import graphc.commands.train as train_command
    import graphc.ir
    import graphc.ops
    import graphc.optim
    import graphc.testing
    import graphc.train

    assert common.DTYPE_CHOICES == graphc.ir.DTYPE_CHOICES
    assert common.MODES == graphc.ops.MODES
    assert train_command.DATASETS == graphc.train.DATASETS
    assert train_command.ENGINES == graphc.train.ENGINES
    assert train_command.OPTIMIZERS == tuple(graphc.optim.OPTIMIZERS)
    assert (gradcheck.DEFAULT_EPS, gradcheck.DEFAULT_RTOL) == (graphc.testing.DEFAULT_EPS, graphc.testing.DEFAULT_RTOL)


def test_the_package_gives_the_program_on_first_use():
    import graphc
    import graphc.program

    assert graphc.Program is graphc.program.Program
    assert graphc.compile_file is graphc.program.compile_file
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        graphc.nothing  # noqa: B018


# --- Lark's parser tables, cached -------------------------------------------------


@pytest.fixture
def builds(monkeypatch, tmp_path):
    """Count the parsers built (not loaded from the cache); the cache in tmp_path/cache."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []
    build = parse.build_parser

    def counting(text: str):
        calls.append(text)
        return build(text)

    monkeypatch.setattr(parse, "build_parser", counting)
    parse._parser.cache_clear()
    yield calls
    parse._parser.cache_clear()


APPLE = (ROOT / "models" / "apple.graph").read_text()


def fresh_parse(text: str = APPLE) -> str:
    """The syntax tree, as text (each parse has its own Source), from the parser a new process would have."""
    parse._parser.cache_clear()
    return repr(parse.parse(text))


def cached_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("parser-*.lark"))


def test_the_first_process_builds_the_parser_and_the_next_loads_it(builds, tmp_path):
    first = fresh_parse()
    assert len(builds) == 1 and len(cached_files(tmp_path)) == 1
    second = fresh_parse()
    assert len(builds) == 1  # loaded, not built
    assert second == first


def syntax_error(text: str) -> str:
    with pytest.raises(parse.GraphcError) as caught:
        fresh_parse(text)
    return caught.value.render()


@pytest.mark.parametrize("text", ["graph g {\n  input x = \n}\n", "graphg {}\n", "graph g {\n  y = mul(x,, x)\n}\n"])
def test_a_loaded_parser_says_what_a_built_one_says(builds, tmp_path, text):
    built = syntax_error(text)
    assert len(builds) == 1
    loaded = syntax_error(text)
    assert len(builds) == 1
    assert loaded == built


def test_a_corrupt_cache_file_is_rebuilt(builds, tmp_path):
    fresh_parse()
    [path] = cached_files(tmp_path)
    path.write_bytes(b"not a pickle")
    assert fresh_parse() == fresh_parse()
    assert len(builds) == 2  # the corrupt file was passed over, and written again whole
    [again] = cached_files(tmp_path)
    assert again.read_bytes() != b"not a pickle"
    fresh_parse()
    assert len(builds) == 2


def test_a_truncated_cache_file_is_rebuilt(builds, tmp_path):
    fresh_parse()
    [path] = cached_files(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    fresh_parse()
    assert len(builds) == 2


def test_a_cache_dir_that_is_a_file_only_costs_the_build(builds, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(blocker))
    assert fresh_parse() == fresh_parse()
    assert len(builds) == 2
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(blocker / "below"))
    fresh_parse()
    assert len(builds) == 3


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc: a directory even root cannot write")
def test_a_read_only_cache_dir_only_costs_the_build(builds, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "/proc")
    assert fresh_parse() == fresh_parse()
    assert len(builds) == 2


def test_the_cache_dir_follows_xdg_and_the_override(monkeypatch, tmp_path):
    from graphc.cache import cache_dir

    monkeypatch.delenv("GRAPHC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "graphc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "graphc"
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize("cache", ["a-file", "/proc"])
def test_check_succeeds_with_an_unusable_cache_dir(tmp_path, cache):
    if cache == "a-file":
        (tmp_path / cache).write_text("")
        cache = str(tmp_path / cache)
    good = subprocess.run(
        [sys.executable, "-m", "graphc", "check", "models/apple.graph"],
        cwd=ROOT,
        env={**os.environ, "GRAPHC_CACHE_DIR": str(tmp_path / "fine")},
        capture_output=True,
        text=True,
    )
    done = subprocess.run(
        [sys.executable, "-m", "graphc", "check", "models/apple.graph"],
        cwd=ROOT,
        env={**os.environ, "GRAPHC_CACHE_DIR": cache},
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, good.stdout, "")


# --- bench/startup.py ---------------------------------------------------------


def test_the_startup_benchmark_reports_every_command(capsys):
    sys.path.insert(0, str(BENCH))
    try:
        import startup
    finally:
        sys.path.remove(str(BENCH))
    assert startup.main(["--runs", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    commands = ["import numpy", "graphc --help", "graphc check models/apple.graph", "graphc run models/apple.graph"]
    assert list(report["seconds"]) == commands
    for figures in report["seconds"].values():
        assert figures["runs"] == 1 and 0 < figures["min"] <= figures["median"] <= figures["max"]
    assert report["ratio_median"]["import numpy"] == 1.0
    assert set(report["met"]) == {"graphc --help", "graphc check models/apple.graph"}
    stages = report["check_stages"]
    assert list(stages) == [
        "python itself (`python -c pass`)",
        "import numpy",
        "import networkx (numpy loaded)",
        "import lark",
        "graphc's own modules",
        "Lark's parser tables, from the cache",
        "the command: argv, parse, check, shapes, table",
    ]
    for figures in stages.values():
        assert 0 < figures["min"] <= figures["median"] <= figures["max"]
    text = startup.report_text(report)
    assert text.count("\n") == len(commands) + 4 + 3 + len(stages) + 1
    assert "sum of the medians" in text


# --- the collector, around paused stages ---------------------------------------


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_paused_stage_leaves_what_it_made_old_unscanned_and_still_collectable():
    import gc
    import weakref

    from graphc._gc import gc_paused

    @gc_paused
    def stage() -> tuple[list, weakref.ref]:
        assert not gc.isenabled()
        return [[i] for i in range(20_000)], weakref.ref(_Cycle())

    assert gc.isenabled()
    gc.collect()
    made, cycle = stage()
    assert gc.isenabled()
    # Nothing waits in the youngest generation for the next allocation to scan it...
    assert gc.get_count()[0] < 100
    assert any(obj is made for obj in gc.get_objects(generation=2))
    # ...and a cycle the stage left behind is garbage the next full collection frees.
    assert cycle() is not None
    gc.collect()
    assert cycle() is None


# Runs the `graphc` program (entry_point, as `python -m graphc` does), and writes how many
# objects the collector had frozen when the process came to exit to the file named by argv[1].
_AT_EXIT = """
import atexit, gc, sys
out, sys.argv = sys.argv[1], ["graphc", *sys.argv[2:]]
atexit.register(lambda: open(out, "w").write(str(gc.get_freeze_count())))
from graphc.cli import entry_point
entry_point()
"""


def test_the_program_leaves_its_objects_out_of_the_exit_collection(tmp_path):
    out = tmp_path / "frozen"
    done = subprocess.run(
        [sys.executable, "-c", _AT_EXIT, str(out), "check", "models/apple.graph"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.endswith("models/apple.graph: ok, 1 graph, 0 warnings\n")
    assert int(out.read_text()) > 50_000  # numpy, networkx, Lark and graphc: everything alive


def test_main_freezes_nothing(capsys):
    import gc

    from graphc.cli import main

    assert main(["check", str(ROOT / "models" / "apple.graph")]) == 0
    assert gc.get_freeze_count() == 0  # a test's, or a library user's, process goes on collecting


# Counts the collections the cycle collector makes while main(argv) runs, in a fresh process.
_COLLECTIONS = """
import contextlib, gc, io, sys
from graphc.cli import main
runs = []
gc.callbacks.append(lambda phase, info: runs.append(info["generation"]) if phase == "start" else None)
with contextlib.redirect_stdout(io.StringIO()):
    status = main(sys.argv[1:])
print(status, len(runs))
"""


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_command_imports_and_works_with_the_collector_paused(command):
    # Its imports (numpy, networkx, Lark: some 100,000 objects) would wake the collector about a hundred times.
    done = subprocess.run(
        [sys.executable, "-c", _COLLECTIONS, command, "models/apple.graph"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    status, collections = map(int, done.stdout.split())
    assert status == 0
    assert collections < 10  # reading the arguments, before the command's own pause

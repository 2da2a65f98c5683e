"""The fuzzer: whatever a person hands graphc, it answers with its own diagnostics.

Every input (generated valid graphs, graphs with a person's mistakes, byte-mutated models,
`--set` values, `.npy` inputs, `.npz` weights, MNIST files) run through the commands must end
with exit status 0, 1 or 2, stderr made of graphc's diagnostics (located in the file when the
file is the only input), no internal error, no other exception, no hang and no Python warning.
A valid generated graph must also be accepted, and its generated Python module must compute
what the interpreter computes, to 1e-12 (issue 9, 2b).

The normal run draws a few hundred inputs, the same ones every time (derandomized). The long
mode draws as many as asked, over several processes, and reports every failure class it finds
with the smallest input it saw (shrunk):

    pytest tests/test_fuzz.py --fuzz 100000 [--fuzz-jobs 2] [--fuzz-report fuzz.md] -s
    GRAPHC_FUZZ=100000 pytest tests/test_fuzz.py -s
    GRAPHC_FUZZ_SEED=1000000 ...    (other inputs than the default run's)

The generators and checks live in tests/fuzzing/.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from fuzzing.campaign import shrink_finding
from fuzzing.harness import FullStream, Problem, SourceFile, problems, run_graphc
from fuzzing.targets import FILE_COMMANDS, MODELS, TARGETS, check_graph_bytes, make_context
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

# Examples per target in the normal run: 477 inputs, about 20 s on one core (7 of them making the
# session's checkpoint and MNIST files). Valid graphs and mistakes cost more each since they have
# images, blocks and modes (and go through more commands), so there are fewer of them than before.
EXAMPLES = {
    "valid": 54,
    "near_valid": 70,
    "mutated": 150,
    "codegen": 72,
    "set": 50,
    "npy": 50,
    "npz": 25,
    "mnist": 6,
}


def normal_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,  # the same inputs on every run and every machine
        database=None,  # no dependence on a local .hypothesis directory
        deadline=None,  # each command runs under the harness's own timeout
        # No shrinking by Hypothesis, which can take minutes at tens of milliseconds an input:
        # a failing .graph input is shrunk by a bounded number of runs instead (shrink_finding).
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=False,
    )


@pytest.fixture(scope="session")
def fuzz_context(tmp_path_factory):
    """The fuzzer's files: a checkpoint from `graphc train`, fake MNIST, a graph for --set."""
    return make_context(tmp_path_factory.mktemp("fuzz"))


def assert_no_findings(findings, shrink: bool = False) -> None:
    """Fail with each distinct problem and its reproducer (shrunk, if asked)."""
    if not findings:
        return
    distinct = list({f.signature: f for f in findings}.values())[:4]
    if shrink:
        distinct = [shrink_finding(f, budget=150) for f in distinct]
    shown = "\n\n".join(f"{f.problem}\n{f.reproducer()}" for f in distinct)
    pytest.fail(f"{len(findings)} problem(s):\n{shown}", pytrace=False)


def _fuzz_test(target: str):
    @normal_settings(EXAMPLES[target])
    @given(data=st.data())
    def test(fuzz_context, data):
        example = data.draw(TARGETS[target].strategy(fuzz_context), label=target)
        assert_no_findings(TARGETS[target].check(fuzz_context, example), shrink=True)

    test.__doc__ = f"The `{target}` target's inputs get exit 0, 1 or 2 and diagnostics, nothing else."
    return test


test_valid_graphs_are_accepted_and_run = _fuzz_test("valid")
test_graphs_with_mistakes_get_diagnostics = _fuzz_test("near_valid")
test_mutated_models_get_diagnostics = _fuzz_test("mutated")
test_generated_code_equals_the_interpreter = _fuzz_test("codegen")
test_set_values_get_diagnostics = _fuzz_test("set")
test_npy_inputs_get_diagnostics = _fuzz_test("npy")
test_npz_weights_get_diagnostics = _fuzz_test("npz")
test_mnist_files_get_diagnostics = _fuzz_test("mnist")


# --- what the generator covers ------------------------------------------------------------------


def test_the_generator_covers_every_op():
    """valid_graphs() draws each op of the registry (a new op without a generator fails here)."""
    from fuzzing.graphs import OPS, _Builder

    from graphc.ops import REGISTRY

    assert sorted(OPS) == sorted(REGISTRY)  # what _Builder.node draws from
    assert all(callable(getattr(_Builder, f"_{op}", None)) for op in OPS)


@normal_settings(5)
@given(data=st.data())
def test_each_generator_draws_its_op_or_block(data):
    """Each op's generator makes a node of that op, each kind of block use a use; and the
    graphs made of them are valid (the targets above run them)."""
    from fuzzing.graphs import BLOCK_KINDS, OPS, STD_BLOCKS, _Builder

    for op in OPS:
        builder = _Builder(data.draw, "f64", 2, "dim")
        getattr(builder, f"_{op}")()
        assert builder.nodes[-1].op == op
    for kind, std in [(k, None) for k in BLOCK_KINDS if k != "std"] + [("std", b) for b in STD_BLOCKS]:
        builder = _Builder(data.draw, "f64", 2, "dim")
        builder._use_block(kind, std)
        assert builder.nodes[-1].op == std or builder.nodes[-1].op.startswith(("blk_scale", f"blk_{kind}"))
        assert builder.std == (kind == "std")


# --- the judge itself ------------------------------------------------------------------------


def test_the_harness_sees_an_internal_error(monkeypatch, tmp_path):
    import graphc.commands.check as check_command

    monkeypatch.setattr(check_command, "text_table", None)  # a bug planted in graphc's own code
    path = tmp_path / "g.graph"
    path.write_text("graph g {\n  input x = 1\n  output x\n}\n")
    [problem] = problems(run_graphc(["check", str(path)]))
    assert (problem.kind, problem.cause) == ("internal error", "TypeError in graphc/commands/check.py:summary_text")


def test_the_harness_stops_a_hang(monkeypatch, tmp_path):
    import time

    import graphc.commands.check as check_command

    monkeypatch.setattr(check_command, "load_graphs", lambda args: time.sleep(10))
    path = tmp_path / "g.graph"
    path.write_text("graph g {}\n")
    outcome = run_graphc(["check", str(path)], timeout=0.2)
    assert outcome.status is None
    assert [p.kind for p in problems(outcome)] == ["hang"]


def test_the_harness_wants_errors_located_in_the_file(tmp_path):
    path = tmp_path / "g.graph"
    path.write_text("graph g {\n  y = rleu(x)\n  output y\n}\n")
    outcome = run_graphc(["check", str(path)])
    assert outcome.status == 2
    assert problems(outcome, SourceFile(str(path), path.read_text())) == []
    assert [p.kind for p in problems(outcome, SourceFile("elsewhere.graph", ""))] == ["unlocated diagnostic"]
    # Line 2 of a file of one line:
    assert [p.kind for p in problems(outcome, SourceFile(str(path), "graph g {"))] == ["diagnostic outside the file"]
    # About the file as a whole, at its path: a file of blocks has no graph to run.
    path.write_text("block b(x) {\n  out = relu(x)\n}\n")
    outcome = run_graphc(["run", str(path)])
    assert outcome.stderr.startswith(f"{path}: error[E113]: no graph to run")
    assert problems(outcome, SourceFile(str(path), path.read_text())) == []


def test_the_harness_takes_a_diagnostic_in_an_imported_block_located_by_its_note(tmp_path):
    path = tmp_path / "g.graph"
    path.write_text('import "std/layers.graph"\ngraph g {\n  input x: [2]\n  x -> linear(1) -> y\n  output x\n}\n')
    outcome = run_graphc(["check", str(path)])
    assert "layers.graph:10:26: warning[W001]: unused node `y`" in outcome.stderr
    assert problems(outcome, SourceFile(str(path), path.read_text())) == []
    # The same diagnostic with no note at its use is not located in the file.
    alone = "\n".join(line for line in outcome.stderr.splitlines() if not line.startswith(str(path)))
    assert "unlocated diagnostic" in [
        p.kind for p in problems(replace(outcome, stderr=alone), SourceFile(str(path), ""))
    ]


def test_the_harness_wants_only_diagnostics_on_stderr(monkeypatch, tmp_path):
    import sys
    import warnings

    import graphc.commands.check as check_command

    def chatty(graph):
        print("debug: here", file=sys.stderr)
        warnings.warn("planted", RuntimeWarning, stacklevel=1)
        return "table"

    monkeypatch.setattr(check_command, "summary_text", chatty)
    path = tmp_path / "g.graph"
    path.write_text("graph g {\n  input x = 1\n  output x\n}\n")
    found = problems(run_graphc(["check", str(path)]))
    assert sorted(p.kind for p in found) == ["python warning", "stray stderr"]


# --- known reproducers -------------------------------------------------------------------------
# Inputs the fuzzer found, each the smallest of its class, with the exit status each of check,
# run and compile must give: diagnostics located in the file, never an internal error.

KNOWN_GRAPHS = {
    "5000-digit dim": ("graph g {\n  input x: [" + "9" * 5000 + "] = zeros\n  output x\n}\n", (2, 2, 2)),
    "5000-digit number": ("graph g {\n  input x = " + "9" * 5000 + "\n  output x\n}\n", (2, 2, 2)),
    "5000-digit dim decl": (
        "graph g {\n  dim N = " + "9" * 5000 + "\n  input x: [N] = zeros\n  output x\n}\n",
        (2, 2, 2),
    ),
    "const of 4e12 numbers": ("graph g {\n  const c: f64[4, 1000000000000] = 2\n  output c\n}\n", (2, 2, 2)),
    "param of 1e12 numbers": ("graph g {\n  param w: [1000000, 1000000] = zeros\n  output w\n}\n", (2, 2, 2)),
    "expect of 33 dims": (
        "graph g {\n  input x = 1\n  output x\n  expect x == " + "[" * 33 + "1" + "]" * 33 + "\n}\n",
        (2, 2, 2),
    ),
    "list nested 20000 deep": (
        "graph g {\n  const c = " + "[" * 20000 + "1" + "]" * 20000 + "\n  output c\n}\n",
        (2, 2, 2),
    ),
    "a million lines": ("graph g {\n" + "  # a comment\n" * 1_000_000 + "  input x = 1\n  output x\n}\n", (2, 2, 2)),
    "100,000-character name": ("graph g {\n  " + "a" * 100_000 + " = relu(x)\n  output y\n}\n", (2, 2, 2)),
    "import of a path with NUL": ('import "\x00"\ngraph g {\n  input x = 1\n  output x\n}\n', (2, 2, 2)),
}


def exit_statuses(wanted: dict[str, int]):
    """An `expect` for check_graph_bytes: each command (by name) must exit as `wanted` says."""

    def expect(command, outcome) -> list[Problem]:
        if outcome.status == wanted[command[0]]:
            return []
        cause = f"{command[0]} exited {outcome.status}, not {wanted[command[0]]}"
        return [Problem("exit status", cause, outcome.stderr[:2000])]

    return expect


@pytest.mark.parametrize("text, statuses", KNOWN_GRAPHS.values(), ids=KNOWN_GRAPHS.keys())
def test_known_reproducers(text, statuses):
    # check, run and compile, as each case says; explain refuses each as run does (fmt only reads the syntax).
    commands = [c for c in FILE_COMMANDS if c[0] in ("check", "run", "compile", "explain")]
    wanted = {command[0]: status for command, status in zip(FILE_COMMANDS, statuses)} | {"explain": statuses[1]}
    assert_no_findings(check_graph_bytes(text.encode(), commands, expect=exit_statuses(wanted)))


def _npy(header: str, body: bytes = bytes(24)) -> bytes:
    """An .npy file with the header given (padded as numpy pads it) and `body` after it."""
    text = header.encode("latin-1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


def _checkpoint(context, **meta_changes) -> bytes:
    """The session's checkpoint with meta fields replaced (a value of str type is raw JSON text)."""
    import json

    from fuzzing.files import Checkpoint, npy_bytes, zip_entries

    checkpoint = Checkpoint.read(context.weights.read_bytes())
    text = json.dumps({**checkpoint.meta, **{k: v for k, v in meta_changes.items() if not isinstance(v, str)}})
    for key, raw in meta_changes.items():
        if isinstance(raw, str):
            text = text.replace(json.dumps(key) + ": " + json.dumps(checkpoint.meta[key]), json.dumps(key) + ": " + raw)
    return zip_entries({**checkpoint.entries, "meta": npy_bytes(np.array(text))})


SCALAR_CLASS_INDEX = "graph g {\n  dim N = 2\n  input y: [N, 2] = zeros\n  input k: i64[N] = [0, 1]\n  loss = softmax_loss(y, k)\n  output loss\n}\n"
TWO_LAYER_NET = "{models}/two_layer_net.graph"

# name: (files to write, as bytes or as a function of the session's context; the command; the exit
# status it must end with, and graphc's diagnostics only).
KNOWN_COMMANDS = {
    "input named self": (
        {"g.graph": b"graph g {\n  input self: [2]\n  output self\n}\n"},
        ["run", "{tmp}/g.graph", "--set", "self=[1, 2]"],
        0,
    ),
    "--set apple=null": ({}, ["run", "{models}/apple.graph", "--set", "apple=null"], 2),
    "--set apple=true": ({}, ["run", "{models}/apple.graph", "--set", "apple=true"], 2),
    "--set apple=string": ({}, ["run", "{models}/apple.graph", "--set", 'apple="3"'], 2),
    "--set of 5000 digits": ({}, ["run", "{models}/apple.graph", "--set", "apple=" + "9" * 5000], 2),
    "a scalar for class indices": (
        {"g.graph": SCALAR_CLASS_INDEX.encode()},
        ["run", "{tmp}/g.graph", "--set", "k=9"],
        2,
    ),
    ".npy of 10^12 rows": (
        {"x.npy": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 784), }")},
        ["run", TWO_LAYER_NET, "--input", "x={tmp}/x.npy"],
        2,
    ),
    ".npy of 10^17 columns": (
        {"x.npy": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 100000000000000000), }")},
        ["run", TWO_LAYER_NET, "--input", "x={tmp}/x.npy"],
        2,
    ),
    ".npy header that does not parse": (
        {"x.npy": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': ((, }")},
        ["run", TWO_LAYER_NET, "--input", "x={tmp}/x.npy"],
        2,
    ),
    ".npy that starts as a zip": ({"x.npy": b"PK\x03\x04"}, ["run", TWO_LAYER_NET, "--input", "x={tmp}/x.npy"], 2),
    "an empty batch": (
        {"x.npy": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 784), }", b"")},
        ["run", TWO_LAYER_NET, "--input", "x={tmp}/x.npy"],
        2,
    ),
    "time --batch 10^9": ({}, ["time", TWO_LAYER_NET, "--batch", "1000000000"], 2),
    "train --batch 10^9": ({}, ["train", TWO_LAYER_NET, "--batch", "1000000000", "--data-dir", "{mnist}"], 2),
    "checkpoint meta with a 4400-digit integer": (
        {"W.npz": lambda c: _checkpoint(c, iteration="9" * 4400)},
        ["run", TWO_LAYER_NET, "--weights", "{tmp}/W.npz"],
        2,
    ),
    "checkpoint meta nested 10000 deep": (
        {"W.npz": lambda c: _checkpoint(c, history="[" * 10000 + "]" * 10000)},
        ["run", TWO_LAYER_NET, "--weights", "{tmp}/W.npz"],
        2,
    ),
    "checkpoint meta.batch 10^12": (
        {"W.npz": lambda c: _checkpoint(c, batch=10**12)},
        ["train", TWO_LAYER_NET, "--resume", "{tmp}/W.npz", "--iters", "6", "--data-dir", "{mnist}"],
        2,
    ),
    "checkpoint meta.rng negative": (
        {"W.npz": lambda c: _checkpoint(c, rng={**c_rng(c), "state": {"state": -1, "inc": -5}})},
        ["train", TWO_LAYER_NET, "--resume", "{tmp}/W.npz", "--iters", "6", "--data-dir", "{mnist}"],
        2,
    ),
    "checkpoint array of 10^12 numbers": (
        {
            "W.npz": lambda c: _replace_entry(
                c, "params/W1", _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }")
            )
        },
        ["run", TWO_LAYER_NET, "--weights", "{tmp}/W.npz"],
        2,
    ),
}


def c_rng(context) -> dict:
    from fuzzing.files import Checkpoint

    return Checkpoint.read(context.weights.read_bytes()).meta["rng"]


def _replace_entry(context, name: str, data: bytes) -> bytes:
    from fuzzing.files import Checkpoint, npy_bytes, zip_entries

    checkpoint = Checkpoint.read(context.weights.read_bytes())
    entries = {**checkpoint.entries, name: data, "meta": npy_bytes(np.array(json.dumps(checkpoint.meta)))}
    return zip_entries(entries)


@pytest.mark.parametrize("files, argv, status", KNOWN_COMMANDS.values(), ids=KNOWN_COMMANDS.keys())
def test_known_command_reproducers(fuzz_context, tmp_path, files, argv, status):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content(fuzz_context) if callable(content) else content)
    places = {"{tmp}": str(tmp_path), "{models}": str(MODELS), "{mnist}": str(fuzz_context.mnist_dir)}
    for key, value in places.items():
        argv = [a.replace(key, value) for a in argv]
    outcome = run_graphc(argv)
    assert problems(outcome) == []
    assert outcome.status == status, outcome.stderr


def test_a_full_stdout_is_a_clean_error(models):
    """`graphc compile ... > /dev/full`: a located "cannot write", not an internal error."""
    outcome = run_graphc(["compile", str(models / "apple.graph"), "--emit", "python"], stdout=FullStream())
    assert problems(outcome) == []
    assert outcome.status == 2


# --- the long mode -------------------------------------------------------------------------------


def _option(request, name: str, variable: str):
    value = request.config.getoption(name)
    return value if value is not None else os.environ.get(variable)


@pytest.mark.fuzz_long
def test_long_mode(request):
    total = int(_option(request, "--fuzz", "GRAPHC_FUZZ") or 0)
    if total <= 0:
        pytest.skip("the fuzzer's long mode: run with --fuzz N or GRAPHC_FUZZ=N (e.g. 100000)")
    jobs = int(_option(request, "--fuzz-jobs", "GRAPHC_FUZZ_JOBS") or os.cpu_count() or 1)
    from fuzzing.campaign import main_campaign

    # Another GRAPHC_FUZZ_SEED draws other inputs (the chunks of a run are seeded from it on).
    first_seed = int(os.environ.get("GRAPHC_FUZZ_SEED", "0"))
    results, text = main_campaign(total, jobs, _option(request, "--fuzz-report", "GRAPHC_FUZZ_REPORT"), first_seed)
    print(text)
    classes = sum(len(r.found) for r in results.values())
    assert classes == 0, text

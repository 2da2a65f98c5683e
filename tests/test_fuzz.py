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

The generators and checks live in tests/fuzzing/.
"""

from __future__ import annotations

import os

import pytest
from fuzzing.campaign import shrink_finding
from fuzzing.harness import Problem, SourceFile, problems, run_graphc
from fuzzing.targets import FILE_COMMANDS, TARGETS, check_graph_bytes, make_context
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

# Examples per target in the normal run: 600 inputs, about 30 s on 2 cores (7 of them making the
# session's checkpoint and MNIST files).
EXAMPLES = {
    "valid": 100,
    "near_valid": 120,
    "mutated": 150,
    "codegen": 100,
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


# --- the judge itself ------------------------------------------------------------------------


def test_the_harness_sees_an_internal_error(monkeypatch, tmp_path):
    import graphc.commands.check as check_command

    monkeypatch.setattr(check_command, "tabulate", None)  # a bug planted in graphc's own code
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
    "100,000-character name": ("graph g {\n  " + "a" * 100_000 + " = relu(x)\n  output y\n}\n", (2, 2, 2)),
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
    wanted = dict(zip([c[0] for c in FILE_COMMANDS], statuses))
    assert_no_findings(check_graph_bytes(text.encode(), FILE_COMMANDS, expect=exit_statuses(wanted)))


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

    results, text = main_campaign(total, jobs, _option(request, "--fuzz-report", "GRAPHC_FUZZ_REPORT"))
    print(text)
    classes = sum(len(r.found) for r in results.values())
    assert classes == 0, text

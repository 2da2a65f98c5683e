"""Resource limits: a .graph file that asks for more than a machine has is
refused with a located error, exit status 2, before anything large is read,
parsed or allocated, by `graphc check` and `graphc run` alike.

Each case is the fuzzer's reproducer (or the issue's). The assertions are on
the status and the whole message, never on time; how long each takes is
measured by hand (see the note of issue 9).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import graphc
from graphc import limits
from graphc.cli import main
from graphc.errors import GraphcError

HINT = "hint: graphc refuses tensors of more than 268,435,456 numbers; raise the limit with GRAPHC_MAX_ELEMENTS=N"
BOTH = pytest.mark.parametrize("command", ["check", "run"])


def text(block: str) -> str:
    return textwrap.dedent(block).strip("\n")


def refused(tmp_path, capsys, command: str, source: str | bytes, *args: str) -> str:
    """stderr of `graphc COMMAND m.graph ARGS`, which must fail with status 2 and no traceback;
    the file's path is written `m.graph`."""
    path = tmp_path / "m.graph"
    if isinstance(source, str):
        path.write_text(source, encoding="utf-8")
    else:
        path.write_bytes(source)
    status = main([command, str(path), *args])
    captured = capsys.readouterr()
    assert status == 2, captured
    assert "Traceback" not in captured.err
    assert captured.out == ""
    return captured.err.rstrip("\n").replace(str(path), "m.graph")


def test_the_defaults():
    assert (limits.MAX_ELEMENTS, limits.MAX_LINES, limits.MAX_DIMS) == (2**28, 100_000, 32)
    assert (limits.MAX_INT_DIGITS, limits.MAX_LINE_CHARS, limits.MAX_FILE_BYTES) == (4000, 200_000, 16 * 2**20)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("1000", 1000), ("1_000_000", 1_000_000), ("", 2**28), ("-5", 2**28), ("many", 2**28), ("0", 2**28)],
)
def test_a_limit_from_the_environment(monkeypatch, setting, value):
    # A setting that is not a positive whole number leaves the default: never a reason not to start.
    monkeypatch.setenv("GRAPHC_MAX_ELEMENTS", setting)
    assert limits._from_env("GRAPHC_MAX_ELEMENTS", 2**28) == value


def test_a_raised_limit_lets_a_larger_tensor_through(monkeypatch):
    src = "graph g {\n    param w: [1000, 1000] = zeros\n    output w\n}\n"
    monkeypatch.setattr(limits, "MAX_ELEMENTS", 999_999)
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(src, "m.graph")
    assert info.value.message == "param `w` [1000, 1000] has 1,000,000 numbers"
    monkeypatch.setattr(limits, "MAX_ELEMENTS", 1_000_000)
    assert graphc.compile_source(src).params["w"].shape == (1000, 1000)


def test_count_text():
    assert limits.count_text(4_000_000_000_000) == "4,000,000,000,000"
    assert limits.count_text(10**40 * 3) == "about 10^40"
    assert limits.count_text(10**9000) == "about 10^9000"  # no str() of an int that long


# --- integers of thousands of digits (Python's int() stops at 4,300) ----------------


BIG = "9" * 5000
CLIPPED = "9" * 59 + "..." + "9" * 58  # a quoted number is clipped to 120 characters
SHOWN = "9" * 200  # enough to fill an excerpt


@BOTH
def test_an_integer_value_of_5000_digits(tmp_path, capsys, command):
    assert refused(tmp_path, capsys, command, f"graph g {{\n    input x = {BIG}\n    output x\n}}\n") == text(f"""
        m.graph:2:15: error[E212]: `{CLIPPED}` is out of range for f64
         2 |     input x = {SHOWN[:106]}...
           |               {"^" * 106}
        hint: f64 holds magnitudes up to 1.7976931348623157e+308
    """)


def test_integers_of_5000_digits_are_out_of_range_for_every_dtype():
    for src in (
        f"input x: i64 = -{BIG}",
        f"input x: [2] = [1, {BIG}]",
        f"input x = 1\n    y = mul(x, {BIG})",
        f"param w: f32 = {BIG}",
    ):
        with pytest.raises(GraphcError) as info:
            graphc.compile_source(f"graph g {{\n    {src}\n    output x\n}}\n")
        assert info.value.message.endswith(
            "` is out of range for " + ("i64" if "i64" in src else "f32" if "f32" in src else "f64")
        )


def test_leading_zeros_do_not_count_as_digits():
    program = graphc.compile_source(
        "graph g {\n    input x: [" + "0" * 5000 + "2] = " + "0" * 5000 + "3\n    output x\n}\n"
    )
    assert program.forward()["x"].tolist() == [3.0, 3.0]


@BOTH
@pytest.mark.parametrize(
    ("line", "column"), [("input x: [{big}]", 15), ("dim N = {big}", 13), ("input x: [2, {big}] = zeros", 18)]
)
def test_a_size_of_5000_digits(tmp_path, capsys, command, line, column):
    line = "    " + line.format(big=BIG)
    shown = line[:120] + "..."
    assert refused(tmp_path, capsys, command, f"graph g {{\n{line}\n    input y: [N]\n    output y\n}}\n") == text(f"""
        m.graph:2:{column}: error[E801]: size `{CLIPPED}` is too large: it has 5,000 digits
         2 | {shown}
           | {" " * (column - 1)}{"^" * (120 - column + 1)}
        {HINT}
    """)


# --- declared shapes: checking allocates nothing -----------------------------------


@BOTH
def test_a_const_of_4_times_10_to_the_12_numbers(tmp_path, capsys, command):
    src = "graph g {\n    const c: f64[4, 1000000000000] = 2\n    output c\n}\n"
    assert refused(tmp_path, capsys, command, src) == text(f"""
        m.graph:2:14: error[E801]: const `c` [4, 1000000000000] has 4,000,000,000,000 numbers
         2 |     const c: f64[4, 1000000000000] = 2
           |              ^^^^^^^^^^^^^^^^^^^^^
        {HINT}
    """)


@BOTH
def test_a_param_of_10_to_the_12_numbers(tmp_path, capsys, command):
    src = "graph g {\n    param W: [1000000, 1000000] = normal(0.01)\n    output W\n}\n"
    assert refused(tmp_path, capsys, command, src) == text(f"""
        m.graph:2:14: error[E801]: param `W` [1000000, 1000000] has 1,000,000,000,000 numbers
         2 |     param W: [1000000, 1000000] = normal(0.01)
           |              ^^^^^^^^^^^^^^^^^^
        {HINT}
    """)


@BOTH
def test_an_input_too_large_even_with_a_batch_of_one(tmp_path, capsys, command):
    src = "graph g {\n    input x: [N, 1000000000]\n    output x\n}\n"
    assert refused(tmp_path, capsys, command, src) == text(f"""
        m.graph:2:14: error[E801]: input `x` [N, 1000000000] has 1,000,000,000 numbers
         2 |     input x: [N, 1000000000]
           |              ^^^^^^^^^^^^^^^
        {HINT}
    """)


@BOTH
def test_a_dim_that_makes_a_made_up_input_too_large(tmp_path, capsys, command):
    src = "graph g {\n    input x: [N, 784] = uniform(0, 1)\n    dim N = 1000000000\n    output x\n}\n"
    assert refused(tmp_path, capsys, command, src) == text(f"""
        m.graph:2:14: error[E801]: input `x` [N, 784] would be made up with 784,000,000,000 numbers (N = 1000000000)
         2 |     input x: [N, 784] = uniform(0, 1)
           |              ^^^^^^^^
        {HINT}
    """)


def test_a_dim_only_a_fed_input_reads_is_no_size_to_refuse():
    src = "graph g {\n    dim N = 1000000000\n    input x: [N, 784]\n    y = relu(x)\n    output y\n}\n"
    program = graphc.compile_source(src)
    assert program.forward(x=np.ones((2, 784)))["y"].shape == (2, 784)


@BOTH
def test_a_shape_of_33_dims(tmp_path, capsys, command):
    shape = "[" + ", ".join(["1"] * 33) + "]"
    src = f"graph g {{\n    param w: {shape} = zeros\n    output w\n}}\n"
    assert refused(tmp_path, capsys, command, src) == text(f"""
        m.graph:2:14: error[E802]: param `w` has 33 dims; a value has at most 32
         2 |     param w: {shape}
           |              {"^" * len(shape)}
    """).replace(shape + "\n", shape + " = zeros\n")


def test_a_const_of_one_number_stays_one_number_until_a_run():
    program = graphc.compile_source(
        "graph g {\n    input x: [1000, 1000] = ones\n    const c: [1000, 1000] = 2\n    y = mul(x, c)\n    output y\n}\n"
    )
    value = program.ir.decls["c"].value
    assert value.shape == (1000, 1000) and value.strides == (0, 0)  # a view of one number, nothing allocated
    assert not value.flags.writeable
    assert program.consts["c"].flags.writeable and program.consts["c"].strides == (8000, 8)
    assert float(program.forward()["y"].sum()) == 2 * 1000 * 1000


# --- running: every value's size, once the dims are known ---------------------------


@BOTH
def test_a_value_computed_too_large_for_the_made_up_inputs(tmp_path, capsys, command):
    src = text("""
        graph g {
            dim N = 100000
            input a: [N, 1] = zeros
            input b: [1, N] = ones
            c = add(a, b)
            output c
        }
    """)
    if command == "check":  # the shapes are fine; only running them at N = 100000 is not
        path = tmp_path / "m.graph"
        path.write_text(src)
        assert main(["check", str(path)]) == 0
        return
    assert refused(tmp_path, capsys, command, src) == text(f"""
        m.graph:5:5: error[E801]: `c` [N, N] would hold 10,000,000,000 numbers with N = 100000
         5 |     c = add(a, b)
           |     ^
        {HINT}
    """)


def test_a_value_computed_too_large_for_the_fed_inputs(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text("graph g {\n    input a: [N, 1]\n    input b: [1, M]\n    a -> add(b) -> c\n    output c\n}\n")
    np.save(tmp_path / "a.npy", np.zeros((30000, 1)))
    np.save(tmp_path / "b.npy", np.zeros((1, 20000)))
    status = main(["run", str(path), "--input", f"a={tmp_path / 'a.npy'}", "--input", f"b={tmp_path / 'b.npy'}"])
    err = capsys.readouterr().err.rstrip("\n").replace(str(path), "m.graph")
    assert status == 2
    assert err == text(f"""
        m.graph:4:20: error[E801]: `c` [N, M] would hold 600,000,000 numbers with N = 30000, M = 20000
         4 |     a -> add(b) -> c
           |                    ^
        {HINT}
    """)


def test_the_sizes_of_a_run_are_checked_once_for_each_set_of_dims():
    program = graphc.compile_source("graph g {\n    input x: [N, 2]\n    y = relu(x)\n    output y\n}\n")
    program.forward(x=np.ones((3, 2)))
    program.forward(x=np.ones((3, 2)))
    program.forward(x=np.ones((5, 2)))
    assert program._sizes_checked == {(("N", 3),), (("N", 5),)}
    with pytest.raises(GraphcError) as info:
        program.check_sizes({"N": 2**27 + 1})
    assert info.value.message == "`x` [N, 2] would hold 268,435,458 numbers with N = 134217729"


# --- the text itself -------------------------------------------------------------------


@BOTH
def test_a_file_of_a_million_lines(tmp_path, capsys, command):
    src = "graph g {\n" + "    # a comment\n" * 1_000_000 + "}\n"
    assert refused(tmp_path, capsys, command, src) == text("""
        m.graph:100001:1: error[E803]: the file is longer than 100,000 lines
         100001 |     # a comment
                | ^
        hint: graphc reads .graph files of at most 100,000 lines; raise the limit with GRAPHC_MAX_LINES=N
    """)


@BOTH
def test_a_line_of_10_megabytes(tmp_path, capsys, command):
    line = "    input x = [" + "1, " * 3_333_333 + "1]"
    error = refused(tmp_path, capsys, command, f"graph g {{\n{line}\n    output x\n}}\n")
    assert error.splitlines() == [
        "m.graph:2:200001: error[E803]: line 2 is 10,000,016 characters long",
        " 2 | ..." + line[199_960:200_080] + "...",  # 120 characters, 40 of them before the caret
        "   | " + " " * 43 + "^",
        "hint: graphc reads lines of at most 200,000 characters; a list may run over several lines, "
        "and large data belongs in a .npy file (--input)",
    ]


@BOTH
def test_a_file_of_more_than_16_mib(tmp_path, capsys, command):
    src = "graph g {\n" + ("    # " + "x" * 1000 + "\n") * (17 * 1024) + "}\n"
    assert refused(tmp_path, capsys, command, src) == text("""
        m.graph: error[E803]: larger than 16 MiB: too large for a .graph file
        hint: large data belongs in a .npy file, given with --input
    """)


@BOTH
def test_lists_nested_100000_deep(tmp_path, capsys, command):
    # Over a thousand lines, each within the line limit; refused at the 33rd `[`.
    src = "graph g {\n    const c = " + "\n".join(["[" * 100] * 1000) + "1" + "]" * 100_000 + "\n    output c\n}\n"
    assert refused(tmp_path, capsys, command, src) == text(f"""
        m.graph:2:47: error[E802]: list nested more than 32 deep: a value has at most 32 dims
         2 |     const c = {"[" * 100}
           | {" " * 46}^
    """)


@BOTH
def test_an_identifier_of_100000_characters(tmp_path, capsys, command):
    src = "graph g {\n    input x = 1\n    y = " + "a" * 100_000 + "(x)\n    output y\n}\n"
    error = refused(tmp_path, capsys, command, src)
    assert error == text(f"""
        m.graph:3:9: error[E103]: unknown op `{"a" * 59}...{"a" * 58}`
         3 |     y = {"a" * 112}...
           |         {"^" * 112}
        hint: ops: mul, add, relu, sigmoid, affine, softmax_loss, sub, div, tanh, exp, log, square, sum, mean, dropout, batchnorm, conv2d, max_pool, flatten, avg_pool
    """)
    assert len(error.split("\nhint: ")[0]) < 450  # the hint lists the ops, as many as there are


@BOTH
def test_text_that_is_not_utf8(tmp_path, capsys, command):
    src = "graph g {\n    input x = 1\n    input café = 2\n    output x\n}\n".encode("latin-1")
    assert refused(tmp_path, capsys, command, src) == text("""
        m.graph:3:14: error[E006]: not UTF-8 text: byte 0xe9 cannot start or continue a character
         3 |     input caf\ufffd = 2
           |              ^
        hint: save the file as UTF-8
    """)


def test_expectations_about_a_value_of_32_dims(tmp_path, capsys):
    # numpy's broadcast_shapes gave up past 32 dims with a RuntimeError; an expectation
    # compares shapes itself: one number holds for every element, a list needs the shape.
    ones = "[" * 32 + "1" + "]" * 32
    path = tmp_path / "m.graph"
    path.write_text(
        f"graph g {{\n    input x = {ones}\n    y = relu(x)\n    output y\n"
        f"    expect y == 1\n    expect y == {ones}\n    expect y == [1, 1]\n}}\n"
    )
    assert main(["run", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-4:] == [
        f"  ok    {path}:5  y == 1",
        f"  ok    {path}:6  y == {ones}",
        f"  FAIL  {path}:7  y == [1, 1]  (got {ones}; shape {[1] * 32}, expected [2])",
        "2 of 3 expectations hold",
    ]


# --- a run's budget: all its values together ----------------------------------------


@pytest.mark.parametrize("command", ["run", "gradcheck", "draw"])
def test_a_param_that_takes_a_run_past_its_budget(tmp_path, capsys, command):
    # Within the limit for one tensor, so `check` takes it; running it would make
    # w, relu(w) and their gradients: half a minute and gigabytes, before.
    src = "graph g {\n    param w: [4096, 4096] = normal(0.01)\n    y = relu(w)\n    output y\n}\n"
    args = ["-o", str(tmp_path / "g.svg"), "--values"] if command == "draw" else []
    assert refused(tmp_path, capsys, command, src, *args) == text("""
        m.graph:2:11: error[E801]: a run of graph `g` would hold 33,554,432 numbers in all, 16,777,216 of them in `w` [4096, 4096]
         2 |     param w: [4096, 4096] = normal(0.01)
           |           ^
        hint: graphc runs a graph on at most 16,777,216 numbers in all its values; raise the limit with GRAPHC_MAX_RUN_ELEMENTS=N
    """)
    path = tmp_path / "m.graph"
    assert main(["check", str(path)]) == 0


def test_fed_inputs_that_take_a_run_past_its_budget(monkeypatch):
    monkeypatch.setattr(limits, "MAX_RUN_ELEMENTS", 1000)
    program = graphc.compile_source(
        "graph g {\n    input x: [N, 10]\n    param w: [10] = zeros\n    x -> mul(w) -> relu -> y\n    output y\n}\n",
        "m.graph",
    )
    program.forward(x=np.ones((33, 10)))  # 330 + 10 + 330 + 330 = 1,000
    with pytest.raises(GraphcError) as info:
        program.forward(x=np.ones((34, 10)))
    assert info.value.render() == text("""
        m.graph:2:11: error[E801]: a run of graph `g` would hold 1,030 numbers in all with N = 34, 340 of them in `x` [N, 10]
         2 |     input x: [N, 10]
           |           ^
        hint: graphc runs a graph on at most 1,000 numbers in all its values; raise the limit with GRAPHC_MAX_RUN_ELEMENTS=N
    """)


def test_generated_code_fills_a_const_of_one_number_as_the_run_does():
    # Not a list of 4 million numbers written out (20 MB of source, seconds).
    from graphc.codegen import python_module

    src = "graph g {\n    input x: [2048, 2048]\n    const c: [2048, 2048] = -3\n    y = mul(x, c)\n    output y\n}\n"
    compiled = graphc.compile_source(src).compiled
    source = python_module(compiled)
    assert "c = np.full((2048, 2048), -3.0, dtype=DTYPE)\n" in source
    assert len(source) < 10_000
    module: dict = {}
    exec(compile(source, "<generated>", "exec"), module)
    x = np.random.default_rng(0).standard_normal((2048, 2048))
    outputs, _ = module["forward"]({}, x=x)
    np.testing.assert_array_equal(outputs["y"], graphc.compile_source(src).forward(x=x)["y"])

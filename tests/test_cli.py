"""The command line, through graphc.cli.main(argv): check, compile, run,
gradcheck, their --json forms and exit statuses; and once through the real
installed `graphc` console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from graphc.cli import main

MODELS = Path(__file__).resolve().parent.parent / "models"
APPLE = str(MODELS / "apple.graph")
SIGMOID = str(MODELS / "sigmoid.graph")
NET = str(MODELS / "two_layer_net.graph")


def run(argv: list[str], capsys, status: int = 0) -> tuple[str, str]:
    assert main(argv) == status
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out, captured.err


def words(out: str) -> list[str]:
    """Each line with its runs of spaces collapsed: the content, not the column widths."""
    return [" ".join(line.split()) for line in out.splitlines()]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


MULTI = """\
# two graphs in one file
graph first {
    input x = 3
    y = mul(x, x)   # 9
    output y
    expect y == 9
}

graph second {
    input x = 3
    y = add(x, x)   # 6
    output y
    expect y == 6
    expect grad(x) == 2
}
"""


# --- check ---------------------------------------------------------------------


def test_check_prints_a_summary(capsys):
    out, err = run(["check", NET], capsys)
    assert err == ""
    assert words(out) == [
        "graph two_layer_net",
        "",
        "value op shape dtype params",
        "------- ----------------- -------- ------- ---------------",
        "x input from images [N, 784] f64",
        "t input from labels [N, 10] f64",
        "affine1 affine [N, 50] f64 39,250 (W1, b1)",
        "relu1 relu [N, 50] f64",
        "y affine [N, 10] f64 510 (W2, b2)",
        "loss softmax_loss [] f64",
        "",
        "params: 4 tensors, 39,760 numbers (310.6 KiB)",
        "outputs: loss",
        "",
        f"{NET}: ok, 1 graph, 0 warnings",
    ]


def test_check_json(capsys):
    out, _ = run(["check", APPLE, "--json"], capsys)
    data = json.loads(out)
    assert data["file"] == APPLE and data["ok"] is True and data["warnings"] == []
    [graph] = data["graphs"]
    assert graph["graph"] == "buy_apple"
    assert graph["outputs"] == ["price"]
    assert graph["param_count"] == 0
    assert [(v["name"], v["kind"], v["shape"]) for v in graph["values"]] == [
        ("apple", "input", []),
        ("apple_num", "input", []),
        ("tax", "input", []),
        ("apple_price", "mul", []),
        ("price", "mul", []),
    ]


def test_check_counts_every_graph_of_a_file(tmp_path, capsys):
    out, _ = run(["check", write(tmp_path, "multi.graph", MULTI)], capsys)
    assert out.splitlines()[-1].endswith("multi.graph: ok, 2 graphs, 0 warnings")
    assert "graph first" in out and "graph second" in out


# --- compile ---------------------------------------------------------------------


def test_compile_selects_a_graph(tmp_path, capsys):
    path = write(tmp_path, "multi.graph", MULTI)
    out, _ = run(["compile", path, "--graph", "second"], capsys)
    assert words(out)[:4] == ["graph second", "", "forward (1 step)", "1 y = add(x, x) f64"]
    out, _ = run(["compile", path], capsys)
    assert words(out)[0] == "graph first"


# --- run ---------------------------------------------------------------------------


def test_run_prints_outputs_gradients_and_expectations(capsys):
    out, err = run(["run", APPLE], capsys)
    assert err == ""
    assert words(out) == [
        "graph buy_apple",
        "",
        "outputs",
        "price 220",
        "",
        "gradients of price",
        "apple 2.2",
        "apple_num 110",
        "tax 200",
        "",
        "expectations",
        f"ok {APPLE}:14 price == 220",
        f"ok {APPLE}:15 grad(apple) == 2.2",
        f"ok {APPLE}:16 grad(apple_num) == 110",
        f"ok {APPLE}:17 grad(tax) == 200",
        "4 of 4 expectations hold",
    ]


def test_failing_expectation_is_status_1_and_names_its_line(capsys):
    out, _ = run(["run", APPLE, "--set", "apple=150"], capsys, status=1)
    lines = words(out)
    assert lines[lines.index("expectations") + 1 :] == [
        f"FAIL {APPLE}:14 price == 220 (got 330; relative 1e-09)",
        f"ok {APPLE}:15 grad(apple) == 2.2",
        f"FAIL {APPLE}:16 grad(apple_num) == 110 (got 165; relative 1e-09)",
        f"FAIL {APPLE}:17 grad(tax) == 200 (got 300; relative 1e-09)",
        "1 of 4 expectations hold",
    ]


def test_run_json(capsys):
    out, _ = run(["run", SIGMOID, "--json"], capsys)
    data = json.loads(out)
    assert data == {
        "graph": "neuron",
        "outputs": {"y": 0.5},
        "grads": {"x": 0.125, "w": 0.5, "b": 0.25},
        "expects": [
            {"line": line, "expect": expect, "ok": True, "actual": actual, "detail": "relative 1e-09"}
            for line, expect, actual in [
                (15, "y == 0.5", 0.5),
                (16, "grad(z) == 0.25", 0.25),
                (17, "grad(b) == 0.25", 0.25),
                (18, "grad(w) == 0.5", 0.5),
                (19, "grad(x) == 0.125", 0.125),
            ]
        ],
    }


def test_run_json_failure_is_status_1(capsys):
    out, _ = run(["run", APPLE, "--json", "--set", "tax=1.2"], capsys, status=1)
    data = json.loads(out)
    assert data["outputs"]["price"] == pytest.approx(240, abs=1e-12)
    assert [(e["line"], e["ok"]) for e in data["expects"]] == [(14, False), (15, False), (16, False), (17, True)]


def test_run_json_writes_nan_and_infinity_as_strings(tmp_path, capsys):
    path = write(tmp_path, "inf.graph", "graph g {\n    input x = [1, 2, 3]\n    y = mul(x, 2)\n    output y\n}\n")
    out, _ = run(["run", path, "--json", "--set", "x=[1e308, NaN, -Infinity]"], capsys)
    data = json.loads(out)
    assert data["outputs"]["y"] == ["inf", "nan", "-inf"]
    assert data["grads"]["x"] == [2.0, 2.0, 2.0]


def test_run_with_set_and_input(tmp_path, capsys):
    np.save(tmp_path / "tax.npy", np.array(1.5))
    out, _ = run(
        ["run", APPLE, "--json", "--set", "apple=10", "--set", "apple_num=3", "--input", f"tax={tmp_path / 'tax.npy'}"],
        capsys,
        status=1,
    )
    data = json.loads(out)
    assert data["outputs"]["price"] == pytest.approx(45, abs=1e-12)
    assert data["grads"] == pytest.approx({"apple": 4.5, "apple_num": 15, "tax": 30}, abs=1e-12)


def test_run_selects_a_graph(tmp_path, capsys):
    path = write(tmp_path, "multi.graph", MULTI)
    out, _ = run(["run", path, "--graph", "second", "--json"], capsys)
    data = json.loads(out)
    assert data["graph"] == "second"
    assert data["outputs"] == {"y": 6.0}
    assert [e["line"] for e in data["expects"]] == [13, 14]


def test_run_accepts_class_indices_for_one_hot_labels(capsys):
    out, _ = run(["run", NET, "--json", "--set", "t=[0, 1, 9]"], capsys)
    by_index = json.loads(out)
    onehot = np.eye(10)[[0, 1, 9]].tolist()
    out, _ = run(["run", NET, "--json", "--set", f"t={json.dumps(onehot)}"], capsys)
    by_onehot = json.loads(out)
    assert by_index["outputs"]["loss"] == pytest.approx(by_onehot["outputs"]["loss"], rel=1e-12)
    assert by_index["grads"]["b2"] == pytest.approx(by_onehot["grads"]["b2"], rel=1e-12)
    assert "t" not in by_index["grads"]


def test_run_sets_an_integer_input(tmp_path, capsys):
    path = write(
        tmp_path,
        "int.graph",
        (
            "graph g {\n    input y: [2, 3]\n    input k: i64[2]\n"
            "    loss = softmax_loss(y, k, reduction=sum)\n    output loss\n}\n"
        ),
    )
    out, _ = run(["run", path, "--json", "--set", "y=[[0, 0, 0], [0, 0, 0]]", "--set", "k=[2, 0]"], capsys)
    data = json.loads(out)
    assert data["outputs"]["loss"] == pytest.approx(2 * np.log(3), rel=1e-12)
    np.testing.assert_allclose(data["grads"]["y"], [[1 / 3, 1 / 3, -2 / 3], [-2 / 3, 1 / 3, 1 / 3]], rtol=1e-12)


def test_run_text_marks_labels_as_getting_no_gradient(capsys):
    out, _ = run(["run", NET], capsys)
    assert "t none (read only as labels)" in words(out)


def test_seed_changes_made_up_values(capsys):
    first = json.loads(run(["run", NET, "--json"], capsys)[0])["outputs"]["loss"]
    again = json.loads(run(["run", NET, "--json", "--seed", "0"], capsys)[0])["outputs"]["loss"]
    other = json.loads(run(["run", NET, "--json", "--seed", "1"], capsys)[0])["outputs"]["loss"]
    assert first == again
    assert first != other


# --- gradcheck --------------------------------------------------------------------------


def test_gradcheck_table(capsys):
    out, _ = run(["gradcheck", SIGMOID], capsys)
    lines = words(out)
    assert lines[0] == "graph neuron: backprop vs central differences (eps 1e-05, float64)"
    assert lines[2] == "tensor shape max abs error max rel error"
    assert [line.split()[0] for line in lines[4:7]] == ["x", "w", "b"]
    assert all(line.endswith(" ok") for line in lines[4:7])
    assert lines[-1] == "ok: 3 tensors within relative error 1e-06"


def test_gradcheck_json(capsys):
    out, _ = run(["gradcheck", SIGMOID, "--json"], capsys)
    data = json.loads(out)
    assert set(data) == {"graph", "rtol", "eps", "ok", "tensors"}
    assert (data["graph"], data["rtol"], data["eps"], data["ok"]) == ("neuron", 1e-6, 1e-5, True)
    assert [(t["name"], t["shape"], t["ok"]) for t in data["tensors"]] == [
        ("x", [], True),
        ("w", [], True),
        ("b", [], True),
    ]
    for tensor in data["tensors"]:
        assert set(tensor) == {"name", "shape", "max_abs_error", "max_rel_error", "ok"}
        assert 0 <= tensor["max_rel_error"] < 1e-6


def test_gradcheck_over_tolerance_is_status_1(capsys):
    out, _ = run(["gradcheck", SIGMOID, "--rtol", "1e-30"], capsys, status=1)
    assert words(out)[-1] == "FAIL: 3 of 3 tensors exceed relative error 1e-30: x, w, b"
    out, _ = run(["gradcheck", SIGMOID, "--rtol", "1e-30", "--json"], capsys, status=1)
    assert json.loads(out)["ok"] is False


def test_gradcheck_with_set(capsys):
    out, _ = run(["gradcheck", APPLE, "--json", "--set", "apple=3", "--eps", "1e-4"], capsys)
    data = json.loads(out)
    assert data["eps"] == 1e-4 and data["ok"]
    assert [t["name"] for t in data["tensors"]] == ["apple", "apple_num", "tax"]


# --- statuses --------------------------------------------------------------------------


def test_usage_errors_are_status_2(capsys):
    _, err = run([], capsys, status=2)
    assert err.startswith("graphc: error[E501]: the following arguments are required: COMMAND")
    _, err = run(["run"], capsys, status=2)
    assert err.startswith("graphc run: error[E501]: the following arguments are required: FILE")
    _, err = run(["compile", APPLE, "--emit", "svg"], capsys, status=2)
    assert err.startswith("graphc compile: error[E501]: argument --emit: invalid choice: 'svg'")


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == "graphc 0.1.0\n"


def test_traceback_flag_lets_the_error_through():
    with pytest.raises(Exception) as info:
        main(["--traceback", "run", APPLE, "--set", "nope=1"])
    assert "no input or param named `nope`" in str(info.value)


# --- the real console script -------------------------------------------------------------


def _console_script() -> str:
    found = Path(sys.executable).parent / "graphc"
    if found.exists():
        return str(found)
    which = shutil.which("graphc")
    if which is None:
        pytest.skip("the graphc console script is not installed")
    return which


def test_installed_console_script(tmp_path):
    script = _console_script()
    ok = subprocess.run([script, "run", APPLE, "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["outputs"]["price"] == pytest.approx(220, abs=1e-12)
    bad = subprocess.run(
        [script, "run", APPLE, "--set", "aple=3"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "Traceback" not in bad.stderr
    assert bad.stderr == (
        "<command line>:1:7: error[E405]: no input or param named `aple` in graph `buy_apple`\n"
        " 1 | --set aple=3\n"
        "   |       ^^^^\n"
        "hint: did you mean `apple`?\n"
    )


def test_gradcheck_of_one_tensor(tmp_path, capsys):
    path = write(tmp_path, "one.graph", "graph g {\n    input x = [1, -2]\n    y = relu(x)\n    output y\n}\n")
    out, _ = run(["gradcheck", path], capsys)
    assert words(out)[-1] == "ok: 1 tensor within relative error 1e-06"


def test_gradcheck_of_an_infinite_loss_reports_it_without_a_warning(tmp_path, capsys):
    # Found by the fuzzer: the sum of [inf, -inf] and inf - inf made numpy warn on stderr.
    path = write(tmp_path, "inf.graph", "graph g {\n    input x = [1, -1]\n    y = div(x, 0)\n    output y\n}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, err = run(["gradcheck", path], capsys, status=1)
    assert err == ""
    assert words(out)[-3:] == ["x [2] nan nan FAIL", "", "FAIL: 1 of 1 tensors exceed relative error 1e-06: x"]


# --- what the review asked for -----------------------------------------------------------


def test_check_json_lists_the_values_the_table_shows(tmp_path, capsys):
    path = write(
        tmp_path,
        "c.graph",
        (
            "graph g {\n    input x: [2]\n    const k = [1, 2]\n    y = mul(x, 0.5)\n    z = mul(y, k)\n    output z\n}\n"
        ),
    )
    out, _ = run(["check", path, "--json"], capsys)
    listed = [(v["name"], v["kind"], v["dtype"]) for v in json.loads(out)["graphs"][0]["values"]]
    assert listed == [("x", "input", "f64"), ("k", "const", "f64"), ("y", "mul", "f64"), ("z", "mul", "f64")]
    out, _ = run(["check", path], capsys)
    assert [line.split()[0] for line in out.splitlines()[4:8]] == ["x", "k", "y", "z"]
    assert out.splitlines()[8] == ""


def test_output_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path, capsys):
    target = tmp_path / "plan.txt"
    target.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "new.txt")
    for path in (link, dangling):
        run(["compile", APPLE, "-o", str(path)], capsys)
        assert path.is_symlink()
    assert target.read_text().startswith("graph buy_apple\n")
    assert (tmp_path / "new.txt").read_text() == target.read_text()


def test_output_to_a_fifo_is_written_directly(tmp_path, capsys):
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    run(["compile", APPLE, "-o", str(fifo)], capsys)
    reader.join(timeout=30)
    assert got and got[0].startswith(b"graph buy_apple\n")
    assert fifo.is_fifo()


def test_python_for_a_literal_default_with_a_symbolic_dim(tmp_path, capsys):
    path = write(tmp_path, "lit.graph", "graph g {\n    input x: [N] = [1, 2]\n    y = mul(x, x)\n    output y\n}\n")
    out, _ = run(["compile", path, "--emit", "python"], capsys)
    namespace: dict = {}
    exec(compile(out, "lit.py", "exec"), namespace)
    np.testing.assert_array_equal(namespace["example_inputs"]()["x"], [1.0, 2.0])


def test_summaries_of_float32_values_near_the_largest_do_not_overflow():
    from graphc.commands.common import fmt_array

    assert fmt_array(np.full(20, 3e38, dtype=np.float32)) == "f32[20]  mean 3e+38  norm 1.342e+39"

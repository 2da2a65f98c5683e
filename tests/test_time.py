"""`graphc time`: per-node timing, sorted by cost, with the interpreter's overhead."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from graphc.cli import main
from graphc.compiler import front_end_file
from graphc.profile import made_up_inputs, profile_graph
from graphc.program import Program

QUICK = ["--iters", "3", "--warmup", "1"]


def run(argv, capsys) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_time_prints_a_table_sorted_by_cost(models, capsys):
    status, out, err = run(["time", str(models / "two_layer_net.graph"), "--batch", "8", *QUICK], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "graph two_layer_net: one training step at N = 8, float64, gradients of W1, b1, W2, b2"
    assert lines[1].startswith("3 iterations after 1 warm-up; numpy BLAS: ")
    header = lines[3].split()
    assert header == ["node", "op", "output", "forward", "ms", "backward", "ms", "total", "ms", "share"]
    assert set(lines[4]) <= {"-", " "}
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[5:9]]
    assert sorted(r[0] for r in rows) == ["affine1", "loss", "relu1", "y"]
    assert {r[0]: r[2] for r in rows}["affine1"] == "f64[8, 50]"
    totals = [float(r[5]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert sum(float(r[6].rstrip("%")) for r in rows) == pytest.approx(100, abs=0.5)
    tail = "\n".join(lines[9:])
    assert re.search(r"^total per iteration +\d+\.\d{3} ms  forward \+ backward, interpreter$", tail, re.M)
    assert re.search(r"^  in op calls +\d+\.\d{3} ms$", tail, re.M)
    assert re.search(r"^  outside op calls +\d+\.\d{3} ms  \d+\.\d% \(interpreter overhead\)$", tail, re.M)
    assert re.search(r"^generated module +\d+\.\d{3} ms", tail, re.M)


def test_time_json(models, capsys):
    argv = ["time", str(models / "two_layer_net.graph"), "--batch", "4", "--dtype", "float32", "--json", *QUICK]
    status, out, err = run(argv, capsys)
    assert status == 0, err
    data = json.loads(out)
    assert data["graph"] == "two_layer_net" and data["dims"] == {"N": 4} and data["dtype"] == "float32"
    assert [n["type"] for n in data["nodes"] if n["node"] == "relu1"] == ["f32[4, 50]"]
    totals = [n["total_ms"] for n in data["nodes"]]
    assert totals == sorted(totals, reverse=True)
    assert data["in_ops_ms"] == pytest.approx(sum(totals))
    assert 0 <= data["overhead_share"] < 1
    assert data["overhead_ms"] == pytest.approx(max(data["total_ms"] - data["in_ops_ms"], 0))
    assert data["codegen_ms"] > 0


def test_a_graph_without_params_times_its_input_gradients(models, capsys):
    status, out, err = run(["time", str(models / "apple.graph"), "--no-codegen", *QUICK], capsys)
    assert status == 0, err
    assert out.splitlines()[0] == "graph buy_apple: one training step, float64, gradients of apple, apple_num, tax"
    assert "generated module" not in out
    assert {line.split()[0] for line in out.splitlines()[5:7]} == {"apple_price", "price"}


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--iters", "0", "--iters must be at least 1, got 0"),
        ("--batch", "0", "--batch must be at least 1, got 0"),
        ("--warmup", "-1", "--warmup must be at least 0, got -1"),
        ("--wrt", "W9", "--wrt: no input or param named `W9`"),
    ],
)
def test_time_checks_its_arguments(models, capsys, flag, value, message):
    status, out, err = run(["time", str(models / "two_layer_net.graph"), flag, value], capsys)
    assert status == 2
    assert message in err


def test_profile_covers_every_step(models):
    [compiled] = front_end_file(models / "fanout.graph")
    profile = profile_graph(compiled, iters=2, warmup=0, codegen=False)
    assert {n.node for n in profile.nodes} == {"square", "xy", "f"}
    assert all(n.forward >= 0 and n.backward >= 0 for n in profile.nodes)
    assert profile.total > 0 and profile.codegen is None
    assert 0 <= profile.overhead_share < 1


def test_made_up_inputs_follow_the_batch(models):
    [compiled] = front_end_file(models / "two_layer_net.graph")
    program = Program(compiled)
    feeds, dims = made_up_inputs(program, program.plan, 6)
    assert dims == {"N": 6}
    assert feeds["x"].shape == (6, 784) and feeds["t"].shape == (6, 10)
    assert (feeds["t"].sum(axis=1) == 1).all()  # one-hot rows, from the `onehot` initializer
    # At the graph's own `dim N = 3`, they are the Program's made-up inputs, number for number.
    feeds, _ = made_up_inputs(program, program.plan, 3)
    for name, value in program.default_feeds().items():
        assert feeds[name].tobytes() == value.tobytes()


FIXED = """
graph g {{
    input x: f64[N, 2] = [[1, 2], [3, 4]]
    input z: f64[N, 2]
    input t: {labels}
    param W: [2, 3] = normal(0.1)
    s = add(x, z)
    y = affine(s, W, b)
    param b: [3] = zeros
    loss = softmax_loss(y, t)
    output loss
}}
"""


def fixed_graph(tmp_path, labels: str = "i64[N]"):
    path = tmp_path / "fixed.graph"
    path.write_text(FIXED.format(labels=labels))
    return path


def test_an_input_with_a_value_sets_the_batch(tmp_path, capsys):
    status, out, err = run(["time", str(fixed_graph(tmp_path)), "--json", *QUICK], capsys)
    assert status == 0, err
    assert json.loads(out)["dims"] == {"N": 2}
    status, out, err = run(["time", str(fixed_graph(tmp_path)), "--batch", "2", "--json", *QUICK], capsys)
    assert status == 0, err


def test_a_batch_that_disagrees_with_an_inputs_value(tmp_path, capsys):
    path = fixed_graph(tmp_path)
    status, out, err = run(["time", str(path), "--batch", "5", *QUICK], capsys)
    assert status == 2
    assert err == (
        f"{path}:3:11: error[E206]: input `x` has a fixed value with N = 2; --batch 5 disagrees\n"
        " 3 |     input x: f64[N, 2] = [[1, 2], [3, 4]]\n"
        "   |           ^\n"
        "hint: time it with `--batch 2`, or without --batch\n"
    )


@pytest.mark.parametrize("labels", ["i64[N]", "f64[N, 3]"])
def test_made_up_labels_are_class_indices_or_one_hot_rows(tmp_path, labels):
    [compiled] = front_end_file(fixed_graph(tmp_path, labels))
    program = Program(compiled)
    feeds, dims = made_up_inputs(program, program.plan)
    assert dims == {"N": 2}
    if labels == "i64[N]":
        assert feeds["t"].dtype == np.int64 and feeds["t"].shape == (2,)
        assert set(feeds["t"].tolist()) <= {0, 1, 2}  # the scores' 3 classes, not N of them
    else:
        assert feeds["t"].shape == (2, 3) and (feeds["t"].sum(axis=1) == 1).all()
    profile = profile_graph(compiled, iters=1, warmup=0, codegen=False)
    assert profile.dims == {"N": 2}


def test_a_negative_seed_is_a_flag_error(models, capsys):
    status, out, err = run(["time", str(models / "apple.graph"), "--seed", "-1"], capsys)
    assert status == 2
    assert err == "graphc: error[E502]: --seed must be at least 0, got -1\nhint: e.g. `--seed 100`\n"


# --- bench/compile_scale.py, at small sizes ----------------------------------------


def _compile_scale():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "compile_scale.py"
    spec = importlib.util.spec_from_file_location("compile_scale", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compile_scale"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shape", ["chain", "dag"])
@pytest.mark.parametrize("nodes", [1, 5, 40])
def test_compile_scale_makes_graphs_of_the_size_asked(shape, nodes):
    from graphc.compiler import front_end

    bench = _compile_scale()
    [graph] = front_end(bench.SHAPES[shape](nodes), f"{shape}.graph")
    assert len(graph.ir.nodes()) == nodes
    assert not [w for w in graph.warnings if "unused node" in w.message]


def test_compile_scale_times_every_stage(capsys):
    bench = _compile_scale()
    timing = bench.measure("dag", 30, repeat=2)
    assert set(timing.seconds) == set(bench.STAGES) and timing.total > 0
    assert bench.main(["--sizes", "10", "20", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "parse" in out and "plan" in out and "dag" in out and "chain" in out
    assert out.splitlines()[-1] == "goals: not judged (they need --sizes 10000, and 50000 for the growth)"


def test_compile_scale_says_whether_its_goals_are_met():
    bench = _compile_scale()

    def timing(shape, nodes, seconds):
        return bench.Timing(shape, nodes, {stage: seconds / len(bench.STAGES) for stage in bench.STAGES})

    timings = [timing("chain", 10_000, 0.5), timing("chain", 50_000, 3.5), timing("dag", 10_000, 1.5)]
    assert bench.goals(timings) == {
        "chain: 10,000 nodes in under 1 s": True,
        "chain: 50,000 nodes within 6x the time of 10,000": False,
        "dag: 10,000 nodes in under 1 s": False,
    }


def _train_mnist():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "train_mnist.py"
    spec = importlib.util.spec_from_file_location("train_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--iters", "0"], "argument --iters: must be at least 1, got 0"),
        (["--repeat", "0"], "argument --repeat: must be at least 1, got 0"),
        (["--whole-iters", "-1"], "argument --whole-iters: must be at least 0, got -1"),
        (["--lr", "0"], "argument --lr: must be a positive number, got 0"),
        (["--lr", "inf"], "argument --lr: must be a positive number, got inf"),
        (["--lr", "fast"], "argument --lr: takes a number, got `fast`"),
    ],
)
def test_train_mnist_bench_checks_its_arguments(capsys, flags, message):
    bench = _train_mnist()
    with pytest.raises(SystemExit) as exit:
        bench.main(flags)
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")


def test_the_benchmarks_read_a_positive_number_as_graphc_gradcheck_does():
    from graphc.commands.common import positive_number

    assert _train_mnist().positive_number is positive_number  # one definition, one wording

"""graphc import: an ONNX model back into a .graph file and a checkpoint.

A round trip, graph -> ONNX -> graph, gives the same plans and, on the same
feeds, the same outputs and gradients to the bit, for every model and every
op's graph; ONNX in the plain forms other exporters write (Gemm, Sigmoid,
Conv, MaxPool) imports and computes what onnxruntime computes; what graphc
cannot import is an error naming the ONNX node.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

pytest.importorskip("onnx", reason='the ONNX extra is not installed: pip install ".[onnx]"')
ort = pytest.importorskip("onnxruntime", reason='the ONNX extra is not installed: pip install ".[onnx]"')

sys.path.insert(0, str(Path(__file__).parent))
import helpers  # noqa: E402
import onnx  # noqa: E402
from fuzzing.graphs import valid_graphs  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_onnx import MODEL_GRAPHS, MODELS, OP_GRAPHS, made_up_feeds, program_of  # noqa: E402

from graphc import limits  # noqa: E402
from graphc.checkpoint import load_weights  # noqa: E402
from graphc.compiler import front_end, front_end_file, select  # noqa: E402
from graphc.emit import plan_text  # noqa: E402
from graphc.export_onnx import onnx_model  # noqa: E402
from graphc.import_onnx import RECOGNIZERS, import_file, import_model  # noqa: E402
from graphc.program import Program, compile_source  # noqa: E402

# What ONNX does not keep, so a round trip computes the same numbers by another plan:
# an inference model's dropout is a scale (a mul) and a square is x * x (a mul of x by x);
# the loss of one sample is its mean and its sum alike (it comes back as the mean).
REWRITTEN_OPS = {"dropout", "square"}
ONE_SAMPLE = "one_sample"


def same_plan_expected(program: Program) -> bool:
    return not REWRITTEN_OPS & {step.op.name for step in program.plan.forward}


def round_trip(program: Program, tmp_path: Path) -> Program:
    """The program exported to ONNX and imported back, with its params and statistics."""
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_model(program).SerializeToString())
    imported = import_model(path)
    assert all("/" in value for value in imported.renamed), imported.renamed  # only the export's helper consts
    back = Program(select([compile_source(imported.text, "back.graph").compiled], None), mode="eval")
    for name, value in imported.params.items():
        back.params[name] = value
    for name, value in imported.state.items():
        back.state[name][...] = value
    return back


def assert_same_numbers(program: Program, back: Program, feeds: dict[str, np.ndarray]) -> None:
    """The same outputs, and the same gradient of every value both compute one of (an input
    that only a loss nobody outputs reads as labels comes back as an input of its own)."""
    with np.errstate(all="ignore"):
        expected = program.forward(**feeds), program.backward()
        actual = back.forward(**feeds), back.backward()
    assert set(actual[0]) == set(back.outputs) and set(actual[0]) <= set(expected[0])
    for want, got in zip(expected, actual):
        for name in set(got) & set(want):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def trained_statistics(program: Program) -> None:
    rng = np.random.default_rng(1)
    for name, state in program.state.items():
        state[...] = rng.uniform(0.5, 2, state.shape) if name.endswith("var") else rng.normal(0, 1, state.shape)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("path", "graph"), MODEL_GRAPHS, ids=[f"{p.stem}-{g}" for p, g in MODEL_GRAPHS])
def test_every_model_comes_back_with_the_same_plans_and_numbers(path, graph, dtype, tmp_path):
    program = Program(select(front_end_file(path), graph), dtype=dtype, mode="eval")
    trained_statistics(program)
    back = round_trip(program, tmp_path)
    if same_plan_expected(program):
        assert plan_text(back.plan) == plan_text(program.plan)
    assert_same_numbers(program, back, made_up_feeds(program, 3, seed=1))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", OP_GRAPHS)
def test_each_ops_graph_comes_back_with_the_same_plans_and_numbers(case, dtype, tmp_path):
    program = program_of(OP_GRAPHS[case], dtype)
    trained_statistics(program)
    back = round_trip(program, tmp_path)
    if same_plan_expected(program) and case != ONE_SAMPLE:
        assert plan_text(back.plan) == plan_text(program.plan)
    assert_same_numbers(program, back, made_up_feeds(program, 4, seed=2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(valid_graphs())
def test_random_graphs_come_back_with_the_same_numbers(generated):
    program = Program(select(front_end(generated.text), generated.name), mode="eval")
    with tempfile.TemporaryDirectory() as tmp:
        back = round_trip(program, Path(tmp))
    given_feeds = {**program.default_feeds(), **generated.feeds}
    assume(set(back.input_names) == set(program.input_names))  # an input only a loss not output reads is gone
    assume(not {"dim", "input", "param", "const", "output", "expect"} & set(program.types))  # renamed
    feeds = {name: program.feed(name, given_feeds[name]) for name in back.input_names}
    assume(all(feeds[n].ndim == back.types[n].ndim for n in back.input_names))  # one-hot read as indices
    assert_same_numbers(program, back, feeds)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_convolution_of_filters_taller_than_wide_comes_back(dtype, tmp_path):
    # Found by the fuzzer's random graphs: the 2 windows of a 2x1 filter's im2col were taken for a
    # pool's square window, so graphc import refused its own export (E908, at the Transpose).
    program = program_of(
        """
        graph g {
            input x: [N, 2, 5, 3]
            param W: [3, 2, 2, 1] = normal(1)
            param b: [3] = normal(1)
            c = conv2d(x, W, b, stride=1, pad=1)
            output c
        }
        """,
        dtype,
    )
    back = round_trip(program, tmp_path)
    assert plan_text(back.plan) == plan_text(program.plan)
    assert_same_numbers(program, back, made_up_feeds(program, 2, seed=3))


# --- ONNX as other exporters write it ----------------------------------------------------


def foreign_model(nodes: list[Any], inputs: list[Any], outputs: list[Any], weights: dict[str, np.ndarray]) -> Any:
    graph = helper.make_graph(
        nodes, "torch_jit", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in weights.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def imported_runs_as_onnxruntime(model: Any, tmp_path: Path, feeds: dict[str, np.ndarray]) -> str:
    """Import `model`, run the graph with its weights, compare with onnxruntime; the imported text."""
    path = tmp_path / "foreign.onnx"
    path.write_bytes(model.SerializeToString())
    program = import_file(path, tmp_path / "foreign.graph")
    if program.param_names:
        load_weights(program, tmp_path / "foreign.npz")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    name = import_model(path).renamed.get
    outputs = program.forward(**{name(k) or k: v for k, v in feeds.items()})
    for info, want in zip(session.get_outputs(), expected):
        np.testing.assert_allclose(outputs[name(info.name) or info.name], want, rtol=1e-5, atol=1e-6)
    return (tmp_path / "foreign.graph").read_text()


def test_a_linear_layer_as_gemm_with_its_weights_transposed_is_an_affine(tmp_path):
    rng = np.random.default_rng(0)
    weights = {
        "fc.weight": rng.normal(size=(3, 4)).astype(np.float32),
        "fc.bias": rng.normal(size=3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["input", "fc.weight", "fc.bias"], ["/fc/Gemm_output_0"], "/fc/Gemm", transB=1),
        helper.make_node("Sigmoid", ["/fc/Gemm_output_0"], ["output"], "/act/Sigmoid"),
    ]
    model = foreign_model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        weights,
    )
    text = imported_runs_as_onnxruntime(model, tmp_path, {"input": rng.normal(size=(5, 4)).astype(np.float32)})
    assert text == textwrap.dedent("""\
        # Imported from foreign.onnx by graphc import (written by pytorch).
        # Its params' values are in foreign.npz: graphc run foreign.graph --weights foreign.npz
        # Renamed, as the ONNX names are not graphc names: `input` is `input_`, `/fc/Gemm_output_0` is `fc_Gemm_output_0`, `output` is `output_`.
        graph torch_jit {
            input input_: f32[batch, 4]
            param fc.weight: f32[4, 3] = zeros    # its values: foreign.npz
            param fc.bias: f32[3] = [-2.3250308, -0.21879166, -1.245911]

            fc_Gemm_output_0 = affine(input_, fc.weight, fc.bias)
            output_ = sigmoid(fc_Gemm_output_0)

            output output_
        }
        """)


def test_a_convolution_and_a_padded_pool_as_other_exporters_write_them(tmp_path):
    rng = np.random.default_rng(1)
    weights = {
        "conv.weight": rng.normal(size=(2, 1, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=2).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], "conv", pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], "relu"),
        helper.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["scores"], "flatten", axis=1),
    ]
    model = foreign_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 18])],
        weights,
    )
    text = imported_runs_as_onnxruntime(model, tmp_path, {"x": rng.normal(size=(2, 1, 6, 6)).astype(np.float32)})
    assert "    c = conv2d(x, conv.weight, conv.bias, pad=1)\n" in text
    assert "    p = max_pool(r)\n" in text  # size 2, stride 2: max_pool's defaults


# --- what graphc cannot import ----------------------------------------------------------


def test_an_onnx_op_graphc_has_no_op_for_is_an_error_naming_the_node(tmp_path, capsys):
    nodes = [helper.make_node("Softmax", ["x"], ["p"], "/head/Softmax", axis=-1)]
    model = foreign_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3])],
        {},
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "m.graph"
    out.write_text("kept\n")
    status, _, err = helpers.graphc_cli(capsys, "import", path, "-o", out)
    assert status == 2
    assert err == (
        f"{path}: error[E908]: graphc import has no op for ONNX node `/head/Softmax` (Softmax)\n"
        f"hint: ONNX ops graphc imports, in the forms graphc's export writes: {', '.join(sorted(RECOGNIZERS))}\n"
    )
    assert out.read_text() == "kept\n"  # a failed import leaves the file as it was
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a model at all", "not a valid ONNX model"),
        (b"", "not a valid ONNX model"),
    ],
)
def test_a_file_that_is_not_an_onnx_model_is_an_error(tmp_path, capsys, content, message):
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    status, _, err = helpers.graphc_cli(capsys, "import", path, "-o", tmp_path / "m.graph")
    assert status == 2
    assert err.startswith(f"{path}: error[E613]: {message}")
    assert err.endswith("hint: graphc imports .onnx files\n")
    assert not (tmp_path / "m.graph").exists()


def test_a_missing_file_is_an_error(tmp_path, capsys):
    status, _, err = helpers.graphc_cli(capsys, "import", tmp_path / "none.onnx", "-o", tmp_path / "m.graph")
    assert (status, err) == (2, f"{tmp_path / 'none.onnx'}: error[E601]: no such ONNX model\n")


def test_without_the_extra_importing_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    status, _, err = helpers.graphc_cli(capsys, "import", tmp_path / "m.onnx", "-o", tmp_path / "m.graph")
    assert (status, err) == (
        2,
        "graphc: error[E509]: graphc import needs the onnx package, which is not installed\n"
        'hint: install graphc\'s ONNX extra: pip install "graphc[onnx]"\n',
    )


# --- the command line ---------------------------------------------------------------------


def test_import_writes_the_graph_and_a_checkpoint_that_run_reads(tmp_path, capsys):
    model = tmp_path / "net.onnx"
    status, _, _ = helpers.graphc_cli(capsys, "compile", MODELS / "two_layer_net.graph", "--emit", "onnx", "-o", model)
    assert status == 0
    status, out, err = helpers.graphc_cli(capsys, "import", model, "-o", tmp_path / "net.graph")
    assert (status, out) == (0, "")
    assert err == f"wrote {tmp_path / 'net.graph'}\nwrote {tmp_path / 'net.npz'}\n"
    assert (tmp_path / "net.graph").read_text() == textwrap.dedent("""\
        # Imported from net.onnx by graphc import (written by graphc 0.1.0).
        # Its params' values are in net.npz: graphc run net.graph --weights net.npz
        graph two_layer_net {
            input x: f64[N, 784] from images
            input t: f64[N, 10] from labels
            param W1: f64[784, 50] = zeros    # its values: net.npz
            param b1: f64[50] = zeros
            param W2: f64[50, 10] = zeros    # its values: net.npz
            param b2: f64[10] = zeros

            affine1 = affine(x, W1, b1)
            relu1 = relu(affine1)
            y = affine(relu1, W2, b2)
            loss = softmax_loss(y, t)

            output loss
        }
        """)
    original = Program(select(front_end_file(MODELS / "two_layer_net.graph"), None))
    back = Program(select(front_end_file(tmp_path / "net.graph"), None))
    load_weights(back, tmp_path / "net.npz")
    for name in original.param_names:
        np.testing.assert_array_equal(back.params[name], original.params[name])


def test_an_endless_file_is_read_only_up_to_the_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(limits, "MAX_MODEL_BYTES", 1000)
    status, _, err = helpers.graphc_cli(capsys, "import", "/dev/zero", "-o", tmp_path / "m.graph")
    assert (status, err) == (
        2,
        "/dev/zero: error[E613]: larger than 1,000 bytes: more than graphc imports\n"
        "hint: graphc holds tensors of at most 2**28 numbers; a model this large is not one it can run\n",
    )
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.truncate(2000)  # refused by its size, unread
    status, _, err = helpers.graphc_cli(capsys, "import", big, "-o", tmp_path / "m.graph")
    assert status == 2 and err.startswith(f"{big}: error[E613]: larger than")
    assert not (tmp_path / "m.graph").exists()

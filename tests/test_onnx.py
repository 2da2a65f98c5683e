"""ONNX export (`graphc compile --emit onnx`), checked by ONNX itself and run by two runtimes.

Every graph of every model, each op with its attributes, and random graphs of the
fuzzer's are exported and must pass `onnx.checker.check_model(full_check=True)`;
strict ONNX shape inference, run on the model without graphc's value_info, must find
every value's dtype and shape as graphc infers them (the batch dim `N` symbolic);
onnxruntime (CPU) and onnx's ReferenceEvaluator must give the interpreter's outputs,
dtypes included, to 1e-12 in float64 and 1e-5 in float32 (relative to the array's
largest number), at two batch sizes.
"""

from __future__ import annotations

import copy
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

onnx = pytest.importorskip("onnx", reason='the ONNX extra is not installed: pip install ".[onnx]"')
ort = pytest.importorskip("onnxruntime", reason='the ONNX extra is not installed: pip install ".[onnx]"')

import helpers  # noqa: E402
from fuzzing.graphs import valid_graphs  # noqa: E402 (after the skip: it needs nothing of onnx, but reads as one group)
from onnx.reference import ReferenceEvaluator  # noqa: E402

from graphc.cli import main  # noqa: E402
from graphc.compiler import front_end, front_end_file, select  # noqa: E402
from graphc.export_onnx import (  # noqa: E402
    GRADIENTS,
    MAPPINGS,
    NO_GRADIENT,
    NOT_MAPPED,
    OPSET,
    export_outputs,
    onnx_model,
    onnx_train_step,
    onnx_types,
)
from graphc.ops import REGISTRY  # noqa: E402
from graphc.plan import make_inference_plan, make_plan  # noqa: E402
from graphc.program import Program  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
MODEL_GRAPHS = [(path, graph.name) for path in sorted(MODELS.glob("*.graph")) for graph in front_end_file(path)]
TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
ELEMENT = {"f32": 1, "f64": 11, "i64": 7, None: 11}


def program_of(text: str, dtype: str | None = None, graph: str | None = None, path: str = "m.graph") -> Program:
    return Program(select(front_end(textwrap.dedent(text), path), graph), dtype=dtype, mode="eval")


# --- what the checks compare ------------------------------------------------------------


def inferred_types(model: Any) -> dict[str, tuple[int, tuple]]:
    """Every value's element type and dims as strict ONNX shape inference finds them,
    from the model stripped of graphc's value_info and of its outputs' shapes."""
    stripped = copy.deepcopy(model)
    del stripped.graph.value_info[:]
    # Each output read by an Identity whose output is the model's, typeless: ONNX infers the output's own type.
    for output in stripped.graph.output:
        stripped.graph.node.append(onnx.helper.make_node("Identity", [output.name], [output.name + "/out"]))
        output.name += "/out"
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(stripped, check_type=True, strict_mode=True, data_prop=True)
    found = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if info.name in found:  # an output that is an input (a loss's scores may be)
            continue
        tensor = info.type.tensor_type
        if not tensor.HasField("shape"):
            found[info.name] = (tensor.elem_type, None)
            continue
        dims = tuple(
            d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None
            for d in tensor.shape.dim
        )
        found[info.name] = (tensor.elem_type, dims)
    for tensor in inferred.graph.initializer:
        found[tensor.name] = (tensor.data_type, tuple(tensor.dims))
    return found


def assert_shapes_agree(program: Program, model: Any, strict: bool = True, plan: Any = None) -> None:
    """ONNX's inferred type of every value the model holds is graphc's.

    strict: a symbolic dim must stay that symbol. Otherwise (random graphs, whose
    params may have an `N` that `dim N = 3` fixes) it may also be the size it is bound to.
    """
    plan = plan or make_inference_plan(program.checked, program.types, export_outputs(program), "eval")
    types = onnx_types(plan)
    found = inferred_types(model)
    names = [*plan.inputs, *plan.params, *plan.consts, *(s.out for s in plan.forward)]
    for name in names:
        t = types[name]
        element, dims = found[name]
        assert element == ELEMENT[t.dtype], name
        assert dims is not None and len(dims) == t.ndim, (name, dims, t)
        for ours, theirs in zip(t.shape, dims):
            if isinstance(ours, int):
                assert theirs == ours, (name, dims, t)
            elif "*" in ours:  # a product of symbols (flatten of [N, M]): ONNX may name it or not
                assert theirs is None or isinstance(theirs, str) or not strict, (name, dims, t)
            elif strict or name in plan.inputs:
                assert theirs == ours, (name, dims, t)
            else:
                assert theirs in (ours, program.ir.dims.get(ours), None), (name, dims, t)
    for state in (item for s in plan.forward for item in s.state):
        assert found[state] == (ELEMENT[program.state_types[state].dtype], program.state[state].shape)


def assert_close(actual: Any, expected: Any, what: str, scale: float = 0.0) -> None:
    """Same dtype and shape, NaN and infinities where graphc has them, and the rest equal to
    1e-12 (float64) or 1e-5 (float32) relative to the array's norm: normwise, as summation
    orders (numpy's BLAS, onnxruntime's MLAS) differ most in the smallest elements of a gradient.
    `scale`: the size of the numbers the value was computed from, where it is their sum
    and cancels (a bias before batchnorm has gradient 0, computed as rounding noise)."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.dtype == expected.dtype, (what, actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite], err_msg=what)
    tolerance = TOLERANCE.get(expected.dtype, 0)
    difference = np.linalg.norm((actual[finite] - expected[finite]).astype(np.float64))
    norm = float(np.linalg.norm(expected[finite].astype(np.float64)))
    assert difference <= tolerance * max(norm, scale), (what, actual, expected)


def assert_runs_as_graphc(program: Program, model: Any, feeds: dict[str, np.ndarray]) -> None:
    """onnxruntime and the reference evaluator give the interpreter's outputs."""
    outputs = export_outputs(program)
    with np.errstate(all="ignore"):
        expected = program.evaluate(outputs, dict(feeds))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    fed = {i.name: feeds[i.name] for i in session.get_inputs()}
    assert [o.name for o in session.get_outputs()] == list(outputs)
    with np.errstate(all="ignore"):  # the reference evaluator's numpy, on a graph's inf and NaN
        runs = (("onnxruntime", session.run(None, fed)), ("reference", ReferenceEvaluator(model).run(None, fed)))
    for runtime, results in runs:
        for name, value in zip(outputs, results):
            assert_close(value, expected[name], f"{runtime}: {name}")


def made_up_feeds(program: Program, batch: int, seed: int = 0, plan: Any = None) -> dict[str, np.ndarray]:
    plan = plan or make_inference_plan(program.checked, program.types, export_outputs(program), "eval")
    return helpers.made_up_feeds(program, plan, onnx_types(plan), batch, seed)


def verify(program: Program, batches: tuple[int, ...] = (2, 5)) -> Any:
    model = onnx_model(program)
    onnx.checker.check_model(model, full_check=True)
    assert_shapes_agree(program, model)
    for batch in batches:
        assert_runs_as_graphc(program, model, made_up_feeds(program, batch, seed=batch))
    return model


# --- every model, every op ---------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("path", "graph"), MODEL_GRAPHS, ids=[f"{p.stem}-{g}" for p, g in MODEL_GRAPHS])
def test_every_model_exports_and_runs_as_graphc(path, graph, dtype):
    program = Program(select(front_end_file(path), graph), dtype=dtype, mode="eval")
    rng = np.random.default_rng(1)
    for name, state in program.state.items():  # trained statistics, not their zeros
        state[...] = rng.uniform(0.5, 2, state.shape) if name.endswith("var") else rng.normal(0, 1, state.shape)
    model = verify(program)
    symbolic = any(isinstance(d, str) for name in program.input_names for d in program.types[name].shape)
    if symbolic:  # the batch is a symbolic ONNX dim
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "N"


def test_every_registered_op_has_a_mapping():
    assert set(MAPPINGS) | set(NOT_MAPPED) == set(REGISTRY)
    assert not set(MAPPINGS) & set(NOT_MAPPED)


# Each op with its attributes, in graphs with a symbolic batch dim.
OP_GRAPHS = {
    "binary": """
        graph g {
            input x: [N, 3]
            input y: [3]
            a = mul(x, y)
            b = add(a, 0.5)
            c = sub(2, b)
            y3 = add(y, 3)
            d = div(c, y3)
            output a, b, c, d
        }
    """,
    "unary": """
        graph g {
            input x: [N, 3]
            centred = sub(x, 0.5)
            r = relu(centred)
            s = sigmoid(x)
            h = tanh(centred)
            e = exp(x)
            l = log(x)
            q = square(centred)
            output r, s, h, e, l, q
        }
    """,
    "reductions": """
        graph g {
            input x: [N, 3, 2]
            s = sum(x)
            m = mean(x)
            s1 = sum(x, axis=1)
            m1 = mean(x, axis=-1, keepdims=true)
            s0 = sum(x, axis=0, keepdims=true)
            output s, m, s1, m1, s0
        }
    """,
    "affine": """
        graph g {
            input x: [N, 3, 2]
            input v: [6]
            input z: [N, 6]
            param W: [6, 4] = normal(1)
            param b: [4] = normal(1)
            param B: [1, 4] = normal(1)
            h = affine(x, W, b)
            u = affine(v, W, b)
            w = affine(z, W, B)
            output h, u, w
        }
    """,
    "one_hot_mean": """
        graph g {
            input x: [N, 4]
            input t: [N, 4] from labels
            y = mul(x, 3)
            loss = softmax_loss(y, t)
            output loss
        }
    """,
    "one_hot_sum": """
        graph g {
            input x: [N, 4]
            input t: [N, 4] from labels
            loss = softmax_loss(x, t, reduction=sum)
            output loss
        }
    """,
    "class_indices_mean": """
        graph g {
            input x: [N, 4]
            input t: [N] from labels
            loss = softmax_loss(x, t)
            output loss
        }
    """,
    "class_indices_sum": """
        graph g {
            input x: [N, 4]
            input t: [N] from labels
            loss = softmax_loss(x, t, reduction=sum)
            output loss
        }
    """,
    "one_sample": """
        graph g {
            input x: [N, 4]
            s = sum(x, axis=0)
            m = mean(x, axis=0)
            l1 = softmax_loss(s, [0, 0, 1, 0])
            l2 = softmax_loss(m, 2, reduction=sum)
            output l1, l2
        }
    """,
    "dropout_batchnorm": """
        graph g {
            input x: [N, 3]
            param gamma: [3] = normal(1)
            param beta: [3] = normal(1)
            h = batchnorm(x, gamma, beta, eps=1e-5)
            d = dropout(h, ratio=0.3)
            e = dropout(x)
            output d, e
        }
    """,
    "conv_pool_flatten": """
        graph g {
            input x: [N, 2, 7, 7]
            param W: [3, 2, 3, 3] = normal(1)
            param b: [3] = normal(1)
            c = conv2d(x, W, b, stride=2, pad=1)
            d = conv2d(x, W, b)
            shifted = sub(c, 2)
            p = max_pool(shifted, size=2, stride=2, pad=1)
            q = max_pool(d, size=3, stride=1)
            fp = flatten(p)
            fq = flatten(q)
            ffq = flatten(fq)
            output fp, q, ffq
        }
    """,
    "avg_pool": """
        graph g {
            input x: [N, 2, 6, 4]
            a = avg_pool(x, size=2, stride=2, pad=1)
            b = avg_pool(x, size=3, stride=1)
            c = avg_pool(x, size=2, stride=1, pad=1)
            output a, b, c
        }
    """,
    "pool_ties": """
        graph g {
            input x: [N, 2]
            param w: [2, 1, 4, 4] = ones
            p = max_pool(w)
            q = mul(x, 2)
            output p, q
        }
    """,
    "weak_scalars": """
        graph g {
            input x: [N, 2]
            k = exp(0.1)
            a = mul(x, k)
            b = add(x, 0.1)
            six = mul(2, 3)
            output a, b, k, six
        }
    """,
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", OP_GRAPHS)
def test_each_op_exports_and_runs_as_graphc(case, dtype):
    program = program_of(OP_GRAPHS[case], dtype)
    for name, state in program.state.items():
        state[...] = np.linspace(0.5, 1.5, state.size) if name.endswith("var") else np.linspace(-1, 1, state.size)
    verify(program)


def test_ops_in_the_op_graphs_cover_the_registry():
    used = {s.op.name for text in OP_GRAPHS.values() for s in program_of(text).plan.forward}
    assert used == set(REGISTRY)


def test_a_weak_scalar_is_computed_in_float64_and_cast_where_it_meets_float32():
    program = program_of(OP_GRAPHS["weak_scalars"], "float32")
    model = onnx_model(program)
    nodes = {n.name: n for n in model.graph.node}
    assert nodes["k"].op_type == "Exp"
    assert nodes["k/as_f32"].op_type == "Cast" and nodes["a"].input == ["x", "k/as_f32"]
    results = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.ones((2, 2), np.float32)})
    assert [r.dtype for r in results] == [np.float32, np.float32, np.float64, np.float64]
    assert results[0][0, 0] == np.float32(np.exp(0.1))  # rounded once, from float64


# --- random graphs ----------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(valid_graphs())
def test_random_graphs_export_and_run_as_graphc(generated):
    program = Program(select(front_end(generated.text), generated.name), mode="eval")
    model = onnx_model(program)
    onnx.checker.check_model(model, full_check=True)
    assert_shapes_agree(program, model, strict=False)
    plan = make_inference_plan(program.checked, program.types, export_outputs(program), "eval")
    types = onnx_types(plan)
    given_feeds = {**program.default_feeds(), **generated.feeds}
    feeds = {name: program.feed(name, given_feeds[name]) for name in plan.inputs}
    # Labels fed as class indices where the graph declares one-hot rows have no ONNX type of their own.
    assume(all(feeds[n].ndim == types[n].ndim for n in plan.inputs))
    assert_runs_as_graphc(program, model, feeds)


# --- names, doc strings, initializers ----------------------------------------------


def test_names_doc_strings_and_initializers_trace_back_to_the_graph():
    path = MODELS / "two_layer_net.graph"
    program = Program(select(front_end_file(path), None), seed=3, mode="eval")
    model = onnx_model(program)
    assert model.opset_import[0].version == OPSET and model.producer_name == "graphc"
    assert [i.name for i in model.graph.input] == ["x", "t"]
    assert [o.name for o in model.graph.output] == ["loss", "y"]  # the scores the loss reads, for serving
    nodes = {n.name: n for n in model.graph.node}
    assert [(n.name, n.op_type) for n in model.graph.node][:5] == [
        ("affine1/matmul", "MatMul"),
        ("affine1", "Add"),
        ("relu1", "Relu"),
        ("y/matmul", "MatMul"),
        ("y", "Add"),
    ]
    nodes = {n.name: n for n in model.graph.node}
    line = "x -> affine(W1, b1) -> relu -> affine(W2, b2) -> y"
    assert nodes["relu1"].doc_string == f"{path}:15:28: {line}"
    assert nodes["loss"].doc_string == f"{path}:16:12: loss = softmax_loss(y, t)"
    assert model.graph.input[0].doc_string == f"{path}:7:11: input x: f64[N, 784] = uniform(0, 1) from images"
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["N", 784]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name in program.param_names:
        assert np.array_equal(weights[name], program.params[name]), name


# --- the command ---------------------------------------------------------------------


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_compile_writes_the_model_with_the_seeds_params(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    model = str(MODELS / "two_layer_net.graph")
    assert main(["compile", model, "--emit", "onnx", "-o", str(out), "--seed", "7", "--dtype", "float32"]) == 0
    assert capsys.readouterr().err == f"wrote {out}\n"
    program = Program(select(front_end_file(model), None), seed=7, dtype="float32")
    written = initializers(out)
    for name in program.param_names:
        assert written[name].dtype == np.float32 and np.array_equal(written[name], program.params[name]), name
    assert main(["compile", model, "--emit", "onnx", "-o", str(out)]) == 0  # seed 0, float64
    assert not np.array_equal(initializers(out)["W1"], written["W1"].astype(np.float64))


def test_compile_takes_the_params_and_statistics_of_a_checkpoint(tmp_path, capsys):
    from graphc.checkpoint import save_checkpoint

    model = str(MODELS / "multi_layer_net.graph")
    program = Program(select(front_end_file(model), "multi_layer_net_bn"), seed=5)
    for name in program.state:
        program.state[name][...] = 0.25 if name.endswith("var") else -0.5
    save_checkpoint(tmp_path / "w.npz", program)
    out = tmp_path / "bn.onnx"
    argv = ["compile", model, "--graph", "multi_layer_net_bn", "--emit", "onnx", "--weights", str(tmp_path / "w.npz")]
    assert main([*argv, "-o", str(out)]) == 0
    written = initializers(out)
    for name in program.param_names:
        assert np.array_equal(written[name], program.params[name]), name
    assert set(program.state) <= set(written)
    for name in program.state:
        assert np.array_equal(written[name], program.state[name]), name
    capsys.readouterr()
    # A checkpoint of another graph is refused as every command refuses it.
    other = str(MODELS / "two_layer_net.graph")
    status = main(["compile", other, "--emit", "onnx", "--weights", str(tmp_path / "w.npz"), "-o", str(out)])
    assert status == 2
    assert "Traceback" not in capsys.readouterr().err


def cli_error(argv: list[str], capsys) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2, captured
    assert captured.out == ""
    return captured.err.rstrip("\n")


def test_onnx_output_needs_a_file(capsys):
    assert cli_error(["compile", str(MODELS / "apple.graph"), "--emit", "onnx"], capsys) == (
        "graphc: error[E505]: --emit onnx writes a binary file: name it with -o\nhint: e.g. `-o model.onnx`"
    )


def test_onnx_flags_go_with_emit_onnx(capsys):
    model = str(MODELS / "apple.graph")
    assert cli_error(["compile", model, "--train-step"], capsys) == (
        "graphc: error[E505]: --train-step goes with --emit onnx\nhint: e.g. `--emit onnx -o model.onnx`"
    )
    assert cli_error(["compile", model, "--emit", "python", "--weights", "w.npz"], capsys) == (
        "graphc: error[E505]: --weights goes with --emit onnx\nhint: e.g. `--emit onnx -o model.onnx`"
    )


def test_without_the_extra_exporting_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    argv = ["compile", str(MODELS / "apple.graph"), "--emit", "onnx", "-o", str(tmp_path / "m.onnx")]
    assert cli_error(argv, capsys) == (
        "graphc: error[E509]: --emit onnx needs the onnx package, which is not installed\n"
        'hint: install graphc\'s ONNX extra: pip install "graphc[onnx]"'
    )
    assert not (tmp_path / "m.onnx").exists()


def test_an_op_without_a_mapping_is_an_error_at_the_op(tmp_path, capsys, monkeypatch):
    monkeypatch.delitem(MAPPINGS, "relu")
    path = tmp_path / "m.graph"
    path.write_text("graph g {\n    input x: [N, 2]\n    y = relu(x)\n    output y\n}\n")
    covered = ", ".join(sorted(MAPPINGS))
    assert cli_error(["compile", str(path), "--emit", "onnx", "-o", str(tmp_path / "m.onnx")], capsys) == (
        f"{path}:3:9: error[E906]: ONNX export has no mapping for op `relu`\n"
        " 3 |     y = relu(x)\n"
        "   |         ^^^^^^^\n"
        f"hint: ops ONNX export covers: {covered}"
    )


# --- --train-step ---------------------------------------------------------------------


def dropout_masks(program: Program, batch: int) -> dict[str, np.ndarray]:
    """The masks graphc's next training forward draws, from a copy of its generator, in step order."""
    rng = np.random.default_rng()
    rng.bit_generator.state = program.rng.bit_generator.state
    masks = {}
    for step in program.plan.forward:
        if step.op.random:
            shape = tuple(batch if isinstance(d, str) else d for d in program.types[step.args[0]].shape)
            # an array even for a scalar's mask (a comparison of one float is numpy's bool, not an array)
            masks[f"{step.out}.mask"] = np.asarray(rng.random(shape) > step.attrs["ratio"])
    return masks


def verify_train_step(program: Program, batches: tuple[int, ...] = (8, 16)) -> Any:
    """The train step's loss, gradients and updated statistics are graphc's, in both runtimes.

    Batches of 8 and 16: through five batchnorms, x's gradient over a small batch is a sum
    of nearly cancelling terms (of 2, exactly: every feature normalizes to ±1 whatever x
    is), which float32 computes to 4 digits at a batch of 3, in graphc as in onnxruntime."""
    model = onnx_train_step(program)
    onnx.checker.check_model(model, full_check=True)
    plan = make_plan(program.checked, program.types, wrt=program.param_names, mode=program.mode)
    assert_shapes_agree(program, model, plan=plan)
    for batch in batches:
        feeds = made_up_feeds(program, batch, seed=batch, plan=plan)
        masks = dropout_masks(program, batch) if program.mode == "train" else {}
        before = {name: value.copy() for name, value in program.state.items()}
        with np.errstate(all="ignore"):
            loss, grads = program.loss_and_grads(dict(feeds))  # draws the masks, updates the statistics
        expected = {program.outputs[0]: loss}
        for name in program.param_names:
            expected[f"d_{name}"] = grads.get(name, np.zeros_like(program.params[name]))
        if program.mode == "train":
            expected.update((f"{name}/next", value.copy()) for name, value in program.state.items())
        for name, value in before.items():  # the model starts from the statistics it was exported with
            program.state[name][...] = value
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        fed = {**feeds, **masks}
        assert [i.name for i in session.get_inputs()] == [*plan.inputs, *masks]
        assert [o.name for o in session.get_outputs()] == list(expected)
        for runtime, results in (
            ("onnxruntime", session.run(None, fed)),
            ("reference", ReferenceEvaluator(model).run(None, fed)),
        ):
            scale = max(float(np.linalg.norm(np.asarray(v, np.float64)[np.isfinite(v)])) for v in expected.values())
            for name, value in zip(expected, results):
                assert_close(value, expected[name], f"{runtime}: {name}", scale)
        program.rng.bit_generator.state = np.random.default_rng(batch).bit_generator.state  # fresh masks next
    return model


def trained_statistics(program: Program) -> None:
    rng = np.random.default_rng(1)
    for name, state in program.state.items():
        state[...] = rng.uniform(0.5, 2, state.shape) if name.endswith("var") else rng.normal(0, 1, state.shape)


DIFFERENTIABLE = MODEL_GRAPHS


@pytest.mark.parametrize("mode", ["train", "eval"])
# float32's train steps repeat float64's ops at a looser tolerance: with the slow tests.
@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
@pytest.mark.parametrize(("path", "graph"), DIFFERENTIABLE, ids=[f"{p.stem}-{g}" for p, g in DIFFERENTIABLE])
def test_every_models_train_step_gives_graphcs_gradients(path, graph, dtype, mode):
    program = Program(select(front_end_file(path), graph), dtype=dtype, mode=mode)
    trained_statistics(program)
    verify_train_step(program)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", OP_GRAPHS)
def test_each_ops_gradients_in_a_train_step(case, dtype, mode):
    text = OP_GRAPHS[case]
    # Every output summed into one loss, so that every op's gradient is on the way to it.
    program = program_of(text, dtype)
    leaves = [n for n in program.outputs if program.types[n].dtype is not None]
    params = "".join(f"    param weight{i}: {list(program.types[n].shape)} = normal(1)\n" for i, n in enumerate(leaves))
    params = params.replace("'N'", "1")
    sums = "".join(
        f"    weighted{i} = mul({n}, weight{i})\n    term{i} = sum(weighted{i})\n" for i, n in enumerate(leaves)
    )
    chain, last = "", "term0"
    for i in range(1, len(leaves)):
        chain += f"    total{i} = add({last}, term{i})\n"
        last = f"total{i}"
    body = textwrap.dedent(text).rstrip().removesuffix("}").rstrip()
    body = "\n".join(line for line in body.splitlines() if not line.strip().startswith("output "))
    source = f"{body}\n{params}{sums}{chain}    output {last}\n}}\n"
    program = Program(select(front_end(source, "m.graph"), None), dtype=dtype, mode=mode)
    for name, state in program.state.items():
        state[...] = np.linspace(0.5, 1.5, state.size) if name.endswith("var") else np.linspace(-1, 1, state.size)
    verify_train_step(program)


def test_every_registered_op_has_a_gradient_mapping_or_is_listed():
    assert set(GRADIENTS) | set(NO_GRADIENT) == set(REGISTRY)
    assert not set(GRADIENTS) & set(NO_GRADIENT)


def test_a_train_step_through_an_op_without_a_gradient_mapping_is_an_error_at_the_op(tmp_path, capsys, monkeypatch):
    monkeypatch.delitem(GRADIENTS, "relu")
    path = tmp_path / "m.graph"
    path.write_text(
        "graph g {\n    input x: [N, 2]\n    param w: [2] = ones\n    y = mul(x, w)\n    z = relu(y)\n    s = sum(z)\n    output s\n}\n"
    )
    argv = ["compile", str(path), "--emit", "onnx", "--train-step", "-o", str(tmp_path / "m.onnx")]
    assert cli_error(argv, capsys) == (
        f"{path}:5:9: error[E906]: ONNX export has no gradient mapping for op `relu`\n"
        " 5 |     z = relu(y)\n"
        "   |         ^^^^^^^\n"
        "hint: ops ONNX export differentiates: " + ", ".join(sorted(GRADIENTS))
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(valid_graphs())
def test_random_graphs_train_steps_give_graphcs_gradients(generated):
    program = Program(select(front_end(generated.text), generated.name))
    assume(program.param_names and program.types[program.outputs[0]].dtype is not None)
    model = onnx_train_step(program)
    onnx.checker.check_model(model, full_check=True)
    plan = make_plan(program.checked, program.types, wrt=program.param_names, mode="train")
    assert_shapes_agree(program, model, strict=False, plan=plan)
    given_feeds = {**program.default_feeds(), **generated.feeds}
    feeds = {name: program.feed(name, given_feeds[name]) for name in plan.inputs}
    assume(all(feeds[n].ndim == onnx_types(plan)[n].ndim for n in plan.inputs))
    sizes = (feeds[n].shape[i] for n in plan.inputs for i, d in enumerate(program.types[n].shape) if isinstance(d, str))
    fed = {**feeds, **dropout_masks(program, next(sizes, 1))}  # the masks loss_and_grads draws next
    with np.errstate(all="ignore"):
        loss, grads = program.loss_and_grads(dict(feeds))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [("onnxruntime", session.run(None, fed))]
    if np.all(np.isfinite(loss)):  # onnx's reference MaxPool fails on a window of NaN alone (the max of nothing)
        with np.errstate(all="ignore"):  # the reference evaluator's numpy, on a graph's inf
            runs.append(("reference", ReferenceEvaluator(model).run(None, fed)))
    expected = [loss, *(grads.get(name, np.zeros_like(program.params[name])) for name in program.param_names)]
    finite = [np.asarray(v, np.float64)[np.isfinite(v)] for v in expected]
    scale = max(float(np.linalg.norm(v)) for v in finite)
    for runtime, results in runs:
        for name, value, wanted in zip(["loss", *program.param_names], results, expected):
            assert_close(value, wanted, f"{runtime}: {name}", scale)


def test_compile_writes_a_train_step(tmp_path, capsys):
    out = tmp_path / "step.onnx"
    assert main(["compile", str(MODELS / "two_layer_net.graph"), "--emit", "onnx", "--train-step", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["loss", "d_W1", "d_b1", "d_W2", "d_b2"]
    assert [i.name for i in model.graph.input] == ["x", "t"]

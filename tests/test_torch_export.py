"""PyTorch code generation (`graphc compile --emit torch`), checked by torch's autograd.

For every graph of every model and each op with its attributes, the generated
nn.Module, loaded with the program's params and running statistics, computes the
interpreter's outputs, and torch autograd's gradients of each output (times a
random dout) with respect to every param and input are graphc's backward's, in
float64 to 1e-10 relative to the norm; in eval mode, and in train mode where the
numbers do not depend on dropout's masks (batchnorm normalizing by the batch, its
running statistics compared after one forward). CI installs torch (.ci/run);
without it, these tests skip.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

torch = pytest.importorskip("torch", reason='torch is not installed (CI installs it: pip install "torch==2.13.0")')

import helpers  # noqa: E402
from fuzzing.graphs import valid_graphs  # noqa: E402 (the fuzzer's random graphs)
from test_onnx import OP_GRAPHS  # noqa: E402 (each op with its attributes, shared with ONNX export's tests)

from graphc.checkpoint import save_checkpoint  # noqa: E402
from graphc.cli import main  # noqa: E402
from graphc.compiler import front_end, front_end_file, select  # noqa: E402
from graphc.export_torch import MAPPINGS, class_name, torch_module, torch_outputs, torch_types  # noqa: E402
from graphc.imports import std_dir  # noqa: E402
from graphc.ops import REGISTRY  # noqa: E402
from graphc.plan import grad_name, make_inference_plan, make_plan  # noqa: E402
from graphc.program import Program  # noqa: E402
from graphc.run import Interpreter  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
MODEL_GRAPHS = [(path, graph.name) for path in sorted(MODELS.glob("*.graph")) for graph in front_end_file(path)]
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def program_of(text: str, dtype: str | None = None, mode: str = "eval") -> Program:
    return Program(select(front_end(textwrap.dedent(text), "m.graph"), None), dtype=dtype, mode=mode)


def module_class(program: Program) -> Any:
    """The generated module's class, compiled from its source."""
    namespace: dict[str, Any] = {}
    exec(compile(torch_module(program), f"<{program.name}>", "exec"), namespace)
    return namespace[class_name(program.name)]


def made_up_feeds(program: Program, batch: int, seed: int) -> dict[str, np.ndarray]:
    plan = make_inference_plan(program.checked, program.types, torch_outputs(program), "eval")
    return helpers.made_up_feeds(program, plan, torch_types(plan), batch, seed)


def assert_close(actual: Any, expected: Any, what: str, scale: float = 0.0) -> None:
    """Same dtype and shape, and equal to 1e-10 (float64) or 1e-5 (float32) relative to the norm
    (`scale`: the size of what a cancelling sum was computed from, as a bias before batchnorm's)."""
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, (what, actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite], err_msg=what)
    difference = np.linalg.norm((actual[finite] - expected[finite]).astype(np.float64))
    norm = float(np.linalg.norm(expected[finite].astype(np.float64)))
    assert difference <= TOLERANCE.get(expected.dtype, 0) * max(norm, scale), (what, actual, expected)


def trained_statistics(program: Program) -> None:
    rng = np.random.default_rng(1)
    for name, state in program.state.items():  # trained statistics, not their zeros
        state[...] = rng.uniform(0.5, 2, state.shape) if name.endswith("var") else rng.normal(0, 1, state.shape)


def verify(program: Program, batch: int = 6, seed: int = 0, feeds: dict[str, np.ndarray] | None = None) -> None:
    """The module's outputs, gradients (each output's, times a random dout) and
    updated running statistics are the interpreter's, in the program's mode."""
    outputs = torch_outputs(program)
    model = module_class(program).from_graphc(program.params, program.state)
    model.train(program.mode == "train")
    feeds = made_up_feeds(program, batch, seed) if feeds is None else feeds
    wrt = tuple(n for n in program.plan.wrt if n in program.param_names or n not in program.label_inputs)
    leaves = {name: torch.tensor(feeds[name], requires_grad=True) for name in feeds if name in wrt}
    with np.errstate(all="ignore"):
        results = model(
            **{model.GRAPHC_INPUTS[n]: leaves.get(n, torch.as_tensor(feeds[n])) for n in model.GRAPHC_INPUTS}
        )
    assert list(results) == list(outputs)
    leaves.update((name, getattr(model, model.GRAPHC_PARAMS[name])) for name in program.param_names if name in wrt)
    rng = np.random.default_rng(seed + 1)
    before = {name: value.copy() for name, value in program.state.items()}
    for k, output in enumerate(outputs):
        for name, value in before.items():  # each of graphc's forwards starts from the same statistics
            program.state[name][...] = value
        interpreter = Interpreter(make_plan(program.checked, program.types, wrt, output, mode=program.mode), free=False)
        env = program.fixed_values()
        env.update(feeds)
        with np.errstate(all="ignore"):
            tape = interpreter.forward(env)
            dout = rng.normal(0, 1, np.shape(env[output])).astype(np.asarray(env[output]).dtype)
            grads = interpreter.backward(tape, dout)
        assert_close(results[output], env[output], f"{output}")
        if k == 0:
            for name, value in program.state.items():
                assert_close(getattr(model, model.GRAPHC_STATE[name]), value, name)
        if not results[output].requires_grad:  # a value of literals alone: nothing to differentiate
            assert not any(np.any(grads.get(grad_name(name), 0)) for name in leaves)
            continue
        names = list(leaves)
        found = torch.autograd.grad(
            results[output], [leaves[n] for n in names], torch.as_tensor(dout), retain_graph=True, allow_unused=True
        )
        scale = max([float(np.linalg.norm(g)) for g in grads.values()] + [0.0])
        for name, g in zip(names, found):
            expected = grads.get(grad_name(name))
            if expected is None:  # no path to this output
                assert g is None or not torch.any(g), (output, name)
                continue
            assert g is not None, (output, name)
            assert_close(g, expected, f"d{output}/d{name}", scale)


# --- every op, every model -------------------------------------------------------------


def test_every_registered_op_has_a_mapping():
    assert set(MAPPINGS) == set(REGISTRY)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", OP_GRAPHS)
def test_each_op_gives_graphcs_outputs_and_gradients(case, mode):
    text = OP_GRAPHS[case]
    if mode == "train":  # dropout's masks are torch's: drop nothing, so the numbers are graphc's
        text = text.replace("ratio=0.3", "ratio=0").replace("dropout(x)", "dropout(x, ratio=0)")
    program = program_of(text, "float64", mode)
    trained_statistics(program)
    verify(program)


def has_dropout(program: Program) -> bool:
    return any(step.op.random for step in program.plan.forward)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("path", "graph"), MODEL_GRAPHS, ids=[f"{p.stem}-{g}" for p, g in MODEL_GRAPHS])
def test_every_model_gives_graphcs_outputs_and_gradients(path, graph, mode):
    program = Program(select(front_end_file(path), graph), dtype="float64", mode=mode)
    if mode == "train" and has_dropout(program):
        pytest.skip("dropout's masks in train mode are torch's own (eval mode is checked)")
    trained_statistics(program)
    verify(program, batch=5)


def assert_float32_outputs_agree(program: Program) -> None:
    trained_statistics(program)
    model = module_class(program).from_graphc(program.params, program.state).eval()
    feeds = made_up_feeds(program, 3, seed=2)
    outputs = torch_outputs(program)
    expected = program.evaluate(outputs, dict(feeds))
    with torch.no_grad():
        results = model(**feeds)
    for name in outputs:
        assert_close(results[name], expected[name], name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(valid_graphs())
def test_random_graphs_give_graphcs_outputs_and_gradients(generated):
    program = Program(select(front_end(generated.text), generated.name), mode="eval")
    given_feeds = {**program.default_feeds(), **generated.feeds}
    feeds = {name: program.feed(name, given_feeds[name]) for name in program.input_names}  # graphc's plan reads all
    verify(program, feeds=feeds)


@pytest.mark.parametrize(("path", "graph"), MODEL_GRAPHS, ids=[f"{p.stem}-{g}" for p, g in MODEL_GRAPHS])
def test_every_model_in_float32_computes_graphcs_outputs(path, graph):
    assert_float32_outputs_agree(Program(select(front_end_file(path), graph), dtype="float32", mode="eval"))


@pytest.mark.parametrize("case", OP_GRAPHS)
def test_each_op_in_float32_computes_graphcs_outputs(case):
    # weak_scalars: a literal is float64, cast to float32 where it meets one, as in graphc
    assert_float32_outputs_agree(program_of(OP_GRAPHS[case], "float32"))


def test_dropout_in_train_mode_keeps_each_element_or_zeroes_it():
    program = program_of("graph g {\n input x: [N, 4]\n d = dropout(x, ratio=0.25)\n output d\n}", "float64", "train")
    model = module_class(program)()
    x = torch.rand(1000, 4, dtype=torch.float64) + 1
    torch.manual_seed(0)
    d = model(x=x)["d"]
    kept = d != 0
    assert torch.equal(d[kept], x[kept])  # the book's dropout: kept as they are, not rescaled
    assert 0.72 < kept.double().mean().item() < 0.78
    model.eval()
    assert torch.equal(model(x=x)["d"], x * 0.75)


# --- the module's interface ---------------------------------------------------------------


def test_the_module_loads_a_checkpoint_of_graphc_train(tmp_path):
    path = MODELS / "multi_layer_net.graph"
    program = Program(select(front_end_file(path), None), dtype="float64")
    trained_statistics(program)
    save_checkpoint(tmp_path / "w.npz", program)
    model = module_class(program).from_graphc(str(tmp_path / "w.npz"))
    for name in program.param_names:
        assert_close(getattr(model, model.GRAPHC_PARAMS[name]), program.params[name], name)
        assert isinstance(getattr(model, model.GRAPHC_PARAMS[name]), torch.nn.Parameter)
    for name in program.state:
        assert_close(getattr(model, model.GRAPHC_STATE[name]), program.state[name], name)
    # The running statistics are in torch's state_dict; the params too, as parameters.
    assert set(model.state_dict()) == set(model.GRAPHC_PARAMS.values()) | set(model.GRAPHC_STATE.values())
    assert len(list(model.parameters())) == len(program.param_names)


def test_the_module_loads_a_plain_npz_of_params_and_names_a_missing_one(tmp_path):
    program = Program(select(front_end_file(MODELS / "two_layer_net.graph"), None))
    cls = module_class(program)
    np.savez(tmp_path / "p.npz", **{name: program.params[name] for name in program.param_names})
    model = cls.from_graphc(str(tmp_path / "p.npz"))
    assert_close(model.W2, program.params["W2"], "W2")
    with pytest.raises(KeyError, match="no values for param `b2` of TwoLayerNet"):
        cls.from_graphc({name: program.params[name] for name in ("W1", "b1", "W2")})
    with pytest.raises(ValueError, match=r"`W1` is \[2, 2\], TwoLayerNet wants \[784, 50\]"):
        cls.from_graphc({**dict(program.params), "W1": np.zeros((2, 2))})


def test_names_that_are_not_identifiers_or_shadow_the_module_become_identifiers():
    program = program_of(
        """
        graph g {
            input x: [N, 2]
            param eval: [2] = ones
            param training: [2] = ones
            y = mul(x, eval)
            z = add(y, training)
            output z
        }
        """
    )
    model = module_class(program).from_graphc(program.params)
    assert model.GRAPHC_PARAMS == {"eval": "eval_", "training": "training_"}
    x = np.ones((2, 2))
    assert_close(model.eval()(x=x)["z"], np.full((2, 2), 2.0), "z")


# --- the command ------------------------------------------------------------------------


def test_compile_writes_the_module_atomically_without_importing_torch(tmp_path, capsys, monkeypatch):
    out = tmp_path / "model.py"
    out.write_text("old")
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    assert main(["compile", str(MODELS / "simple_conv_net.graph"), "--emit", "torch", "-o", str(out)]) == 0
    assert capsys.readouterr().err == f"wrote {out}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py"]  # no temporary left behind
    monkeypatch.undo()
    namespace: dict[str, Any] = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    imported = {line.split()[1] for line in out.read_text().splitlines() if line.startswith(("import ", "from "))}
    assert imported == {"numpy", "torch", "torch.nn.functional"}
    assert issubclass(namespace["SimpleConvNet"], torch.nn.Module)


def test_compile_with_dtype_writes_float32_params(tmp_path, capsys):
    out = tmp_path / "model.py"
    argv = ["compile", str(MODELS / "two_layer_net.graph"), "--emit", "torch", "--dtype", "float32", "-o", str(out)]
    assert main(argv) == 0
    namespace: dict[str, Any] = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    assert namespace["TwoLayerNet"]().W1.dtype == torch.float32


def test_an_op_without_a_mapping_is_an_error_at_the_op(tmp_path, capsys, monkeypatch):
    monkeypatch.delitem(MAPPINGS, "relu")
    path = tmp_path / "m.graph"
    path.write_text("graph g {\n    input x: [N, 2]\n    y = relu(x)\n    output y\n}\n")
    status = main(["compile", str(path), "--emit", "torch"])
    captured = capsys.readouterr()
    assert (status, captured.out) == (2, "")
    assert captured.err.rstrip("\n") == (
        f"{path}:3:9: error[E906]: PyTorch code generation has no mapping for op `relu`\n"
        " 3 |     y = relu(x)\n"
        "   |         ^^^^^^^\n"
        f"hint: ops PyTorch code generation covers: {', '.join(sorted(MAPPINGS))}"
    )


# --- the docs' example -------------------------------------------------------------------


def test_the_docs_pytorch_training_step_runs(tmp_path, capsys):
    """docs/interop.md's `not run: needs torch` block (the checker has no torch), run here:
    from a checkpoint and the module written, as the blocks before it make them."""
    text = (MODELS.parent / "docs" / "interop.md").read_text()
    block = text.split("<!-- not run: needs torch -->\n```python\n", 1)[1].split("```\n", 1)[0]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "two_layer_net.graph").write_text((MODELS / "two_layer_net.graph").read_text())
    (tmp_path / "runs").mkdir()
    program = Program(select(front_end_file(MODELS / "two_layer_net.graph"), None))
    save_checkpoint(tmp_path / "runs" / "w.npz", program)
    graph, module = str(tmp_path / "models" / "two_layer_net.graph"), str(tmp_path / "runs" / "two_layer_net.py")
    assert main(["compile", graph, "--emit", "torch", "-o", module]) == 0
    (tmp_path / "block.py").write_text(block)
    run = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_compile_picks_the_graph_of_a_file_of_several(tmp_path, capsys):
    out = tmp_path / "model.py"
    path = str(MODELS / "multi_layer_net.graph")
    assert main(["compile", path, "--graph", "multi_layer_net_bn", "--emit", "torch", "-o", str(out)]) == 0
    namespace: dict[str, Any] = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    model = namespace["MultiLayerNetBn"]()
    layers = ["hidden.batchnorm1", *(f"hidden.{i}.batchnorm1" for i in range(1, 5))]
    assert set(model.GRAPHC_STATE) == {f"{layer}.running_{s}" for layer in layers for s in ("mean", "var")}
    assert model.GRAPHC_STATE["hidden.1.batchnorm1.running_var"] == "hidden_1_batchnorm1_running_var"
    # A step of a standard block is located as `import` names the file, not where graphc is installed.
    assert "(std/layers.graph:" in out.read_text()
    assert str(std_dir()) not in out.read_text()

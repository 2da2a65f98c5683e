"""The generated numpy module computes what the interpreter computes."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from graphc.cli import main
from graphc.codegen import load_module, python_module
from graphc.compiler import CompiledGraph, front_end, front_end_file
from graphc.ops import REGISTRY
from graphc.program import Program

ROOT = Path(__file__).resolve().parent.parent
MODEL_GRAPHS = [
    pytest.param(path, graph.name, id=f"{path.stem}:{graph.name}")
    for path in sorted((ROOT / "models").glob("*.graph"))
    for graph in front_end_file(path)
]
TOL = dict(rtol=1e-12, atol=1e-12)


def compiled_graph(path: Path, name: str) -> CompiledGraph:
    return next(g for g in front_end_file(path) if g.name == name)


def import_source(source: str, name: str = "generated") -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def one_graph(text: str) -> CompiledGraph:
    [graph] = front_end(textwrap.dedent(text), "g.graph")
    return graph


def assert_same(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name in expected:
        a, e = np.asarray(actual[name]), np.asarray(expected[name])
        assert a.shape == e.shape, name
        np.testing.assert_allclose(a, e, **TOL, err_msg=name)


# --- every model, against the interpreter ------------------------------------------


@pytest.mark.parametrize("path, name", MODEL_GRAPHS)
def test_generated_module_matches_the_interpreter(path, name):
    compiled = compiled_graph(path, name)
    program = Program(compiled, seed=0)
    module = import_source(python_module(compiled))
    # Same params and made-up inputs, number for number.
    params = module.init_params(0)
    assert set(params) == set(program.params)
    for key, value in program.params.items():
        np.testing.assert_array_equal(params[key], value)
        assert params[key].dtype == value.dtype
    feeds = program.default_feeds()
    if hasattr(module, "example_inputs"):
        inputs = module.example_inputs(0)
        assert set(inputs) == set(feeds)
        for key in feeds:
            np.testing.assert_array_equal(inputs[key], feeds[key])
    outputs, saved = module.forward(params, **feeds)
    grads = module.backward(params, saved)
    assert saved == {}, "backward empties saved"
    assert_same(outputs, program.forward(**feeds))
    assert_same(grads, program.backward())


def training_step_of(path: Path, name: str):
    """The model's Program, its generated module, and the Program's made-up feeds."""
    compiled = compiled_graph(path, name)
    program = Program(compiled, seed=0)
    feeds = {n: program.feed(n, v) for n, v in program.default_feeds().items()}
    return program, load_module(compiled), feeds


@pytest.mark.parametrize("path, name", MODEL_GRAPHS)
def test_loaded_module_trains_as_the_lean_plan_does(path, name):
    program, model, feeds = training_step_of(path, name)
    loss, grads = model.loss_and_grads(dict(program.params), feeds)
    expected_loss, expected = program.loss_and_grads(feeds)
    np.testing.assert_allclose(loss, expected_loss, **TOL)
    assert_same(grads, expected)
    assert set(grads) <= set(program.param_names)


@pytest.mark.parametrize("path, name", MODEL_GRAPHS)
def test_a_seed_scales_every_gradient_in_both_engines(path, name):
    program, model, feeds = training_step_of(path, name)
    dout = np.asarray(0.25, dtype=np.float64)  # a power of 2: scaling by it is exact
    draws = program.rng.bit_generator.state

    def same_draws() -> np.random.Generator:
        """The generator as it was: each step draws the same dropout masks."""
        program.rng.bit_generator.state = draws
        return program.rng

    loss, scaled = model.loss_and_grads(dict(program.params), feeds, dout, **model.extra(program.state, same_draws()))
    same_draws()
    _, plain = program.loss_and_grads(feeds)
    same_draws()
    _, interpreted = program.loss_and_grads(feeds, dout)
    assert_same(scaled, {n: 0.25 * g for n, g in plain.items()})
    assert_same(scaled, interpreted)
    assert dout == 0.25  # read, not written


def test_scores_and_predict_run_the_inference_plan(models):
    compiled = compiled_graph(models / "two_layer_net.graph", "two_layer_net")
    program = Program(compiled, seed=1)
    model = load_module(compiled)
    x = np.random.default_rng(2).random((7, 784))
    scores = model.module.scores(dict(program.params), x=x)
    expected = program.evaluate(("y",), {"x": x})["y"]
    np.testing.assert_allclose(scores, expected, **TOL)
    np.testing.assert_array_equal(model.module.predict(dict(program.params), x=x), expected.argmax(axis=1))
    assert "t" not in model.module.scores.__code__.co_varnames  # labels are not needed


# --- every op, every example shape ---------------------------------------------------


def _op_cases():
    for op in REGISTRY.values():
        for shapes in op.examples:
            yield pytest.param(op.name, shapes, id=f"{op.name}-{'-'.join(map(str, shapes))}")


def _random_feeds(op_name: str, shapes, rng) -> dict[str, np.ndarray]:
    feeds = {}
    op = REGISTRY[op_name]
    for i, shape in enumerate(shapes):
        feeds[f"in{i}"] = rng.standard_normal(shape)
        if op.operands[i] in op.positive:
            feeds[f"in{i}"] = np.abs(feeds[f"in{i}"]) + 0.5  # log(x), 1/b: defined, not NaN
    if op_name == "softmax_loss":
        y_shape, t_shape = shapes
        if t_shape == y_shape:  # one-hot rows
            labels = rng.integers(0, y_shape[-1], size=y_shape[:-1])
            feeds["in1"] = np.eye(y_shape[-1])[labels]
        else:  # class indices
            feeds["in1"] = rng.integers(0, y_shape[-1], size=t_shape)
    return feeds


@pytest.mark.parametrize("op_name, shapes", list(_op_cases()))
def test_every_op_generates_what_it_computes(op_name, shapes):
    op = REGISTRY[op_name]
    decls = []
    for i, shape in enumerate(shapes):
        dims = ", ".join(map(str, shape))
        dtype = "i64" if op_name == "softmax_loss" and i == 1 and len(shape) < len(shapes[0]) else "f64"
        decls.append(f"input in{i}: {dtype}[{dims}]")
    args = ", ".join(f"in{i}" for i in range(len(shapes)))
    compiled = one_graph("graph g {\n" + "\n".join(decls) + f"\nout = {op_name}({args})\noutput out\n}}\n")
    rng = np.random.default_rng(3)
    feeds = _random_feeds(op_name, shapes, rng)
    program = Program(compiled)
    expected_out = program.forward(**feeds)
    seed = rng.standard_normal(np.shape(expected_out["out"]))
    expected = program.backward(seed)
    module = import_source(python_module(compiled))
    outputs, saved = module.forward({}, **feeds)
    assert_same(outputs, expected_out)
    assert_same(module.backward({}, saved, seed), expected)
    assert op.forward_source and op.grad_source


# --- programs that exercise the code generator's corners ----------------------------

CORNERS = {
    "broadcasting and literals": """
        graph g {
            input x: [4, 3] = uniform(-1, 1)
            param w: [1, 3] = normal(1)
            param s: [] = 0.5
            const c = [1, 2, 3]
            const half = 0.5
            a = mul(x, w)
            b = add(a, s)
            c2 = mul(b, c)
            d = mul(c2, half)
            e = add(d, -1)
            f = sigmoid(e)
            g2 = mul(f, 2)
            loss = add(g2, g2)
            output loss
        }
    """,
    "fan-out through add, labels, a disconnected param": """
        graph g {
            dim N = 5
            input x: [N, 4] = uniform(0, 1)
            input t: [N, 3] = onehot
            param W: [4, 3] = he
            param b: [3] = zeros
            param u: [3] = ones
            param V: [4, 3] = xavier
            h = affine(x, W, b)
            k = add(h, h)
            r = relu(k)
            z = add(r, k)
            loss = softmax_loss(z, t, reduction=sum)
            unused = mul(u, u)
            output loss
        }
    """,
    "names that Python or the module already use": """
        graph g {
            input np = 2
            input len = 3
            param saved: [] = 1.5
            param d_np: [] = 0.25
            lambda = mul(np, len)
            d_lambda = mul(lambda, saved)
            out = add(d_lambda, d_np)
            output out
        }
    """,
    "three-dim input to affine, and class-index labels": """
        graph g {
            dim N = 2
            input img: [N, 2, 3] = uniform(0, 1)
            input t: i64[N]
            param W: [6, 4] = normal(0.1)
            param b: [1, 4] = normal(0.1)
            y = affine(img, W, b)
            loss = softmax_loss(y, t)
            output loss
        }
    """,
    "a literal class index as the label": """
        graph g {
            input y: [3] = [1, 2, 3]
            param w: [3] = normal(1)
            z = mul(y, w)
            loss = softmax_loss(z, 1)
            output loss
        }
    """,
    "two params that get one gradient": """
        graph g {
            param p: [3] = normal(1)
            param q: [3] = normal(1)
            s = add(p, q)
            loss = mul(s, s)
            output s
        }
    """,
}


@pytest.mark.parametrize("name", list(CORNERS))
def test_corner_cases_match_the_interpreter(name):
    compiled = one_graph(CORNERS[name])
    program = Program(compiled, seed=4)
    feeds = program.default_feeds()
    if "t" in program.input_names and "t" not in feeds:
        feeds["t"] = np.array([1, 3])
    module = import_source(python_module(compiled))
    params = module.init_params(4)
    for key, value in program.params.items():
        np.testing.assert_array_equal(params[key], value)
    program_out = program.forward(**feeds)
    seed = np.ones_like(program_out[program.plan.seed])
    keywords = inspect.signature(module.forward).parameters
    outputs, saved = module.forward(params, **{k if k in keywords else k + "_": v for k, v in feeds.items()})
    assert_same(outputs, program_out)
    grads = module.backward(params, saved, seed)
    assert_same(grads, program.backward(seed))
    # No two gradients handed back are one array.
    arrays = [g for g in grads.values() if isinstance(g, np.ndarray)]
    assert len({id(g) for g in arrays}) == len(arrays)


@pytest.mark.parametrize("dtype", [None, "float32"])
def test_backward_starts_from_ones_shaped_like_the_output(dtype):
    compiled = one_graph("""
        graph g {
            input x: [2, 3] = uniform(-1, 1)
            input z: [2, 3] = uniform(-1, 1)
            b = add(x, z)
            output b
        }
    """)
    program = Program(compiled, dtype=dtype)
    module = import_source(python_module(compiled, dtype=dtype))
    outputs, saved = module.forward({}, **module.example_inputs(0))
    grads = module.backward({}, saved)  # no dout: ones like b, in DTYPE
    program.forward()
    expected = program.backward()
    for name in ("x", "z"):
        assert grads[name].shape == (2, 3) and grads[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(grads[name], expected[name])
    assert grads["x"] is not grads["z"]


def test_reserved_names_are_renamed_and_readable():
    source = python_module(one_graph(CORNERS["names that Python or the module already use"]))
    assert "def forward(params, *, np_=2.0, len_=3.0):" in source
    assert "lambda_ = np_ * len_" in source
    assert "d_lambda = lambda_ * saved_" in source  # the value called d_lambda
    assert "d_lambda_ = d_d_lambda * saved_  # d_lambda = d_d_lambda * saved" in source  # lambda's gradient


def test_same_gradient_for_two_params_is_copied():
    source = python_module(one_graph(CORNERS["two params that get one gradient"]))
    assert '        "q": np.copy(d_q),  # its own array: add passed one gradient to several\n' in source


# --- standalone, and readable -----------------------------------------------------------


def _imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    return modules


@pytest.mark.parametrize("path, name", MODEL_GRAPHS)
def test_generated_module_imports_numpy_and_nothing_else(path, name):
    assert _imports(python_module(compiled_graph(path, name))) == {"numpy"}


def test_generated_module_runs_where_graphc_cannot_be_imported(tmp_path, models):
    out = tmp_path / "two_layer_net.py"
    assert main(["compile", str(models / "two_layer_net.graph"), "--emit", "python", "-o", str(out)]) == 0
    # Isolated mode (no cwd, no PYTHONPATH), and graphc made unimportable.
    driver = f"import runpy, sys; sys.modules['graphc'] = None; runpy.run_path({str(out)!r}, run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-I", "-c", driver], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("loss = 2.30")
    assert [line.split()[0] for line in lines[1:]] == ["d_x", "d_W1", "d_b1", "d_W2", "d_b2"]


def test_generated_code_reads_like_the_plan(models):
    source = python_module(compiled_graph(models / "apple.graph", "buy_apple"))
    assert source.startswith('"""buy_apple: the graph as plain numpy, forward and backward.\n')
    assert source.splitlines()[2].startswith("Generated by graphc ") and "apple.graph" in source.splitlines()[2]
    assert "def forward(params, *, apple=100.0, apple_num=2.0, tax=1.1):" in source
    assert "apple_price = apple * apple_num  # apple_price = mul(apple, apple_num)" in source
    assert "d_apple_price = d_price * tax  # d_apple_price = d_price * tax" in source
    compile(source, "apple.py", "exec")  # valid Python


def test_two_layer_net_reads_like_the_book(models):
    source = python_module(compiled_graph(models / "two_layer_net.graph", "two_layer_net"))
    for line in [
        "affine1 = x @ W1\n    affine1 += b1  ",
        "relu1_mask = affine1 > 0",
        "relu1 = np.maximum(affine1, 0)",
        "d_b2 = d_y.sum(axis=0)  # d_b2 = sum(d_y, axis=0)",
        "d_affine1 = d_relu1 * relu1_mask  # d_affine1 = d_relu1 * relu1.mask",
        "del affine1",
        "def softmax_cross_entropy(y, t, mean=True):",
    ]:
        assert line in source, line
    assert 'PARAM_SHAPES = {"W1": (784, 50), "b1": (50,), "W2": (50, 10), "b2": (10,)}' in source


def test_params_only_module_skips_the_input_gradient(models):
    compiled = compiled_graph(models / "two_layer_net.graph", "two_layer_net")
    source = python_module(compiled, wrt=("W1", "b1", "W2", "b2"))
    assert "d_x" not in source
    assert load_module(compiled).source == source


# --- float32 end to end ------------------------------------------------------------------


def _float_arrays_in(frame_locals: dict) -> list[tuple[str, np.dtype]]:
    found = []

    def visit(name, value):
        if isinstance(value, (np.ndarray, np.generic)):
            found.append((name, value.dtype))
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(f"{name}[{k!r}]", v)
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                visit(f"{name}[{i}]", v)

    for name, value in frame_locals.items():
        visit(name, value)
    return found


@pytest.mark.parametrize("path, name", MODEL_GRAPHS)
def test_float32_module_makes_only_float32(path, name):
    compiled = compiled_graph(path, name)
    program = Program(compiled, dtype="float32", seed=0)
    model = load_module(compiled, "float32")
    filename = model.module.__file__
    seen: list[tuple[str, np.dtype]] = []

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != filename:
            return None
        if event in ("line", "return"):
            seen.extend(_float_arrays_in(frame.f_locals))
            if event == "return":
                seen.extend(_float_arrays_in({"<returned>": arg}))
        return tracer

    params = model.module.init_params(0)
    feeds = {n: program.feed(n, v) for n, v in program.default_feeds().items()}
    sys.settrace(tracer)
    try:
        loss, grads = model.loss_and_grads(params, feeds)
    finally:
        sys.settrace(None)
    assert seen, "the tracer saw the generated code run"
    wrong = {(n, str(d)) for n, d in seen if d.kind == "f" and d != np.float32}
    assert not wrong
    assert np.asarray(loss).dtype == np.float32
    assert all(np.asarray(g).dtype == np.float32 for g in grads.values())


def test_emit_python_with_dtype_and_output_file(tmp_path, models, capsys):
    out = tmp_path / "m.py"
    argv = ["compile", str(models / "two_layer_net.graph"), "--emit", "python", "--dtype", "float32", "-o", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert "DTYPE = np.float32" in text
    assert "Floats are float32 (DTYPE)." in text


def test_documented_excerpt_is_what_graphc_writes(models):
    """The documented excerpt of the apple module (docs/internals.md)."""
    import re

    marker = "<!-- excerpt: graphc compile models/apple.graph --emit python -->"
    text = (ROOT / "docs" / "internals.md").read_text(encoding="utf-8")
    block = re.search(re.escape(marker) + r"\n```python\n(.*?)^```$", text, re.S | re.M)
    assert block, "docs/internals.md: the excerpt marker is missing or not followed by a python block"
    source = python_module(compiled_graph(models / "apple.graph", "buy_apple"))
    assert block.group(1) in source


# --- the module's text: names, literals, docstrings --------------------------------------


def test_names_that_are_not_identifiers_are_made_into_ones():
    from graphc.codegen import _Names

    names = _Names({"np"})
    assert names.add("relu1.mask") == "relu1_mask"
    assert names.add("1x") == "v_1x"
    assert names.add("np") == "np_"
    assert names.add(("d", "d_x"), "lambda") == "lambda_"
    assert names.add("relu1.mask") == "relu1_mask"  # asked again: the same name
    assert names.add("relu1_mask") == "relu1_mask_"  # taken by the first


def test_literals_are_written_inline_and_readable():
    source = python_module(one_graph(CORNERS["broadcasting and literals"]))
    assert "    e = d + (-1.0)  " in source  # a negative literal in parentheses
    assert "    g2 = f * 2.0  " in source
    assert "half = 0.5\n" in source  # a const of one number: a Python float, as the interpreter holds it
    assert "c = np.array([1.0, 2.0, 3.0], dtype=DTYPE)\n" in source


def test_a_typed_scalar_const_is_an_array_of_its_dtype_as_in_the_interpreter():
    compiled = one_graph("""
        graph g {
            input x: f32[2] = [1, 2]
            const c: f32 = 2
            y = mul(x, c)
            output y, c
        }
    """)
    source = python_module(compiled)
    assert "c = np.array(2.0, dtype=DTYPE)\n" in source
    outputs, _ = import_source(source).forward({})
    expected = Program(compiled).forward()
    assert isinstance(outputs["c"], np.ndarray) and outputs["c"].dtype == expected["c"].dtype == np.float32


def test_infinite_literals_are_written_as_floats():
    from graphc.codegen import _literal

    assert _literal(np.array(np.inf)) == "float('inf')"
    assert _literal(np.array(-np.inf)) == "float('-inf')"
    assert _literal(np.array(np.nan)) == "float('nan')"
    assert _literal(np.array(-2.5)) == "(-2.5)"
    assert _literal(np.array(3)) == "3"


def test_input_defaults_fill_their_shape():
    compiled = one_graph("""
        graph g {
            dim N = 3
            input x: [3] = 2
            input y: [N, 1] = 1
            input z = [1, 2, 3]
            a = mul(x, z)
            b = mul(a, y)
            output b
        }
    """)
    source = python_module(compiled)
    assert "def forward(params, *, x=np.full((3,), 2.0), y, z=[1.0, 2.0, 3.0]):" in source
    outputs, _ = import_source(source).forward({}, y=np.ones((2, 1)))
    np.testing.assert_array_equal(outputs["b"], [[2, 4, 6], [2, 4, 6]])


def test_a_sigmoid_node_with_a_reserved_name_reads_its_output_by_its_new_name():
    compiled = one_graph("""
        graph g {
            input x: [2] = [0.5, -1]
            lambda = sigmoid(x)
            output lambda
        }
    """)
    source = python_module(compiled)
    assert "d_x = d_lambda_ * lambda_ * (1 - lambda_)  # d_x = d_lambda * lambda * (1 - lambda)" in source
    module = import_source(source)
    outputs, saved = module.forward({})
    program = Program(compiled)
    assert_same(outputs, program.forward())
    assert_same(module.backward({}, saved), program.backward())


def test_fan_out_shows_its_sums_in_the_comments(models):
    [compiled] = front_end_file(models / "fanout.graph")
    source = python_module(compiled)
    assert source.count("    d_x += d_square * x  # d_x += d_square * x\n") == 2
    assert "    d_x = d_xy * y  # d_x = d_xy * y\n" in source


def test_the_docstring_tells_what_the_module_holds(models):
    source = python_module(compiled_graph(models / "two_layer_net.graph", "two_layer_net"))
    docstring = source.split('"""')[1]
    assert docstring.endswith(
        textwrap.dedent("""\
            Floats are float64 (DTYPE).

            Params:
                W1  f64[784, 50]  normal(0.01)
                b1  f64[50]       zeros
                W2  f64[50, 10]   normal(0.01)
                b2  f64[10]       zeros

            Inputs:
                x  f64[N, 784]  from images; example_inputs() makes it up as uniform(0, 1)
                t  f64[N, 10]   from labels; one-hot rows, or class indices [N]; example_inputs() makes it up as onehot

            Outputs: loss; backward starts from loss.
            Gradients: d_x, d_W1, d_b1, d_W2, d_b2.
            """)
    )


def test_the_docstring_lists_zero_gradients_and_leaves_out_labels():
    source = python_module(
        one_graph("""
            graph g {
                input y: [2, 3] = [[1, 2, 3], [0, 0, 1]]
                input t: i64[2] = [0, 2]
                param w: [3] = [1, 1, 1]
                param u: [3] = [1, 1, 1]
                loss = softmax_loss(y, t)
                unused = mul(u, w)
                output loss
            }
        """)
    )
    assert "\nGradients: d_y, d_w, d_u.\n" in source
    assert '"w": np.zeros_like(w),  # no path to loss' in source


SCORES_OF_TWO_INPUTS = """
    graph g {
        dim N = 2
        input x: [N, 3] = uniform(0, 1)
        input z: [N, 3] = uniform(0, 1)
        input t: i64[N]
        param W: [3, 4] = normal(1)
        param b: [4] = zeros
        s = add(x, z)
        h = affine(s, W, b)
        r = relu(h)
        y = mul(r, 2)
        loss = softmax_loss(y, t)
        output loss
    }
"""


def test_scores_and_predict_of_scores_that_read_two_inputs():
    compiled = one_graph(SCORES_OF_TWO_INPUTS)
    model = load_module(compiled)
    program = Program(compiled, seed=1)
    x, z = np.random.default_rng(0).random((2, 5, 3))
    params = dict(program.params)
    expected = program.evaluate(("y",), {"x": x, "z": z})["y"]
    np.testing.assert_array_equal(model.module.scores(params, x=x, z=z), expected)
    np.testing.assert_array_equal(model.module.predict(params, x=x, z=z), expected.argmax(axis=1))
    source = model.source
    scores = source[source.index("def scores(") : source.index("def predict(")]
    assert scores == textwrap.dedent('''\
        def scores(params, *, x, z):
            """Forward only, to `y`, the scores the loss reads: no labels,
            nothing kept for backward."""
            W = params["W"]
            b = params["b"]
            x = np.asarray(x, DTYPE)
            z = np.asarray(z, DTYPE)
            s = x + z             # s = add(x, z)
            h = s @ W
            h += b                # h = affine(s, W, b)
            del s
            r = np.maximum(h, 0)  # r = relu(h)
            del h
            y = r * 2.0           # y = mul(r, 2)
            del r
            return y


        ''')
    assert source[source.index("def predict(") :].startswith(
        textwrap.dedent('''\
            def predict(params, *, x, z):
                """The predicted class of each row: the argmax of the scores."""
                return scores(params, x=x, z=z).argmax(axis=-1)
            ''')
    )


def test_a_loaded_module_of_chosen_gradients():
    compiled = one_graph(SCORES_OF_TWO_INPUTS)
    model = load_module(compiled, wrt=("x", "W"))
    assert model.param_names == ("W", "b")
    program = Program(compiled, seed=0)
    feeds = {"x": np.ones((2, 3)), "z": np.zeros((2, 3)), "t": np.array([0, 3])}
    loss, grads = model.loss_and_grads(dict(program.params), feeds)
    assert set(grads) == {"x", "W"}
    program.forward(**feeds)
    expected = program.backward()
    for name in ("x", "W"):
        np.testing.assert_array_equal(grads[name], expected[name])


def test_a_module_has_one_float_dtype():
    from graphc.errors import GraphcError

    mixed = one_graph("""
        graph g {
            input x: f32[2] = [1, 2]
            input y: f64[2] = [1, 2]
            a = relu(x)
            b = relu(y)
            output a, b
        }
    """)
    with pytest.raises(GraphcError) as info:
        python_module(mixed)
    assert info.value.diagnostics[0].message == (
        "graph `g` mixes f32 and f64 values; a generated module has one float dtype"
    )
    assert info.value.diagnostics[0].hint == "give one with --dtype float32 or --dtype float64"
    source = python_module(mixed, dtype="float32")  # one dtype for all: fine
    assert "DTYPE = np.float32\n" in source
    with pytest.raises(GraphcError) as info:
        python_module(mixed, dtype="float16")
    assert (info.value.diagnostics[0].message, info.value.diagnostics[0].hint) == (
        "unknown dtype `float16`",
        "use float32 or float64",
    )


def test_a_float32_graph_makes_a_float32_module():
    compiled = one_graph("""
        graph g {
            input x: f32[2] = [1, 2]
            y = sigmoid(x)
            output y
        }
    """)
    source = python_module(compiled)
    assert "DTYPE = np.float32\n" in source and "Floats are float32 (DTYPE)." in source
    outputs, _ = import_source(source).forward({})
    assert outputs["y"].dtype == np.float32


def test_array_literals_and_own_tensors_get_readable_names():
    source = python_module(
        one_graph("""
            graph g {
                input x: [2] = [1, -2]
                np = relu(x)
                y = mul(np, [3, 4])
                output y
            }
        """)
    )
    assert "const = np.array([3.0, 4.0], dtype=DTYPE)\n" in source
    assert "    np__mask = x > 0\n" in source  # the mask of the relu called np (np_ in the module)
    assert "    y = np_ * const  " in source


def test_the_apple_module_whole(models):
    """The whole module for the book's first graph, as a reader sees it (tests/data/apple_module.py.txt)."""
    [compiled] = front_end((models / "apple.graph").read_text(encoding="utf-8"), "apple.graph")
    expected = (ROOT / "tests" / "data" / "apple_module.py.txt").read_text(encoding="utf-8")
    assert python_module(compiled) == expected


def test_copied_kernels_are_two_blank_lines_apart(models):
    source = python_module(compiled_graph(models / "two_layer_net.graph", "two_layer_net"))
    assert "\n\n\n\n" not in source
    assert '\n\n\ndef softmax_cross_entropy(y, t, mean=True):\n    """Cross-entropy' in source
    assert '\n\n\ndef minus_labels(probs, t):\n    """probs - t,' in source
    assert (
        '\n\n\ndef as_labels(t):\n    """Labels as the graph reads them: one-hot rows in DTYPE, or class indices."""\n'
        in source
    )


def test_the_two_layer_nets_forward_whole(models):
    source = python_module(compiled_graph(models / "two_layer_net.graph", "two_layer_net"))
    start = source.index("def forward(")
    assert source[start : source.index("\n\n\n", start)] == textwrap.dedent('''\
        def forward(params, *, x, t):
            """The outputs, and `saved`: what backward reads."""
            W1 = params["W1"]
            b1 = params["b1"]
            W2 = params["W2"]
            b2 = params["b2"]
            x = np.asarray(x, DTYPE)
            t = as_labels(t)
            affine1 = x @ W1
            affine1 += b1                                   # affine1 = affine(x, W1, b1)
            relu1_mask = affine1 > 0
            relu1 = np.maximum(affine1, 0)                  # relu1 = relu(affine1)
            del affine1
            y = relu1 @ W2
            y += b2                                         # y = affine(relu1, W2, b2)
            loss, loss_probs = softmax_cross_entropy(y, t)  # loss = softmax_loss(y, t)
            del y
            outputs = {"loss": loss}
            saved = {
                "x": x,
                "relu1_mask": relu1_mask,
                "relu1": relu1,
                "t": t,
                "loss_probs": loss_probs,
                "loss": loss,
            }
            return outputs, saved''')


def test_example_inputs_only_where_every_input_has_an_initializer(models):
    with_all = python_module(compiled_graph(models / "two_layer_net.graph", "two_layer_net"))
    assert "def example_inputs(seed=0):" in with_all and 'if __name__ == "__main__":' in with_all
    without = python_module(one_graph(CORNERS["three-dim input to affine, and class-index labels"]))
    assert "def example_inputs" not in without and "__main__" not in without


def test_class_index_inputs_are_documented_as_such():
    source = python_module(one_graph(CORNERS["three-dim input to affine, and class-index labels"]))
    assert "\n    t    i64[N]        class indices\n" in source

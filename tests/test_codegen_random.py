"""Generated code against the interpreter on random graphs the checker accepts.

A Hypothesis strategy writes small graphs of every op, with the shapes of
graph people write: outputs that are inputs, params, consts or literals,
several outputs, values read several times, graphs with no params or no
inputs, weak literals, broadcasting, labels as one-hot rows or class indices.
For each, the generated module and the interpreter must agree on every
output and gradient to the last bit (and on dtypes), in float64 and float32.
"""

from __future__ import annotations

import inspect
import types

import numpy as np
import pytest
from graphs import LABELS_NOWHERE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.codegen import load_module, python_module
from graphc.compiler import front_end
from graphc.errors import GraphcError
from graphc.program import Program

SHAPES = [(), (3,), (2, 3), (3, 3), (1, 3), (2, 1)]


@st.composite
def graphs(draw) -> str:
    """A random graph: leaves, then nodes that read earlier values, then outputs."""
    values: list[tuple[str, tuple[int, ...]]] = []  # name, shape
    lines = []
    dtype = draw(st.sampled_from(["", "f64", "f32"]))
    for i in range(draw(st.integers(0, 3))):
        shape = draw(st.sampled_from(SHAPES))
        lines.append(f"input x{i}: {dtype}{list(shape)} = uniform(-2, 2)")
        values.append((f"x{i}", shape))
    for i in range(draw(st.integers(0, 3))):
        shape = draw(st.sampled_from(SHAPES))
        lines.append(f"param w{i}: {dtype}{list(shape)} = normal(1)")
        values.append((f"w{i}", shape))
    if draw(st.booleans()):
        shape = draw(st.sampled_from(SHAPES))
        value = np.round(np.random.default_rng(len(lines)).uniform(-2, 2, shape), 2).tolist()
        lines.append(f"const c: {list(shape)} = {value}")
        values.append(("c", shape))
    literals = ["2", "0.5", "-1.5"]
    n_nodes = draw(st.integers(1, 6))
    for k in range(n_nodes):
        op = draw(st.sampled_from(["mul", "add", "relu", "sigmoid", "affine", "softmax_loss"]))
        name = f"v{k}"
        picked = _node(draw, op, values, literals)
        if picked is None:
            continue
        args, shape = picked
        lines.append(f"{name} = {op}({', '.join(args)})")
        values.append((name, shape))
    if not values:
        lines.append("v = mul(2, 3)")
        values.append(("v", ()))
    names = [n for n, _ in values]
    outputs = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        outputs = [names[-1]] + [o for o in outputs if o != names[-1]]
    lines.append("output " + ", ".join(outputs))
    body = "\n".join("    " + line for line in lines)
    return f"graph g {{\n{body}\n}}\n"


def _node(draw, op: str, values, literals):
    def pick(shape_ok=lambda s: True):
        choices = [(n, s) for n, s in values if shape_ok(s)]
        if not choices:
            return None
        return draw(st.sampled_from(choices))

    if op in ("relu", "sigmoid"):
        if not values or draw(st.integers(0, 5)) == 0:
            return [draw(st.sampled_from(literals))], ()
        n, s = pick()
        return [n], s
    if op in ("mul", "add"):
        if not values:
            return [draw(st.sampled_from(literals)), draw(st.sampled_from(literals))], ()
        a, sa = pick()
        if draw(st.integers(0, 3)) == 0:
            return [a, draw(st.sampled_from(literals))], sa
        b, sb = pick(lambda s: _broadcastable(sa, s))
        return [a, b], tuple(np.broadcast_shapes(sa, sb))
    if op == "affine":
        x = pick(lambda s: len(s) in (1, 2))
        w = x and pick(lambda s: len(s) == 2 and s[0] == x[1][-1])
        b = w and pick(lambda s: s == (w[1][1],))
        if b is None:
            return None
        return [x[0], w[0], b[0]], x[1][:-1] + (w[1][1],)
    if op == "softmax_loss":
        y = pick(lambda s: len(s) in (1, 2))
        if y is None:
            return None
        yn, ys = y
        classes = ys[-1]
        if draw(st.booleans()):
            labels = np.eye(classes)[np.arange(int(np.prod(ys[:-1], dtype=int))) % classes].reshape(ys).tolist()
        else:
            labels = (np.arange(int(np.prod(ys[:-1], dtype=int))) % classes).reshape(ys[:-1]).tolist()
        reduction = draw(st.sampled_from(["", ", reduction=sum"]))
        return [yn, str(labels).replace(" ", "") + reduction], ()
    raise AssertionError(op)


def _broadcastable(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


def _module(source: str) -> types.ModuleType:
    module = types.ModuleType("generated")
    exec(compile(source, "<generated>", "exec"), module.__dict__)
    return module


def assert_identical(actual: dict, expected: dict, what: str) -> None:
    assert set(actual) == set(expected), what
    for name in expected:
        a, e = actual[name], expected[name]
        # A Python float is weak in numpy's promotion, an array or numpy scalar is not: they must agree.
        assert (type(a) is float) == (type(e) is float), (what, name, a, e)
        assert np.shape(a) == np.shape(e) and np.asarray(a).dtype == np.asarray(e).dtype, (what, name, a, e)
        np.testing.assert_array_equal(a, e, err_msg=f"{what} {name}")


def check_codegen_agrees(text: str, dtype: str | None = None) -> None:
    """Every output and gradient of the generated module equals the interpreter's, bit for bit."""
    try:
        [compiled] = front_end(text, "random.graph")
        program = Program(compiled, dtype=dtype, seed=3)
    except GraphcError:
        return  # the checker refused it: nothing to compare
    feeds = program.default_feeds()
    module = _module(python_module(compiled, dtype=dtype))
    params = module.init_params(3)
    keywords = inspect.signature(module.forward).parameters
    outputs, saved = module.forward(params, **{k if k in keywords else k + "_": v for k, v in feeds.items()})
    with np.errstate(all="ignore"):
        expected_outputs = program.forward(**feeds)
        seed = np.ones_like(expected_outputs[program.plan.seed])
        expected = program.backward(seed)
        grads = module.backward(params, saved, seed)
    assert_identical(outputs, expected_outputs, "outputs")
    assert_identical(grads, expected, "gradients")
    assert saved == {}
    # The trainer's module (gradients of the params only) and the lean plan agree too.
    model = load_module(compiled, dtype)
    checked_feeds = {n: program.feed(n, v) for n, v in feeds.items()}
    with np.errstate(all="ignore"):
        loss, param_grads = model.loss_and_grads(dict(program.params), checked_feeds)
        expected_loss, expected_param_grads = program.loss_and_grads(checked_feeds)
    np.testing.assert_array_equal(loss, expected_loss)
    assert_identical(param_grads, expected_param_grads, "param gradients")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=graphs(), dtype=st.sampled_from([None, "float32"]))
def test_generated_code_equals_the_interpreter_on_random_graphs(text, dtype):
    check_codegen_agrees(text, dtype)


CASES = {
    "a param as the output": """
        graph g {
            param w: [2] = [1, 2]
            output w
        }
    """,
    "an input, a param and a node as outputs": """
        graph g {
            input x: [2] = [1, 2]
            param w: [2] = [3, 4]
            y = mul(x, w)
            output x, y, w
        }
    """,
    "a const as the output, then a node": """
        graph g {
            input x: [2] = [1, 2]
            const c = [3, 4]
            y = mul(x, c)
            output c, y
        }
    """,
    "a scalar const as the only output": """
        graph g {
            const c = 2
            output c
        }
    """,
    "values read several times": """
        graph g {
            input x: [3] = [1, -2, 3]
            a = mul(x, x)
            b = add(a, x)
            c = mul(b, a)
            d = relu(c)
            e = add(d, d)
            output e, a
        }
    """,
    "no inputs": """
        graph g {
            param w: [2, 2] = [[1, 2], [3, 4]]
            const c = 0.5
            y = mul(w, c)
            z = sigmoid(y)
            output z
        }
    """,
    "no params, no inputs: literals alone": """
        graph g {
            k = mul(2, 3)
            s = sigmoid(k)
            output s, k
        }
    """,
    "literals alone read by float32": """
        graph g {
            input x: f32[3] = [1, 2, 3]
            k = mul(2, 3)
            s = sigmoid(0.5)
            y = mul(x, k)
            z = mul(y, s)
            output z, k
        }
    """,
    "a param read twice by one node, and output": """
        graph g {
            param w: [2] = [1, 2]
            y = add(w, w)
            output y, w
        }
    """,
    "made-up class indices, and an integer input nothing reads": """
        graph g {
            dim N = 3
            input t: i64[N] = zeros
            input k: i64[2] = [1, 2]
            input y: [N, 4] = uniform(0, 1)
            loss = softmax_loss(y, t)
            output loss, k
        }
    """,
    "labels that reach no output": LABELS_NOWHERE,
}


@pytest.mark.parametrize("dtype", [None, "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_generated_code_equals_the_interpreter(name, dtype):
    import textwrap

    check_codegen_agrees(textwrap.dedent(CASES[name]), dtype)


def test_a_module_without_inputs_documents_calls_that_run():
    import textwrap

    [compiled] = front_end(textwrap.dedent(CASES["a param as the output"]), "g.graph")
    source = python_module(compiled)
    assert "    outputs, saved = forward(params)\n" in source
    assert "    loss, grads = loss_and_grads(params)\n" in source
    module = _module(source)
    params = module.init_params()
    outputs, saved = module.forward(params)
    assert outputs["w"] is params["w"]
    grads = module.backward(params, saved)
    np.testing.assert_array_equal(grads["w"], [1.0, 1.0])

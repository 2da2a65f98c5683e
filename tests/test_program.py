"""The Python API: Program.forward/backward/params/plan, feeding values,
dtypes, labels, initializers, and the gradients it hands back."""

from __future__ import annotations

import itertools
import math
import textwrap

import numpy as np
import pytest
from graphs import LABELS_NOWHERE

import graphc
from graphc.errors import GraphcError
from graphc.ir import TensorType
from graphc.testing import check_grads


def program(block: str, **kwargs) -> graphc.Program:
    return graphc.compile_source(textwrap.dedent(block).lstrip("\n"), "p.graph", **kwargs)


def rendered(err: pytest.ExceptionInfo) -> str:
    return err.value.render()


def assert_no_aliasing(grads: dict[str, np.ndarray], *others: np.ndarray) -> None:
    arrays = list(grads.items())
    for (a, ga), (b, gb) in itertools.combinations(arrays, 2):
        assert not np.shares_memory(ga, gb), f"gradients of {a} and {b} share memory"
    for name, grad in arrays:
        for other in others:
            assert not np.shares_memory(grad, other), f"gradient of {name} shares memory with the seed"


# --- forward and backward ---------------------------------------------------------------


def test_forward_then_backward():
    p = program("""
        graph g {
            input x = [1, -2, 3]
            param w: [3] = [0.5, 0.5, 2]
            h = mul(x, w)
            y = relu(h)
            output y
        }
    """)
    np.testing.assert_array_equal(p.forward()["y"], [0.5, 0, 6])
    grads = p.backward()
    assert list(grads) == ["x", "w"]
    np.testing.assert_array_equal(grads["x"], [0.5, 0, 2])
    np.testing.assert_array_equal(grads["w"], [1, 0, 3])
    # Every value and every gradient of the last run stays readable.
    np.testing.assert_array_equal(p.values["h"], [0.5, -1, 6])
    np.testing.assert_array_equal(p.gradients["h"], [1, 0, 1])


def test_backward_needs_a_forward_first():
    p = program("graph g {\n    input x = 1\n    y = relu(x)\n    output y\n}\n")
    with pytest.raises(GraphcError) as err:
        p.backward()
    assert (
        rendered(err)
        == "graphc: error[E407]: backward() needs a forward() first\nhint: call program.forward(...) first"
    )


def test_backward_with_a_seed():
    p = program("graph g {\n    input x = [1, 2]\n    y = mul(x, 3)\n    output y\n}\n")
    p.forward()
    np.testing.assert_array_equal(p.backward(seed=[1, 10])["x"], [3, 30])
    with pytest.raises(GraphcError) as err:
        p.backward(seed=[1, 2, 3])
    assert rendered(err) == "graphc: error[E407]: seed has shape [3], output `y` has [2]"


def test_fan_out_gradients_are_summed():
    p = program("""
        graph g {
            input x = [1, 2, 3]
            y = mul(x, x)
            output y
        }
    """)
    p.forward()
    np.testing.assert_array_equal(p.backward()["x"], [2, 4, 6])


def test_fan_out_through_several_kinds_of_consumer():
    p = program("""
        graph g {
            input x = [0.5, -1, 2]
            a = add(x, x)
            b = mul(a, x)
            c = relu(x)
            d = sigmoid(x)
            e = add(b, c)
            f = add(e, d)
            output f
        }
    """)
    x = np.array([0.5, -1, 2])
    p.forward()
    s = 1 / (1 + np.exp(-x))
    # f = 2x^2 + relu(x) + sigmoid(x)
    np.testing.assert_allclose(p.backward()["x"], 4 * x + (x > 0) + s * (1 - s), rtol=1e-14)


def test_adding_into_a_passed_through_gradient_leaves_its_siblings_alone():
    # Backward reaches s first: add hands d_out itself to d_a and d_b. Then
    # t adds its share into d_a: that must not add into d_b or the seed too.
    p = program("""
        graph g {
            input a = 1
            input b = 2
            input c = 3
            t = mul(a, c)
            s = add(a, b)
            out = add(s, t)
            output out
        }
    """)
    assert [step.out for step in p.plan.forward] == ["t", "s", "out"]
    p.forward()
    seed = np.array(1.0)
    grads = p.backward(seed=seed)
    assert {name: float(g) for name, g in grads.items()} == {"a": 4.0, "b": 1.0, "c": 1.0}
    assert float(seed) == 1.0


# --- gradients handed back never alias -------------------------------------------------------


def test_add_gives_each_operand_its_own_gradient_array():
    p = program("""
        graph g {
            input a = [1, 2]
            input b = [3, 4]
            y = add(a, b)
            output y
        }
    """)
    p.forward()
    seed = np.array([1.0, 1.0])
    grads = p.backward(seed=seed)
    assert grads["a"] is not grads["b"]
    assert_no_aliasing(grads, seed)
    grads["a"][0] = 100
    np.testing.assert_array_equal(grads["b"], [1, 1])
    np.testing.assert_array_equal(seed, [1, 1])


def test_gradients_passed_through_twice_do_not_alias():
    p = program("""
        graph g {
            input a = [1, 2]
            input b = [3, 4]
            input c = [5, 6]
            z = add(a, b)
            w = add(z, c)
            y = mul(w, 2)
            output y
        }
    """)
    p.forward()
    grads = p.backward()
    assert_no_aliasing(grads)
    for name in "abc":
        np.testing.assert_array_equal(grads[name], [2, 2])


def test_gradient_of_an_output_that_is_an_input_is_not_the_seed():
    p = program("graph g {\n    input x = [1, 2]\n    output x\n}\n")
    p.forward()
    seed = np.array([3.0, 4.0])
    grads = p.backward(seed=seed)
    np.testing.assert_array_equal(grads["x"], [3, 4])
    assert_no_aliasing(grads, seed)


def test_backward_does_not_change_forward_values():
    p = program("""
        graph g {
            input x = [1, -2]
            a = relu(x)
            b = relu(x)
            y = add(a, b)
            output y
        }
    """)
    p.forward()
    before = {name: np.array(value, copy=True) for name, value in p.values.items()}
    p.backward()
    for name, value in before.items():
        np.testing.assert_array_equal(p.values[name], value, err_msg=name)


# --- gradient checks of whole programs ------------------------------------------------------


def test_dag_with_broadcasting_and_fan_out_matches_numerical_gradients():
    p = program(
        """
        graph g {
            dim N = 4
            input x: [N, 3] = normal(1)
            input t: [N, 2] = onehot
            param W: [3, 5] = normal(0.5)
            param b: [5] = normal(0.1)
            param s: [1, 5] = normal(1)
            param V: [5, 2] = normal(0.5)
            param c: [2] = zeros
            h = affine(x, W, b)
            g = sigmoid(h)
            k = mul(h, s)
            m = mul(g, k)
            n = add(m, h)
            r = relu(n)
            y = affine(r, V, c)
            loss = softmax_loss(y, t)
            output loss
        }
    """,
        seed=3,
    )
    rows = check_grads(p, eps=1e-5, rtol=1e-7)
    assert [r.name for r in rows] == ["x", "W", "b", "s", "V", "c"]
    assert all(r.ok for r in rows), rows


def test_check_grads_refuses_float32():
    p = program("graph g {\n    param w: f32[2] = ones\n    y = relu(w)\n    output y\n}\n")
    with pytest.raises(GraphcError) as err:
        check_grads(p)
    assert (
        rendered(err)
        == "graphc: error[E407]: gradient checks run in float64; compile the program without dtype=float32"
    )


# --- labels ------------------------------------------------------------------------------

NET = """
    graph net {
        input x: [N, 4]
        input t: [N, 3] from labels
        param W: [4, 3] = normal(0.5)
        param b: [3] = normal(0.5)
        y = affine(x, W, b)
        loss = softmax_loss(y, t)
        output loss
    }
"""


def test_class_indices_and_one_hot_labels_agree():
    p = program(NET)
    x = np.random.default_rng(0).standard_normal((5, 4))
    index = np.array([0, 2, 1, 1, 0])
    loss_onehot = p.forward(x=x, t=np.eye(3)[index])["loss"]
    grads_onehot = p.backward()
    loss_index = p.forward(x=x, t=index)["loss"]
    grads_index = p.backward()
    assert float(loss_index) == pytest.approx(float(loss_onehot), rel=1e-12)
    assert list(grads_index) == list(grads_onehot) == ["x", "W", "b"]  # labels get no gradient
    for name in grads_index:
        np.testing.assert_allclose(grads_index[name], grads_onehot[name], rtol=1e-12, atol=1e-15)
    assert p.values["t"].dtype == np.int64


def test_label_inputs_are_those_read_only_as_labels():
    assert program(NET).label_inputs == frozenset({"t"})
    both = program("""
        graph g {
            input y: [2, 3]
            input t: [2, 3]
            z = add(y, t)
            loss = softmax_loss(z, t)
            output loss
        }
    """)
    assert both.label_inputs == frozenset()
    # t is also added to the scores, so it must be given in full and gets a gradient.
    with pytest.raises(GraphcError):
        both.forward(y=np.zeros((2, 3)), t=np.array([0, 1]))
    both.forward(y=np.zeros((2, 3)), t=np.eye(3)[[0, 1]])
    assert set(both.backward()) == {"y", "t"}


def test_float_class_indices_are_not_taken_for_labels():
    p = program(NET)
    with pytest.raises(GraphcError) as err:
        p.forward(x=np.zeros((2, 4)), t=np.array([0.0, 1.0]))
    assert err.value.message == "input `t` expects shape [N, 3], got [2]"


def test_disconnected_input_gets_a_zero_gradient():
    p = program("""
        graph g {
            input x = [1, 2]
            input u = [3, 4, 5]
            y = relu(x)
            side = relu(u)
            output y, side
            expect grad(u) == [0, 0, 0]
        }
    """)
    p.forward()
    grads = p.backward()
    np.testing.assert_array_equal(grads["u"], [0, 0, 0])
    assert grads["u"].dtype == np.float64
    assert [r.ok for r in p.expectations()] == [True]


# --- dtypes --------------------------------------------------------------------------------

F32 = """
    graph g {
        dim N = 2
        input x: f32[N, 3] = normal(1)
        input t: f32[N, 2] = onehot
        param W: f32[3, 2] = he
        param b: f32[2] = zeros
        const k = 0.5
        y = affine(x, W, b)
        z = mul(y, k)
        h = mul(z, 2)
        s = sigmoid(h)
        loss = softmax_loss(s, t)
        output loss
    }
"""


def test_float32_graph_stays_float32_end_to_end():
    p = program(F32)
    out = p.forward()
    grads = p.backward()
    assert out["loss"].dtype == np.float32
    # Scalar consts are weak, fed as Python floats: numpy keeps the other operand's dtype.
    weak = {name for name, t in p.types.items() if t.dtype is None}
    assert weak == {"k", "2"} and all(type(p.values[name]) is float for name in weak)
    arrays = {name: v for name, v in p.values.items() if name not in weak}
    assert {name: np.asarray(v).dtype for name, v in arrays.items()} == dict.fromkeys(arrays, np.dtype(np.float32))
    assert {name: np.asarray(g).dtype for name, g in grads.items()} == dict.fromkeys(grads, np.dtype(np.float32))
    assert {name: np.asarray(g).dtype for name, g in p.gradients.items()} == dict.fromkeys(
        p.gradients, np.dtype(np.float32)
    )


def test_class_indices_keep_a_float32_graph_float32():
    p = program(F32)
    p.forward(t=np.array([1, 0]))
    assert {np.asarray(g).dtype for g in p.backward().values()} == {np.dtype(np.float32)}


def test_dtype_override():
    p = program(
        """
        graph g {
            input x: [2] = [1, 2]
            param w: [2] = ones
            y = mul(x, w)
            output y
        }
    """,
        dtype="float32",
    )
    assert p.forward()["y"].dtype == np.float32
    assert {np.asarray(g).dtype for g in p.backward().values()} == {np.dtype(np.float32)}
    with pytest.raises(GraphcError) as err:
        program("graph g {\n    input x = 1\n    output x\n}\n", dtype="float16")
    assert rendered(err) == "graphc: error[E503]: unknown dtype `float16`\nhint: use float32 or float64"


def test_fed_values_are_cast_to_the_declared_dtype():
    p = program("graph g {\n    input x: f32[2]\n    y = relu(x)\n    output y\n}\n")
    assert p.forward(x=[1, 2])["y"].dtype == np.float32
    assert p.forward(x=np.array([1.0, 2.0]))["y"].dtype == np.float32


def test_integer_input_refuses_fractions():
    p = program("""
        graph g {
            input y: [2, 3]
            input k: i64[2]
            loss = softmax_loss(y, k)
            output loss
        }
    """)
    p.forward(y=np.zeros((2, 3)), k=[0, 2])
    with pytest.raises(GraphcError) as err:
        p.forward(y=np.zeros((2, 3)), k=[0.5, 2])
    assert err.value.message == "input `k` is i64, got float64 values"


# --- symbolic dims -------------------------------------------------------------------------


def test_symbolic_dim_takes_its_size_from_what_is_fed():
    p = program(NET)
    for n in (1, 7):
        p.forward(x=np.ones((n, 4)), t=np.zeros(n, dtype=int))
        assert p.values["y"].shape == (n, 3)
        assert p.backward()["x"].shape == (n, 4)


def test_symbolic_dims_must_agree():
    p = program(NET)
    with pytest.raises(GraphcError) as err:
        p.forward(x=np.ones((3, 4)), t=np.zeros(4, dtype=int))
    assert err.value.message == "input `t` has N = 4, but `x` has N = 3"


def test_dim_sizes_the_made_up_inputs():
    p = program("""
        graph g {
            dim N = 5
            input x: [N, 2] = uniform(-1, 1)
            input t: [N, 2] = onehot
            loss = softmax_loss(x, t)
            output loss
        }
    """)
    p.forward()
    assert p.values["x"].shape == (5, 2)
    assert np.all(np.abs(p.values["x"]) <= 1)
    np.testing.assert_array_equal(p.values["t"].sum(axis=1), np.ones(5))


# --- params and initializers -----------------------------------------------------------------


def test_params_by_name():
    p = program("graph g {\n    input x = [1, 2]\n    param w: [2] = zeros\n    y = mul(x, w)\n    output y\n}\n")
    assert list(p.params) == ["w"]
    p.params["w"] = [3, 4]
    assert p.params["w"].dtype == np.float64
    np.testing.assert_array_equal(p.forward()["y"], [3, 8])
    with pytest.raises(GraphcError) as err:
        p.params["w"] = [1, 2, 3]
    assert rendered(err) == textwrap.dedent("""\
        p.graph:3:11: error[E403]: param `w` has shape [2], got [3]
         3 |     param w: [2] = zeros
           |           ^""")
    with pytest.raises(GraphcError) as err:
        p.params["v"] = 1
    assert rendered(err) == "graphc: error[E405]: no param named `v` in graph `g`"


def _initialized(init: str, shape: str = "[400, 300]", seed: int = 0) -> np.ndarray:
    p = program(f"graph g {{\n    param w: {shape} = {init}\n    y = relu(w)\n    output y\n}}\n", seed=seed)
    return p.params["w"]


def test_zeros_ones_and_literals():
    np.testing.assert_array_equal(_initialized("zeros", "[2, 3]"), np.zeros((2, 3)))
    np.testing.assert_array_equal(_initialized("ones", "[2, 3]"), np.ones((2, 3)))
    np.testing.assert_array_equal(_initialized("[1, 2, 3]", "[3]"), [1, 2, 3])
    np.testing.assert_array_equal(_initialized("7", "[2, 2]"), np.full((2, 2), 7.0))


@pytest.mark.parametrize(
    "init, std",
    [
        ("normal(0.01)", 0.01),
        ("he", np.sqrt(2 / 400)),
        ("xavier", np.sqrt(1 / 400)),
    ],
)
def test_random_initializers_have_the_documented_spread(init, std):
    w = _initialized(init)
    assert w.shape == (400, 300)
    assert abs(w.mean()) < 0.02 * std * 10
    assert w.std() == pytest.approx(std, rel=0.02)


def test_uniform_initializer():
    w = _initialized("uniform(-2, 3)")
    assert w.min() >= -2 and w.max() < 3
    assert w.mean() == pytest.approx(0.5, abs=0.02)


def test_onehot_initializer():
    t = _initialized("onehot", "[50, 7]")
    assert set(np.unique(t)) == {0.0, 1.0}
    np.testing.assert_array_equal(t.sum(axis=1), np.ones(50))


def test_initializers_are_seeded():
    np.testing.assert_array_equal(
        _initialized("normal(1)", "[3, 3]", seed=5), _initialized("normal(1)", "[3, 3]", seed=5)
    )
    assert not np.array_equal(_initialized("normal(1)", "[3, 3]", seed=5), _initialized("normal(1)", "[3, 3]", seed=6))


# --- selection, expectations ----------------------------------------------------------------

MULTI = """
    graph first {
        input x = 3
        y = mul(x, x)
        output y
        expect y == 9
        expect grad(x) == 5
    }
    graph second {
        input x = 3
        y = add(x, x)
        output y
    }
"""


def test_graph_selection():
    assert program(MULTI).name == "first"
    second = program(MULTI, graph="second")
    assert second.name == "second"
    assert float(second.forward()["y"]) == 6
    with pytest.raises(GraphcError) as err:
        program(MULTI, graph="third")
    assert rendered(err) == "p.graph: error[E114]: no graph named `third`\nhint: graphs in this file: `first`, `second`"


def test_expectations():
    p = program(MULTI)
    p.forward()
    p.backward()
    ok, bad = p.expectations()
    assert (ok.ok, float(ok.actual), ok.detail) == (True, 9.0, "relative 1e-09")
    assert (bad.ok, float(bad.actual), bad.expectation.span.line) == (False, 6.0, 6)


def test_compile_file(tmp_path):
    path = tmp_path / "m.graph"
    path.write_text(textwrap.dedent(MULTI))
    p = graphc.compile_file(path, graph="second")
    assert p.name == "second"


def test_labels_computed_from_an_input_get_no_gradient():
    p = program("""
        graph g {
            input y: [2, 3]
            input u: [2, 3]
            t = relu(u)
            loss = softmax_loss(y, t)
            output loss
        }
    """)
    p.forward(y=np.zeros((2, 3)), u=np.eye(3)[[0, 2]])
    grads = p.backward()
    assert list(grads) == ["y"]
    np.testing.assert_allclose(grads["y"], (np.full((2, 3), 1 / 3) - np.eye(3)[[0, 2]]) / 2, rtol=1e-14)


def test_a_param_without_a_type_takes_the_shape_of_its_value():
    p = program("""
        graph g {
            param w = [1, 2, 3]
            param s = 0.5
            y = mul(w, s)
            output y
        }
    """)
    assert p.types["w"] == TensorType("f64", (3,)) and p.types["s"] == TensorType("f64", ())
    np.testing.assert_array_equal(p.forward()["y"], [0.5, 1.0, 1.5])
    assert float(p.backward()["s"]) == 6.0


def test_a_param_without_a_type_needs_a_value_to_take_its_shape_from():
    with pytest.raises(GraphcError) as err:
        program("graph g {\n    param z = zeros\n    output z\n}\n")
    assert err.value.render() == (
        "p.graph:2:11: error[E111]: param `z` needs a shape for `zeros`\n"
        " 2 |     param z = zeros\n"
        "   |           ^\n"
        "hint: e.g. `param z: [784, 50] = zeros`"
    )


# --- what the review asked for -----------------------------------------------------------


def test_setting_a_param_copies_the_array():
    p = program("graph g {\n    param w: [2] = zeros\n    output w\n}\n")
    mine = np.array([1.0, 2.0])
    p.params["w"] = mine
    p.params["w"] += 1  # as an optimizer updates it
    np.testing.assert_array_equal(mine, [1.0, 2.0])
    frozen = np.array([1.0, 2.0])
    frozen.setflags(write=False)
    p.params["w"] = frozen
    p.params["w"] += 1
    np.testing.assert_array_equal(p.params["w"], [2.0, 3.0])


def test_check_grads_refuses_float32_inputs_too():
    p = program("graph g {\n    input x: f32[2] = [1, 2]\n    y = relu(x)\n    output y\n}\n")
    with pytest.raises(GraphcError) as err:
        check_grads(p)
    assert (
        rendered(err)
        == "graphc: error[E407]: gradient checks run in float64; compile the program without dtype=float32"
    )


def test_weak_literals_keep_each_branch_in_its_own_dtype():
    p = program("""
        graph g {
            input a: f64[2] = [1, 2]
            input b: f32[2] = [1, 2]
            p = mul(a, 0.1)
            q = mul(b, 0.1)
            output p, q
        }
    """)
    out = p.forward()
    assert out["p"].dtype == np.float64 and out["q"].dtype == np.float32
    assert type(p.consts["0.1"]) is float
    np.testing.assert_array_equal(out["q"], np.float32([1, 2]) * np.float32(0.1))


def test_literals_alone_make_a_weak_scalar_that_adapts_to_its_reader():
    for dtype, expected in ((None, np.float64), ("float32", np.float32)):
        p = program(
            "graph g {\n    input x: [2] = [1, 2]\n    z = mul(2, 3)\n    y = mul(x, z)\n    output y\n}\n", dtype=dtype
        )
        out = p.forward()
        assert type(p.values["z"]) is float and p.values["z"] == 6.0  # a Python float, weak as a literal is
        assert p.types["z"] == TensorType(None, ())
        assert out["y"].dtype == expected
        np.testing.assert_array_equal(out["y"], [6, 12])


def test_literals_alone_in_a_float32_graph_take_float32_where_they_are_read():
    """`mul(2, 3)` and `sigmoid(0.5)` read by f32 values: no dtype mismatch, and f32 all the way."""
    p = program("""
        graph g {
            input x: f32[3] = [1, 2, 3]
            k = mul(2, 3)
            s = sigmoid(0.5)
            c = mul([1, 2, 3], 2)
            y = mul(x, k)
            z = mul(y, s)
            w = add(z, c)
            output w
        }
    """)
    assert p.types["k"] == TensorType(None, ()) and p.types["s"] == TensorType(None, ())
    assert p.types["c"] == TensorType("f32", (3,))  # an array of literals takes its reader's dtype
    out = p.forward()
    assert type(p.values["s"]) is float and p.values["s"] == 1 / (1 + math.exp(-0.5))
    assert out["w"].dtype == np.float32
    expected = np.float32([1, 2, 3]) * np.float32(6.0) * np.float32(1 / (1 + math.exp(-0.5))) + np.float32([2, 4, 6])
    np.testing.assert_array_equal(out["w"], expected)
    assert p.backward()["x"].dtype == np.float32


def test_a_node_of_literals_read_as_two_dtypes_is_an_error():
    with pytest.raises(GraphcError) as info:
        program("""
            graph g {
                input x: f32[3] = [1, 2, 3]
                input v: f64[3] = [1, 2, 3]
                c = mul([1, 2, 3], 2)
                y = mul(x, c)
                z = mul(v, c)
                output y, z
            }
        """)
    assert info.value.diagnostics[0].message == "`c` is read as f32 by `y` and as f64 by `z`"


def test_literal_class_indices_are_integers():
    p = program("""
        graph g {
            input y: [2, 3] = [[1, 2, 3], [1, 1, 1]]
            loss = softmax_loss(y, [1, 2])
            output loss
        }
    """)
    assert p.consts["[1,2]"].dtype == np.int64
    assert [r.ok for r in check_grads(p)] == [True]


def test_a_literal_default_fills_symbolic_dims_for_made_up_inputs_too():
    p = program("""
        graph g {
            input x: [N] = [1, 2]
            input z: [N] = ones
            y = mul(x, z)
            output y
        }
    """)
    np.testing.assert_array_equal(p.forward()["y"], [1, 2])


# --- labels ------------------------------------------------------------------------------


def test_only_a_narrowing_cast_is_searched_for_numbers_out_of_range():
    from graphc.ir import unrepresentable

    big = np.array([1.0, 1e300, -1e300])
    assert unrepresentable(big, "f32") == 1e300
    assert unrepresentable(big, "f64") is None
    assert unrepresentable(np.array([3e38, np.inf], np.float32), "f32") is None
    assert unrepresentable(np.array([3e38, -3e38], np.float32), "f64") is None
    assert unrepresentable(np.array([6e4], np.float16), "f32") is None


def test_labels_that_reach_no_output_get_no_gradient_either(tmp_path, capsys):
    p = program(LABELS_NOWHERE)
    assert p.plan.disconnected == ()  # not zeros: labels never get a gradient
    p.forward()
    assert set(p.backward()) == {"y", "w"}
    path = tmp_path / "g.graph"
    path.write_text(textwrap.dedent(LABELS_NOWHERE))
    from graphc.cli import main

    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.endswith("  t  none (read only as labels)\n  u  none (read only as labels)\n")


ONE_HOT = """
    graph g {
        input y: [2, 3] = [[1, 2, 3], [0, 0, 1]]
        input t: [2, 3]
        loss = softmax_loss(y, t)
        output loss
    }
"""


@pytest.mark.parametrize(
    "labels, message",
    [
        ([[0, 1, 0], [0, 2, 0]], "input `t`: label rows must sum to 1, row 1 sums to 2"),
        ([[0, 1, 0], [0.5, 0.5, 0.5]], "input `t`: label rows must sum to 1, row 1 sums to 1.5"),
        ([[0, 0, 0], [0, 1, 0]], "input `t`: label rows must sum to 1, row 0 sums to 0"),
        ([[1.5, -0.5, 0], [0, 1, 0]], "input `t`: labels must be non-negative, got -0.5 in row 0"),
        ([[np.nan, 1, 0], [0, 1, 0]], "input `t`: labels must be non-negative, got nan in row 0"),
    ],
)
def test_one_hot_labels_must_be_rows_summing_to_one(labels, message):
    """softmax_loss's gradient softmax(y) - t is its loss's derivative only for such rows."""
    p = program(ONE_HOT)
    with pytest.raises(GraphcError) as err:
        p.forward(t=np.array(labels))
    assert err.value.diagnostics[0].message == message


def test_labels_that_are_probabilities_are_welcome():
    p = program(ONE_HOT)
    smoothed = np.array([[0.05, 0.9, 0.05], [0.1, 0.1, 0.8]])
    p.forward(t=smoothed)
    assert [r.ok for r in check_grads(p, {"t": smoothed})] == [True]
    # Saved in float32, rows are 1 only to about 1e-7: still labels.
    p.forward(t=np.float32([[1, 1, 1], [7, 2, 1]]) / np.float32([[3], [10]]))
    p.forward(t=np.array([[1 / 3] * 3, [0, 0, 1]]))


def test_one_hot_labels_in_the_graph_are_checked(tmp_path):
    with pytest.raises(GraphcError) as err:
        program("""
            graph g {
                input y: [3] = [1, 2, 3]
                loss = softmax_loss(y, [0, -1, 2])
                output loss
            }
        """)
    assert rendered(err) == textwrap.dedent("""\
        p.graph:3:28: error[E402]: literal `[0,-1,2]`: labels must be non-negative, got -1
         3 |     loss = softmax_loss(y, [0, -1, 2])
           |                            ^^^^^^^^^^
        hint: labels shaped like the scores are one-hot rows, or probabilities: non-negative, each row summing to 1""")
    with pytest.raises(GraphcError) as err:
        program("""
            graph g {
                input y: [2, 3] = [[1, 2, 3], [0, 0, 1]]
                input t: [2, 3] = [[0, 1, 0], [1, 1, 0]]
                loss = softmax_loss(y, t)
                output loss
            }
        """)
    assert err.value.diagnostics[0].message == "input `t`: label rows must sum to 1, row 1 sums to 2"
    assert err.value.diagnostics[0].span.line == 3


def test_computed_one_hot_labels_are_checked_once_computed():
    p = program("""
        graph g {
            input y: [2, 3] = [[1, 2, 3], [0, 0, 1]]
            input t: [2, 3] = [[0, 1, 0], [0, 0, 1]]
            t2 = mul(t, 2)
            loss = softmax_loss(y, t2)
            output loss
        }
    """)
    with pytest.raises(GraphcError) as err:
        p.forward()
    assert rendered(err) == textwrap.dedent("""\
        p.graph:5:28: error[E402]: labels `t2` computed by `mul`: label rows must sum to 1, row 0 sums to 2
         5 |     loss = softmax_loss(y, t2)
           |                            ^^
        hint: labels shaped like the scores are one-hot rows, or probabilities: non-negative, each row summing to 1""")

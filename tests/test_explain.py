"""`graphc explain FILE`: the chain rule with numbers. The book's figures (5-16,
5-17) as whole texts, fan-out as sums, `--at` following one element, the JSON,
every op's local derivative against its rule, and the mistakes, whole."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fuzzing.graphs import valid_graphs
from helpers import graphc_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ops import CASES, extras, operand_values

import graphc
from graphc.errors import GraphcError
from graphc.explain import explain, explanation_json, explanation_text, local_value, number_text
from graphc.ops import REGISTRY, Op

MODELS = Path(__file__).resolve().parent.parent / "models"


def text(block: str) -> str:
    return textwrap.dedent(block).lstrip("\n")


def explained(capsys, *argv: object) -> str:
    status, out, err = graphc_cli(capsys, "explain", *argv)
    assert (status, err) == (0, ""), err
    return out


def write(tmp_path: Path, source: str, name: str = "m.graph") -> Path:
    path = tmp_path / name
    path.write_text(text(source))
    return path


# --- the book's figures -----------------------------------------------------------


def test_apple_is_figure_5_16(capsys):
    # The README's numbers: price 220; gradients 2.2 (apple), 110 (apple_num), 200 (tax).
    assert explained(capsys, MODELS / "apple.graph") == text("""
        graph buy_apple

        forward: each node's output from its inputs
          mul  apple_price = apple * apple_num = 100 * 2 = 200
          mul  price = apple_price * tax = 200 * 1.1 = 220

        backward from price: upstream gradient · local derivative = downstream gradient
               d_price = 1
          mul  d_apple_price = d_price · tax = 1 · 1.1 = 1.1
               d_tax = d_price · apple_price = 1 · 200 = 200
          mul  d_apple = d_apple_price · apple_num = 1.1 · 2 = 2.2
               d_apple_num = d_apple_price · apple = 1.1 · 100 = 110
        """)


def test_apple_orange_is_figure_5_17(capsys):
    # 715; the add node hands 1.1 to both branches; gradients 2.2, 110, 3.3, 165, 650.
    assert explained(capsys, MODELS / "apple_orange.graph") == text("""
        graph buy_apple_orange

        forward: each node's output from its inputs
          mul  apple_price = apple * apple_num = 100 * 2 = 200
          mul  orange_price = orange * orange_num = 150 * 3 = 450
          add  all_price = apple_price + orange_price = 200 + 450 = 650
          mul  price = all_price * tax = 650 * 1.1 = 715

        backward from price: upstream gradient · local derivative = downstream gradient
               d_price = 1
          mul  d_all_price = d_price · tax = 1 · 1.1 = 1.1
               d_tax = d_price · all_price = 1 · 650 = 650
          add  d_apple_price = d_all_price · 1 = 1.1 · 1 = 1.1
               d_orange_price = d_all_price · 1 = 1.1 · 1 = 1.1
          mul  d_orange = d_orange_price · orange_num = 1.1 · 3 = 3.3
               d_orange_num = d_orange_price · orange = 1.1 · 150 = 165
          mul  d_apple = d_apple_price · apple_num = 1.1 · 2 = 2.2
               d_apple_num = d_apple_price · apple = 1.1 · 100 = 110
        """)


def test_set_changes_the_numbers(capsys):
    out = explained(capsys, MODELS / "apple.graph", "--set", "apple=150", "--set", "tax=1.08")
    assert "  mul  apple_price = apple * apple_num = 150 * 2 = 300\n" in out
    assert "       d_tax = d_price · apple_price = 1 · 300 = 300\n" in out
    assert "  mul  d_apple = d_apple_price · apple_num = 1.08 · 2 = 2.16\n" in out


def test_float32_prints_the_digits_float32_holds(capsys):
    # 200 * 1.1 is 220.00002 in float32: the figures keep only what rounding leaves alone.
    out = explained(capsys, MODELS / "apple.graph", "--dtype", "float32")
    assert "  mul  price = apple_price * tax = 200 * 1.1 = 220\n" in out


# --- fan-out ----------------------------------------------------------------------


def test_fan_out_is_a_sum_of_shares(capsys):
    # f = x*x + x*y at x = 3, y = 4: x is read three times, df/dx = 2x + y = 10.
    assert explained(capsys, MODELS / "fanout.graph") == text("""
        graph fan_out

        forward: each node's output from its inputs
          mul  square = x * x = 3 * 3 = 9
          mul  xy = x * y = 3 * 4 = 12
          add  f = square + xy = 9 + 12 = 21

        backward from f: upstream gradient · local derivative = downstream gradient
               d_f = 1
          add  d_square = d_f · 1 = 1 · 1 = 1
               d_xy = d_f · 1 = 1 · 1 = 1
          mul  d_x@1 = d_xy · y = 1 · 4 = 4
               d_y = d_xy · x = 1 · 3 = 3
          mul  d_x@2 = d_square · x = 1 · 3 = 3
               d_x@3 = d_square · x = 1 · 3 = 3
               d_x = d_x@1 + d_x@2 + d_x@3 = 4 + 3 + 3 = 10
        """)


def test_every_kind_of_local_derivative(capsys, tmp_path):
    # Quotients, negatives, a mask, a sum after the step that adds its last share.
    path = write(
        tmp_path,
        """
        graph rules {
            input a = 3
            input b = 2
            d = sub(a, b)
            q = div(a, d)
            t = tanh(q)
            r = relu(t)
            s = square(r)
            e = exp(s)
            l = log(e)
            output l
        }
        """,
    )
    assert explained(capsys, path) == text("""
        graph rules

        forward: each node's output from its inputs
          sub     d = a - b = 3 - 2 = 1
          div     q = np.divide(a, d) = np.divide(3, 1) = 3
          tanh    t = np.tanh(q) = np.tanh(3) = 0.9950547537
          relu    r = np.maximum(t, 0) = np.maximum(0.9950547537, 0) = 0.9950547537
          square  s = r * r = 0.9950547537 * 0.9950547537 = 0.9901339628
          exp     e = np.exp(s) = np.exp(0.9901339628) = 2.691595022
          log     l = np.log(e) = np.log(2.691595022) = 0.9901339628

        backward from l: upstream gradient · local derivative = downstream gradient
                  d_l = 1
          log     d_e = d_l · (1 / e) = 1 · 0.3715269169 = 0.3715269169
          exp     d_s = d_e · e = 0.3715269169 · 2.691595022 = 1
          square  d_r = d_s · (2 * r) = 1 · 1.990109507 = 1.990109507
          relu    d_t = d_r · r.mask = 1.990109507 · 1 = 1.990109507
          tanh    d_q = d_t · (1 - t * t) = 1.990109507 · 0.009866037165 = 0.01963449436
          div     d_a@1 = d_q · (1 / d) = 0.01963449436 · 1 = 0.01963449436
                  d_d = d_q · (-q / d) = 0.01963449436 · (-3) = -0.05890348309
          sub     d_a@2 = d_d · 1 = (-0.05890348309) · 1 = -0.05890348309
                  d_b = d_d · (-1) = (-0.05890348309) · (-1) = 0.05890348309
                  d_a = d_a@1 + d_a@2 = 0.01963449436 + (-0.05890348309) = -0.03926898873
        """)


# --- tensors and --at ---------------------------------------------------------------

ELEMENTWISE = """
    graph ew {
        input a: [2, 3]
        input b: [3]
        p = mul(a, b)
        q = mul(p, p)
        s = sum(q)
        output s
    }
    """


def test_at_follows_one_element_through_elementwise_steps(capsys, tmp_path):
    path = write(tmp_path, ELEMENTWISE)
    feeds = ("--set", "a=[[1, 2, 3], [4, 5, 6]]", "--set", "b=[1, -2, 0.5]")
    # Steps that are products of numbers at the element are one line; a
    # broadcast b, a sum and a sum that undoes broadcasting show their tensors.
    assert explained(capsys, path, *feeds, "--at", "1,2") == text("""
        graph ew
        following element [1, 2] of each value it indexes

        forward: each node's output from its inputs
          mul  p = a * b
                 a[1, 2]  6
                 b        f64[3] [1, -2, 0.5]
                 p[1, 2]  3
          mul  q[1, 2] = p[1, 2] * p[1, 2] = 3 * 3 = 9
          sum  s = np.sum(q)
                 q[1, 2]  9
                 s        144.25

        backward from s: upstream gradient · local derivative = downstream gradient
               d_s = 1
          sum  d_q = broadcast_to(d_s, q.shape)
                 d_s        1
                 q[1, 2]    9
                 d_q[1, 2]  1
          mul  d_p@1[1, 2] = d_q[1, 2] · p[1, 2] = 1 · 3 = 3
               d_p@2[1, 2] = d_q[1, 2] · p[1, 2] = 1 · 3 = 3
               d_p[1, 2] = d_p@1[1, 2] + d_p@2[1, 2] = 3 + 3 = 6
          mul  d_a[1, 2] = d_p[1, 2] · b[1, 2] = 6 · 0.5 = 3
               d_b = sum(d_p * a, axis=0)
                 d_p[1, 2]  6
                 a[1, 2]    6
                 d_b        f64[3] [34, -116, 45]
        """)
    # Without --at, tensors by shape and their first entries.
    out = explained(capsys, path, *feeds)
    assert (
        "  mul  d_a = d_p · b\n"
        "         d_p  f64[2, 3] [2, -8, 3, ...]\n"
        "         b    f64[3] [1, -2, 0.5]\n"
        "         d_a  f64[2, 3] [2, 16, 1.5, ...]\n"
    ) in out


def test_at_picks_a_batch_row_of_the_two_layer_net(capsys):
    net = MODELS / "two_layer_net.graph"
    whole = json.loads(explained(capsys, net, "--json"))
    row = json.loads(explained(capsys, net, "--json", "--at", "1"))
    assert row["at"] == [1] and whole["at"] is None
    assert [(s["phase"], s["node"], s["inputs"], s["output"]) for s in row["steps"]] == [
        (s["phase"], s["node"], s["inputs"], s["output"]) for s in whole["steps"]
    ]
    batch = {"x", "t", "affine1", "relu1", "y", "d_y", "d_relu1", "d_affine1", "d_x", "loss.probs", "relu1.mask"}
    seen = set()
    for at_row, full in zip(row["steps"], whole["steps"]):
        for name, value in at_row["values"].items():
            expected = full["values"][name]
            if name in batch:
                seen.add(name)
                expected = expected[1]  # the batch row, of values shaped [N, ...]
            np.testing.assert_array_equal(np.asarray(value), np.asarray(expected), err_msg=name)
    assert seen == batch
    out = explained(capsys, net, "--at", "1")
    assert "following element [1] of each value it indexes\n" in out
    # The rule the op writes, with its tensors; a product of tensors is not printed as numbers.
    assert "  softmax_loss  d_y = d_loss * (softmax(y) - t) / N\n                  d_loss         1\n" in out
    assert "                  W1            f64[784, 50] [" in out  # not a batch: whole
    assert "                  d_x[1]        f64[784] [" in out


def test_tensors_show_shape_and_first_entries():
    assert number_text(np.float64(220.00000000000003)) == "220"
    assert number_text(np.arange(4.0)) == "f64[4] [0, 1, 2, 3]"
    assert number_text(np.arange(6.0).reshape(2, 3)) == "f64[2, 3] [0, 1, 2, ...]"
    assert number_text(np.array([True, False])) == "bool[2] [1, 0]"
    assert number_text(np.array([1.0, np.nan, -np.inf, 0.5])) == "f64[4] [1, nan, -inf, 0.5]"
    assert number_text(np.int64(3)) == "3"


# --- the numbers are the interpreter's ------------------------------------------------


def check_arithmetic(explanation) -> None:
    """What each line claims holds: upstream · local derivative = downstream, and
    a gradient is the sum of its shares (to rounding: the rule may associate differently)."""
    for s in explanation.steps:
        rtol = 1e-5 if np.asarray(s.output.value).dtype == np.float32 else 1e-12
        with np.errstate(all="ignore"):  # inf · 0 is the user's, on both sides
            if s.phase == "backward" and s.product is not None:
                upstream, derivative = (np.asarray(q.value) for q in s.inputs)
                np.testing.assert_allclose(upstream * derivative, s.output.value, rtol=rtol, err_msg=s.rule)
            if s.phase == "sum":
                total = sum(np.asarray(q.value) for q in s.inputs)
                np.testing.assert_allclose(total, s.output.value, rtol=rtol, err_msg=s.rule)


@pytest.mark.parametrize("model", sorted(p.name for p in MODELS.glob("*.graph")))
def test_each_gradient_is_the_runs(model):
    """The last step writing each input's and param's gradient (or its sum) holds
    what program.backward() returned, for every model."""
    program = graphc.compile_file(MODELS / model)
    program.forward()
    grads = program.backward()
    explanation = explain(program)
    final = {s.output.name: s.output.value for s in explanation.steps if s.phase in ("backward", "sum", "seed")}
    for name, grad in grads.items():
        if name in program.plan.disconnected:
            continue
        np.testing.assert_array_equal(final[f"d_{name}"], grad, err_msg=name)
    forward = {s.output.name: s.output.value for s in explanation.steps if s.phase == "forward"}
    for name, value in forward.items():
        np.testing.assert_array_equal(value, program.values[name], err_msg=name)
    check_arithmetic(explanation)
    assert explanation_text(explanation)  # and every model prints


def _op_cases() -> list:
    return [case for case in CASES if case.values[0].name != "conv2d"]  # im2col's are not products: none to check


@pytest.mark.parametrize("op, shapes, attrs", _op_cases())
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_local_derivative_times_upstream_is_the_rule(op: Op, shapes, attrs, mode):
    """Wherever an op's rule reads as upstream times a local derivative, that
    product is what backward computes: the derivative is the rule's own factor."""
    rng = np.random.default_rng(1)
    values = operand_values(op, shapes, rng)
    types = op.types_of(attrs, *values)
    code = op.compile(attrs, types, mode=mode)
    out, saved = code.forward(*values, *extras(op, attrs, values))
    dout = rng.standard_normal(np.shape(out))
    grads = code.backward(saved, dout)
    by_name = dict(zip(op.operands, values))
    by_name["out"] = out
    by_name.update(zip(op.saves_in(mode), saved))
    products = {"mul", "add", "sub", "div", "relu", "sigmoid", "tanh", "exp", "log", "square", "dropout"}
    for i, grad in enumerate(grads):
        local = op.local_derivative(i, attrs, types, mode) if op.differentiable(i) else None
        if op.name in products and types[op.operands[i]].shape == types["out"].shape:
            assert local is not None  # an elementwise op's rule, where nothing was broadcast, is a product
        if local is None:
            continue
        np.testing.assert_allclose(dout * local_value(op, local, attrs, types, mode, by_name), grad, rtol=1e-12)


def test_which_rules_are_products():
    """Matrix products, softmax's and batchnorm's kernels, and sums that undo
    broadcasting are not read as products of numbers."""
    mul, affine, loss = REGISTRY["mul"], REGISTRY["affine"], REGISTRY["softmax_loss"]
    from graphc.ir import TensorType

    same = {"a": TensorType("f64", (2, 3)), "b": TensorType("f64", (2, 3)), "out": TensorType("f64", (2, 3))}
    spread = {**same, "b": TensorType("f64", (3,))}
    assert [mul.local_derivative(i, {}, same) for i in (0, 1)] == ["b", "a"]
    assert [mul.local_derivative(i, {}, spread) for i in (0, 1)] == ["b", None]
    types = affine.types_of({}, np.ones((2, 3)), np.ones((3, 4)), np.ones(4))
    assert [affine.local_derivative(i, {}, types) for i in range(3)] == [None, None, None]
    types = loss.types_of({"reduction": "mean"}, np.ones((2, 3)), np.eye(3)[:2])
    assert loss.local_derivative(0, {"reduction": "mean"}, types) is None
    assert REGISTRY["sigmoid"].local_derivative(0, {}, REGISTRY["sigmoid"].types_of({}, 0.5)) == "out * (1 - out)"


# --- JSON ---------------------------------------------------------------------------


def test_json_is_the_same_steps_as_data(capsys):
    data = json.loads(explained(capsys, MODELS / "fanout.graph", "--json"))
    assert data["graph"] == "fan_out" and data["seed"] == "f" and data["at"] is None
    steps = data["steps"]
    assert steps[0] == {
        "phase": "forward",
        "node": "square",
        "op": "mul",
        "rule": "square = x * x",
        "inputs": ["x", "x"],
        "output": "square",
        "values": {"x": 3.0, "square": 9.0},
    }
    assert steps[3] == {
        "phase": "seed",
        "node": "f",
        "op": None,
        "rule": "d_f = 1",
        "inputs": [],
        "output": "d_f",
        "values": {"d_f": 1.0},
    }
    assert steps[6] == {
        "phase": "backward",
        "node": "xy",
        "op": "mul",
        "rule": "d_x@1 = d_xy * y",
        "product": "d_xy · y",
        "inputs": ["d_xy", "y"],
        "output": "d_x@1",
        "values": {"d_xy": 1.0, "y": 4.0, "d_x@1": 4.0},
    }
    assert steps[-1] == {
        "phase": "sum",
        "node": "x",
        "op": None,
        "rule": "d_x = d_x@1 + d_x@2 + d_x@3",
        "inputs": ["d_x@1", "d_x@2", "d_x@3"],
        "output": "d_x",
        "values": {"d_x@1": 4.0, "d_x@2": 3.0, "d_x@3": 3.0, "d_x": 10.0},
    }
    assert [s["phase"] for s in steps] == ["forward"] * 3 + ["seed"] + ["backward"] * 6 + ["sum"]
    net = json.loads(explained(capsys, MODELS / "two_layer_net.graph", "--json"))
    loss = next(s for s in net["steps"] if s["phase"] == "backward")
    assert (loss["rule"], loss["product"], loss["inputs"]) == (
        "d_y = d_loss * (softmax(y) - t) / N",
        None,
        ["d_loss", "loss.probs", "t"],
    )
    assert np.shape(loss["values"]["d_y"]) == (3, 10)


def test_the_explanation_as_data():
    program = graphc.compile_file(MODELS / "apple.graph")
    program.forward()
    program.backward()
    data = explanation_json(explain(program))
    assert [s["output"] for s in data["steps"]] == [
        "apple_price",
        "price",
        "d_price",
        "d_apple_price",
        "d_tax",
        "d_apple",
        "d_apple_num",
    ]


# --- mistakes -------------------------------------------------------------------------


def cli_error(capsys, *argv: object) -> str:
    status, out, err = graphc_cli(capsys, "explain", *argv)
    assert (status, out) == (2, "")
    return err


@pytest.mark.parametrize(
    "at, message",
    [
        (
            "x",
            """
            <command line>:1:6: error[E502]: --at takes indices such as 0 or 0,3, got `x`
             1 | --at x
               |      ^
            hint: whole numbers of at least 0, one per dim, separated by commas
            """,
        ),
        (
            "0,-1",
            """
            <command line>:1:6: error[E502]: --at takes indices such as 0 or 0,3, got `0,-1`
             1 | --at 0,-1
               |      ^^^^
            hint: whole numbers of at least 0, one per dim, separated by commas
            """,
        ),
        (
            "",
            """
            <command line>:1:6: error[E502]: --at takes indices such as 0 or 0,3, got ``
             1 | --at
               |      ^
            hint: whole numbers of at least 0, one per dim, separated by commas
            """,
        ),
        (
            "3",
            """
            <command line>:1:6: error[E502]: --at 3: index 3 is out of range for dim 0 of `x`, shape [3, 784]
             1 | --at 3
               |      ^
            """,
        ),
        (
            "0,784",
            """
            <command line>:1:6: error[E502]: --at 0,784: index 784 is out of range for dim 1 of `x`, shape [3, 784]
             1 | --at 0,784
               |      ^^^^^
            """,
        ),
        (
            "0,0,0",
            """
            <command line>:1:6: error[E502]: --at 0,0,0 indexes 3 dims, but in graph `two_layer_net` no input or param has more than 2
             1 | --at 0,0,0
               |      ^^^^^
            """,
        ),
    ],
)
def test_bad_at(capsys, at, message):
    assert cli_error(capsys, MODELS / "two_layer_net.graph", "--at", at) == text(message)


def test_at_in_a_graph_of_scalars(capsys):
    assert cli_error(capsys, MODELS / "apple.graph", "--at", "0") == text("""
        <command line>:1:6: error[E502]: --at 0 indexes 1 dim, but in graph `buy_apple` every input and param is a scalar
         1 | --at 0
           |      ^
        """)


def test_file_mistakes(capsys, tmp_path):
    assert cli_error(capsys, tmp_path / "missing.graph") == f"{tmp_path / 'missing.graph'}: error[E601]: no such file\n"
    path = write(tmp_path, "graph g {\n    input x = 1\n    y = mull(x, x)\n    output y\n}\n")
    assert cli_error(capsys, path) == text(f"""
        {path}:3:9: error[E103]: unknown op `mull`
         3 |     y = mull(x, x)
           |         ^^^^
        hint: did you mean `mul`?
        """)
    assert cli_error(capsys, MODELS / "apple.graph", "--set", "appl=3") == text("""
        <command line>:1:7: error[E405]: no input or param named `appl` in graph `buy_apple`
         1 | --set appl=3
           |       ^^^^
        hint: did you mean `apple`?
        """)


def test_explain_needs_a_run():
    program = graphc.compile_file(MODELS / "apple.graph")
    with pytest.raises(GraphcError, match="explain needs a run"):
        explain(program)


def test_help_names_both_targets(capsys):
    with pytest.raises(SystemExit) as exit:
        graphc_cli(capsys, "explain", "--help")
    assert exit.value.code == 0
    words = " ".join(capsys.readouterr().out.split())  # whatever the terminal's width
    assert "TARGET a .graph file, or an error code such as E012" in words


def test_at_with_a_control_character(capsys):
    assert cli_error(capsys, MODELS / "two_layer_net.graph", "--at", "1\n2") == text("""
        <command line>:1:6: error[E502]: --at takes indices such as 0 or 0,3, got `1\\n2`
         1 | --at 1\\n2
           |      ^^^^
        hint: whole numbers of at least 0, one per dim, separated by commas
        """)


@settings(max_examples=40, deadline=None)
@given(valid_graphs(max_nodes=8), st.integers(0, 2))
def test_any_valid_graph_is_explained(graph, position):
    """Generated graphs (the fuzzer's): every one that runs is explained, with
    and without --at, and its gradients are the run's."""
    program = graphc.compile_source(graph.text, "g.graph")
    program.forward(**graph.feeds)
    grads = program.backward()
    explanation = explain(program)
    check_arithmetic(explanation)
    final = {s.output.name: s.output.value for s in explanation.steps}
    for name, grad in grads.items():
        if name not in program.plan.disconnected:
            np.testing.assert_array_equal(final[f"d_{name}"], grad, err_msg=name)
    reference = next((n for n in (*program.plan.inputs, *program.plan.params) if np.ndim(program.values[n])), None)
    if reference is not None:
        at = tuple(min(position, size - 1) for size in np.shape(program.values[reference]))
        for index in (at, at[:1]):
            explanation = explain(program, index)
            assert explanation_text(explanation).startswith(f"graph {program.name}\nfollowing element [")

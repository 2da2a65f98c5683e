"""The ops past chapter 5: tanh, sub, div, exp, log, square, sum and mean.

Each on numbers worked out by hand, in whole graphs (so the attributes go
through elaboration and shape inference as a person writes them): gradients
against central differences over several shapes, broadcasting and a
symbolic batch among them; the generated module against the interpreter,
bit for bit; a plan as a learner reads it; every refusal with its whole
message. Last, weight decay ½λΣW² written by hand as graph ops on the
two-layer net. (The registry-wide tests in test_ops.py, test_reference_math.py
and test_codegen.py cover each op's default attributes as well.)
"""

from __future__ import annotations

import decimal
import math
import textwrap

import numpy as np
import pytest
from test_memory import environment, measure  # the memory tests' own measuring of what is held
from test_reference_math import (  # the 60-digit references, independent of graphc
    CONTEXT,
    REFERENCES,
    assert_close,
    dec,
    printed_rule_value,
    reference_gradient,
    to_float,
)
from test_reference_math import run as run_op

import graphc
from graphc.cli import main
from graphc.codegen import python_module
from graphc.errors import GraphcError
from graphc.memory import bind_dims, predict_memory
from graphc.ops import REGISTRY
from graphc.plan import make_plan
from graphc.program import Program
from graphc.testing import check_grads


def text(block: str) -> str:
    return textwrap.dedent(block).strip("\n")


def compiled(src: str, **kwargs) -> Program:
    return graphc.compile_source(textwrap.dedent(src).lstrip("\n"), "m.graph", **kwargs)


def error(src: str) -> str:
    """The rendered error compiling `src` (as m.graph) raises."""
    with pytest.raises(GraphcError) as info:
        compiled(src)
    return info.value.render()


def one_op(call: str, **inputs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`y = call` over f64 inputs of the given values: y, and each input's gradient of sum(y)."""
    decls = "\n".join(f"    input {n}: f64[{', '.join(map(str, np.shape(v)))}]" for n, v in inputs.items())
    program = compiled(f"graph g {{\n{decls}\n    y = {call}\n    output y\n}}\n")
    y = program.forward(**inputs)["y"]
    return y, program.backward()


# --- forward and backward on numbers worked out by hand -------------------------------


def test_sub_and_its_broadcast_gradient():
    y, grads = one_op("sub(a, b)", a=np.array([[5.0, 7.0], [1.0, 2.0]]), b=np.array([2.0, 3.0]))
    np.testing.assert_array_equal(y, [[3.0, 4.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(grads["a"], np.ones((2, 2)))
    np.testing.assert_array_equal(grads["b"], [-2.0, -2.0])  # minus, summed over the rows it was stretched to


def test_div_and_its_gradients():
    y, grads = one_op("div(a, b)", a=np.array([1.0, 3.0]), b=np.array([4.0, 2.0]))
    np.testing.assert_array_equal(y, [0.25, 1.5])
    np.testing.assert_array_equal(grads["a"], [0.25, 0.5])  # 1/b
    np.testing.assert_array_equal(grads["b"], [-1 / 16, -3 / 4])  # -a/b²


def test_tanh_values_and_its_rule():
    x = np.array([0.0, math.log(2), -math.log(2)])
    y, grads = one_op("tanh(x)", x=x)
    np.testing.assert_allclose(y, [0.0, 0.6, -0.6], rtol=1e-15, atol=0)  # (4 - 1) / (4 + 1)
    np.testing.assert_allclose(grads["x"], [1.0, 0.64, 0.64], rtol=1e-15)  # 1 - tanh²


def test_tanh_saturates_without_nan():
    """np.tanh is ±1 far out; the rule 1 - out² is then 0, never inf/inf."""
    y, grads = one_op("tanh(x)", x=np.array([1000.0, -1000.0, 1e308]))
    np.testing.assert_array_equal(y, [1.0, -1.0, 1.0])
    np.testing.assert_array_equal(grads["x"], [0.0, 0.0, 0.0])


def test_exp_log_and_square():
    y, grads = one_op("exp(x)", x=np.array([0.0, math.log(2)]))
    np.testing.assert_allclose(y, [1.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(grads["x"], [1.0, 2.0], rtol=1e-15)  # exp is its own derivative
    y, grads = one_op("log(x)", x=np.array([1.0, 4.0]))
    np.testing.assert_allclose(y, [0.0, math.log(4)], rtol=1e-15)
    np.testing.assert_array_equal(grads["x"], [1.0, 0.25])
    y, grads = one_op("square(x)", x=np.array([-3.0, 0.5]))
    np.testing.assert_array_equal(y, [9.0, 0.25])
    np.testing.assert_array_equal(grads["x"], [-6.0, 1.0])


SIX = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


@pytest.mark.parametrize(
    "call, expected",
    [
        ("sum(x)", 21.0),
        ("sum(x, axis=0)", [5.0, 7.0, 9.0]),
        ("sum(x, axis=1)", [6.0, 15.0]),
        ("sum(x, axis=-1)", [6.0, 15.0]),
        ("sum(x, axis=-2)", [5.0, 7.0, 9.0]),
        ("sum(x, axis=1, keepdims=true)", [[6.0], [15.0]]),
        ("sum(x, keepdims=true)", [[21.0]]),
        ("mean(x)", 3.5),
        ("mean(x, axis=0)", [2.5, 3.5, 4.5]),
        ("mean(x, axis=1)", [2.0, 5.0]),
        ("mean(x, axis=-1, keepdims=true)", [[2.0], [5.0]]),
    ],
)
def test_reductions(call, expected):
    y, grads = one_op(call, x=SIX)
    np.testing.assert_array_equal(y, expected)
    assert np.shape(y) == np.shape(expected)
    # d sum(y) / dx: every element counts once in a sum, 1/n in a mean of n.
    if call.startswith("sum"):
        each = 1.0
    else:
        each = 1 / {"mean(x)": 6, "mean(x, axis=0)": 2}.get(call, 3)
    np.testing.assert_array_equal(grads["x"], np.full((2, 3), each))


def test_reductions_weigh_each_element_by_its_gradient():
    """Seeded with a gradient that differs per element, each reduced element gets its own slot's."""
    program = compiled("""
        graph g {
            input x: f64[2, 3]
            m = mean(x, axis=1)
            output m
        }
    """)
    program.forward(x=SIX)
    np.testing.assert_array_equal(program.backward(np.array([3.0, -6.0]))["x"], [[1.0] * 3, [-2.0] * 3])


def test_mean_over_the_batch_divides_by_the_batch_fed():
    """N is symbolic: the divisor is the size of the batch fed, read at run time."""
    program = compiled("""
        graph g {
            input x: f64[N, 3]
            m = mean(x, axis=0)
            s = sum(m)
            output s
        }
    """)
    for n in (1, 2, 5):
        x = np.arange(3.0 * n).reshape(n, 3)
        assert program.forward(x=x)["s"] == pytest.approx(x.sum() / n, rel=1e-15)
        np.testing.assert_array_equal(program.backward()["x"], np.full((n, 3), 1 / n))


def test_mean_over_a_symbolic_dim_that_is_not_the_first():
    program = compiled("""
        graph g {
            input x: f64[2, M]
            m = mean(x, axis=-1)
            output m
        }
    """)
    x = np.array([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]])
    np.testing.assert_array_equal(program.forward(x=x)["m"], [3.0, 1.0])
    np.testing.assert_array_equal(program.backward()["x"], np.full((2, 4), 0.25))


def test_a_loss_written_by_hand_equals_softmax_loss():
    """Cross-entropy by hand, -mean(sum(t * log softmax(y), axis=1)), from the new ops."""
    program = compiled("""
        graph g {
            dim N = 4
            input y: f64[N, 3] = uniform(-2, 2)
            input t: f64[N, 3] = onehot from labels
            e = exp(y)
            z = sum(e, axis=1, keepdims=true)
            p = div(e, z)
            lp = log(p)
            tlp = mul(t, lp)
            per_row = sum(tlp, axis=1)
            m = mean(per_row)
            loss = mul(m, -1)
            reference = softmax_loss(y, t)
            output loss, reference
        }
    """)
    outputs = program.forward()
    assert outputs["loss"] == pytest.approx(float(outputs["reference"]), rel=1e-14)
    assert all(check.ok for check in check_grads(program))


# --- reductions over each axis, against 60-digit references ------------------------------


@pytest.mark.parametrize("keepdims", ["false", "true"])
@pytest.mark.parametrize("shape, axis", [((3, 4), 0), ((3, 4), 1), ((3, 4), -1), ((2, 3, 2), 1), ((2, 3, 2), -3)])
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_reductions_over_an_axis_against_the_reference(name, shape, axis, keepdims):
    """Forward, backward and the rule a plan prints (broadcast_to(expand_dims(...)))
    against Decimal arithmetic, for the axes the registry-wide tests (axis left out) do not reach."""
    op, attrs = REGISTRY[name], {"axis": axis, "keepdims": keepdims}
    rng = np.random.default_rng(len(shape) * 10 + axis + (keepdims == "true"))
    x = rng.standard_normal(shape)
    with decimal.localcontext(CONTEXT):
        out, _ = run_op(op, attrs, [x])
        assert_close(out, to_float(REFERENCES[name](attrs, dec(x))), 1e-15, "forward")
        dout = rng.standard_normal(np.shape(out))
        _, (grad,) = run_op(op, attrs, [x], dout)
        expected = reference_gradient(op, attrs, [x], 0, dout)
        assert_close(grad, expected, 1e-13, "backward")
        _, saved = op.compile(attrs, op.types_of(attrs, x)).forward(x)
        assert_close(printed_rule_value(op, attrs, [x], out, saved, dout, 0), expected, 1e-13, "printed rule")


# --- gradients against central differences ---------------------------------------------

# (declarations, the value differentiated): f64 inputs made up by their initializers,
# then y weighed by a fixed random w, so that a rule wrong for one element shows.
GRAD_CASES = {
    "sub": ("input a: f64[N, 3] = normal(1)\ninput b: f64[3] = normal(1)", "sub(a, b)"),
    "sub-scalar": ("input a: f64 = normal(1)\ninput b: f64[N, 2] = normal(1)", "sub(a, b)"),
    "sub-stretched": ("input a: f64[N, 1, 3] = normal(1)\ninput b: f64[2, 1] = normal(1)", "sub(a, b)"),
    "div": ("input a: f64[N, 3] = normal(1)\ninput b: f64[3] = uniform(0.5, 2)", "div(a, b)"),
    "div-stretched": ("input a: f64[N, 1, 3] = normal(1)\ninput b: f64[2, 1] = uniform(-2, -0.5)", "div(a, b)"),
    "div-scalar": ("input a: f64[N, 3] = normal(1)\ninput b: f64 = uniform(0.5, 2)", "div(a, b)"),
    "tanh": ("input x: f64[N, 3] = normal(2)", "tanh(x)"),
    "tanh-3d": ("input x: f64[N, 2, 3] = normal(1)", "tanh(x)"),
    "exp": ("input x: f64[N, 3] = normal(1)", "exp(x)"),
    "log": ("input x: f64[N, 3] = uniform(0.2, 3)", "log(x)"),
    "square": ("input x: f64[N, 2, 3] = normal(1)", "square(x)"),
    "sum": ("input x: f64[N, 3] = normal(1)", "sum(x)"),
    "sum-0": ("input x: f64[N, 3] = normal(1)", "sum(x, axis=0)"),
    "sum-1": ("input x: f64[N, 2, 3] = normal(1)", "sum(x, axis=1)"),
    "sum-last-kept": ("input x: f64[N, 2, 3] = normal(1)", "sum(x, axis=-1, keepdims=true)"),
    "sum-1d": ("input x: f64[N] = normal(1)", "sum(x, axis=0)"),
    "mean": ("input x: f64[N, 3] = normal(1)", "mean(x)"),
    "mean-batch": ("input x: f64[N, 3] = normal(1)", "mean(x, axis=0)"),
    "mean-batch-kept": ("input x: f64[N, 3] = normal(1)", "mean(x, axis=-2, keepdims=true)"),
    "mean-1": ("input x: f64[N, 2, 3] = normal(1)", "mean(x, axis=1)"),
    "mean-all-kept": ("input x: f64[N, 2, 3] = normal(1)", "mean(x, keepdims=true)"),
}


def weighed_program(name: str, batch: int) -> Program:
    """The case's program: loss = sum(y * w), w made up at random in y's type (the batch N too)."""
    decls, call = GRAD_CASES[name]
    head = f"graph g {{\n    dim N = {batch}\n{textwrap.indent(decls, '    ')}\n    y = {call}\n"
    y_type = compiled(head + "    output y\n}\n").types["y"]
    return compiled(
        head + f"    input w: {y_type} = normal(1)\n    yw = mul(y, w)\n    loss = sum(yw)\n    output loss\n}}\n"
    )


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradients_match_central_differences(name, batch):
    program = weighed_program(name, batch)
    checks = check_grads(program)
    assert checks and all(check.ok for check in checks), checks


# --- the generated module computes what the interpreter computes, bit for bit ------------


def _import(source: str):
    namespace: dict = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_generated_code_equals_the_interpreter(name):
    program = weighed_program(name, 3)
    outputs = program.forward()
    grads = program.backward()
    module = _import(python_module(program.compiled))
    feeds = {n: program.values[n] for n in program.input_names}
    generated, saved = module["forward"]({}, **feeds)
    assert set(generated) == set(outputs)
    for key in outputs:
        np.testing.assert_array_equal(generated[key], outputs[key], strict=True)
    generated_grads = module["backward"]({}, saved)
    assert set(generated_grads) == set(grads)
    for key in grads:
        np.testing.assert_array_equal(generated_grads[key], grads[key], strict=True)


def test_reductions_in_float32_stay_float32():
    program = compiled(
        """
        graph g {
            input x: f32[N, 3]
            m = mean(x, axis=0)
            m -> square -> sum -> s
            output s
        }
        """,
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = program.forward(x=x)["s"]
    assert np.asarray(s).dtype == np.float32
    assert program.backward()["x"].dtype == np.float32
    np.testing.assert_array_equal(program.backward()["x"], np.array([[1.5, 2.5, 3.5]] * 2, np.float32))


# --- the plan as a learner reads it -------------------------------------------------------


def test_plan_of_a_mean_over_the_batch(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text(
        text("""
            graph g {
                input x: f64[N, 4]
                input c: f64[4]
                d = sub(x, c)
                q = div(d, c)
                h = tanh(q)
                h -> square -> sum(axis=1) -> s
                m = mean(s)
                output m
            }
        """)
        + "\n"
    )
    assert main(["compile", str(path)]) == 0
    plan = text("""
        graph g

        forward (6 steps)
          1  d = sub(x, c)             f64[N, 4]
          2  q = div(d, c)             f64[N, 4]  saves c, q     frees d
          3  h = tanh(q)               f64[N, 4]  saves h        frees q
          4  square1 = square(h)       f64[N, 4]  saves h        frees h
          5  s = sum(square1, axis=1)  f64[N]     saves square1  frees square1
          6  m = mean(s)               f64        saves s        frees s

        backward from m (6 steps, seeded with d_m = 1)
          6  mean    d_s = broadcast_to(d_m / N, s.shape)                          reads s
          5  sum     d_square1 = broadcast_to(expand_dims(d_s, 1), square1.shape)  reads square1
          4  square  d_h = d_square1 * 2 * h                                       reads h
          3  tanh    d_q = d_h * (1 - h * h)                                       reads h
          2  div     d_d = d_q / c                                                 reads c
                     d_c = sum(-d_q * q / c, axis=0)                               reads q, c
          1  sub     d_x = d_d
                     d_c += sum(-d_d, axis=0)

        gradients: d_x, d_c
    """)
    assert capsys.readouterr().out == plan + "\n"


def test_diagrams_draw_sub_and_div_as_the_book_does(tmp_path):
    path = tmp_path / "m.graph"
    path.write_text(
        "graph g {\n    input a = 6\n    input b = 3\n    d = sub(a, b)\n    q = div(d, b)\n    output q\n}\n"
    )
    out = tmp_path / "m.dot"
    assert main(["draw", str(path), "-o", str(out)]) == 0
    dot = out.read_text()
    assert ">−<" in dot and ">÷<" in dot


# Every new op in one graph, with a symbolic batch, for the memory and time commands.
EVERY_OP = """
graph g {
    dim N = 3
    input x: f64[N, 4] = uniform(-1, 1)
    input c: f64[4] = uniform(0.5, 2)
    d = sub(x, c)
    q = div(d, c)
    h = tanh(q)
    e = exp(h)
    l = log(e)
    sq = square(l)
    r = sum(sq, axis=1, keepdims=true)
    m = mean(r)
    output m
}
"""


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predicted_memory_is_what_the_interpreter_holds(batch, dtype):
    program = compiled(EVERY_OP, dtype=dtype)
    plan = make_plan(program.checked, program.types)
    dims = bind_dims(plan, program.ir, batch)
    predicted = predict_memory(plan, dims)
    held = measure(plan, environment(program, dims, np.dtype(dtype)))
    assert [step.held for step in predicted.steps] == held


def test_time_runs_every_new_op(tmp_path, capsys):
    """No figures compared (they are the clock's); every node has its row."""
    path = tmp_path / "m.graph"
    path.write_text(textwrap.dedent(EVERY_OP))
    assert main(["time", str(path), "--iters", "2", "--warmup", "1", "--batch", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("------")) + 1 :]
    rows = {line.split()[0]: line.split()[1] for line in table[: table.index("")]}
    assert rows == {
        "d": "sub", "q": "div", "h": "tanh", "e": "exp", "l": "log", "sq": "square", "r": "sum", "m": "mean"
    }  # fmt: skip


def test_div_of_weak_scalars_by_zero_is_inf_not_an_internal_error():
    """1 / 0 of two Python floats raises in Python; as numpy does for arrays, it is inf."""
    program = compiled("""
        graph g {
            q = div(1, 0)
            n = div(0, 0)
            output q, n
        }
    """)
    outputs = program.forward()
    assert outputs["q"] == math.inf and math.isnan(outputs["n"])


# --- refusals, with their whole messages ------------------------------------------------


def test_an_axis_out_of_range_is_refused_at_the_attribute():
    assert error("""
        graph g {
            input x: f64[N, 784]
            s = sum(x, axis=2)
            output s
        }
    """) == text("""
        m.graph:3:21: error[E204]: axis 2 is out of range for `x` [N, 784]
         3 |     s = sum(x, axis=2)
           |                     ^
        hint: `x` has 2 axes: 0 to 1, or -2 to -1 from the end
    """)


def test_a_negative_axis_out_of_range_is_refused():
    assert error("""
        graph g {
            input x: f64[5]
            x -> mean(axis=-2) -> m
            output m
        }
    """) == text("""
        m.graph:3:20: error[E204]: axis -2 is out of range for `x` [5]
         3 |     x -> mean(axis=-2) -> m
           |                    ^^
        hint: `x` has 1 axis: 0 to 0, or -1 to -1 from the end
    """)


def test_an_axis_of_a_scalar_is_refused():
    assert error("""
        graph g {
            input x = 2
            s = sum(x, axis=0)
            output s
        }
    """) == text("""
        m.graph:3:21: error[E204]: axis 0 is out of range for `x` []
         3 |     s = sum(x, axis=0)
           |                     ^
        hint: `x` is a scalar: leave `axis` out
    """)


@pytest.mark.parametrize(
    "value, written",
    [("1.5", "1.5"), ("1e0", "1e0"), ("[0, 1]", "[0, 1]"), ("rows", "rows"), ('"0"', '"0"')],
)
def test_an_axis_must_be_a_whole_number(value, written):
    column = 22
    assert error(f"""
        graph g {{
            input x: f64[2, 3]
            m = mean(x, axis={value})
            output m
        }}
    """) == text(f"""
        m.graph:3:{column}: error[E107]: `axis` of `mean` must be a whole number, got `{written}`
         3 |     m = mean(x, axis={value})
           |                      {"^" * len(value)}
    """)


def test_keepdims_is_true_or_false():
    assert error("""
        graph g {
            input x: f64[2, 3]
            s = sum(x, keepdims=yes)
            output s
        }
    """) == text("""
        m.graph:3:25: error[E107]: `keepdims` of `sum` must be one of `false`, `true`, got `yes`
         3 |     s = sum(x, keepdims=yes)
           |                         ^^^
    """)


def test_a_reduction_takes_one_operand():
    assert error("""
        graph g {
            input x: f64[2, 3]
            input y: f64[2, 3]
            s = sum(x, y)
            output s
        }
    """) == text("""
        m.graph:4:9: error[E106]: wrong number of arguments: `sum` takes 1 (x), got 2
         4 |     s = sum(x, y)
           |         ^^^^^^^^^
        hint: write `sum(x)`
    """)


def test_sub_takes_two_operands():
    assert error("""
        graph g {
            input x: f64[2, 3]
            d = sub(x)
            output d
        }
    """) == text("""
        m.graph:3:9: error[E106]: wrong number of arguments: `sub` takes 2 (a, b), got 1
         3 |     d = sub(x)
           |         ^^^^^^
        hint: write `sub(a, b)`, or `-> sub(b)` in a chain
    """)


def test_div_of_shapes_that_do_not_broadcast():
    assert error("""
        graph g {
            input x: f64[N, 4]
            input y: f64[5]
            q = div(x, y)
            output q
        }
    """) == text("""
        m.graph:4:16: error[E201]: shape mismatch in `div`: cannot broadcast `x` [N, 4] with `y` [5] (dim 4 vs 5)
         4 |     q = div(x, y)
           |                ^
        hint: input `y` is declared f64[5] at line 3
    """)


def test_exp_of_integers_is_refused():
    assert error("""
        graph g {
            input k: i64[3]
            e = exp(k)
            output e
        }
    """) == text("""
        m.graph:3:13: error[E203]: `exp` needs a float operand, `k` is i64
         3 |     e = exp(k)
           |             ^
        hint: input `k` is declared i64[3] at line 2
    """)


def test_mixed_float_dtypes_in_sub_are_refused():
    assert error("""
        graph g {
            input a: f32[3]
            input b: f64[3]
            d = sub(a, b)
            output d
        }
    """) == text("""
        m.graph:4:16: error[E203]: dtype mismatch in `sub`: `a` is f32, `b` is f64
         4 |     d = sub(a, b)
           |                ^
        hint: input `b` is declared f64[3] at line 3
    """)


def test_the_command_line_refuses_a_bad_axis_with_status_2(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text("graph g {\n    input x: f64[2, 3]\n    s = sum(x, axis=3)\n    output s\n}\n")
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"{path}:3:21: error[E204]: axis 3 is out of range for `x` [2, 3]\n" in captured.err


# --- weight decay, by hand, on the two-layer net -----------------------------------------

# The book's two-layer net (chapter 5) at a size central differences can go
# over, with the book's L2 penalty (chapter 6) written as graph ops:
# loss = softmax_loss(y, t) + ½λ(ΣW1² + ΣW2²).
TWO_LAYER = """
graph two_layer_net {
    dim N = 4
    input x: f64[N, 6] = uniform(0, 1) from images
    input t: f64[N, 3] = onehot from labels
    param W1: [6, 5] = normal(0.5)
    param b1: [5] = normal(0.1)
    param W2: [5, 3] = normal(0.5)
    param b2: [3] = normal(0.1)

    x -> affine(W1, b1) -> relu -> affine(W2, b2) -> y
    data_loss = softmax_loss(y, t)
    PENALTY
    output loss
}
"""

PENALTY = """
    const half_lambda = 0.05
    W1 -> square -> sum -> s1
    W2 -> square -> sum -> s2
    s = add(s1, s2)
    penalty = mul(half_lambda, s)
    loss = add(data_loss, penalty)
"""


def test_weight_decay_by_hand_adds_lambda_w_to_each_weights_gradient():
    decayed = compiled(TWO_LAYER.replace("PENALTY", PENALTY), seed=3)
    plain = compiled(TWO_LAYER.replace("PENALTY", "loss = add(data_loss, 0)"), seed=3)
    feeds = plain.default_feeds()
    loss = float(decayed.forward(**feeds)["loss"])
    data_loss = float(plain.forward(**feeds)["loss"])
    params = dict(plain.params)
    penalty = 0.5 * 0.1 * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2))
    assert loss == pytest.approx(data_loss + penalty, rel=1e-14)
    with_decay, without = decayed.backward(), plain.backward()
    for w in ("W1", "W2"):
        np.testing.assert_allclose(with_decay[w], without[w] + 0.1 * params[w], rtol=1e-13, atol=1e-15)
    for b in ("b1", "b2"):  # biases are not decayed
        np.testing.assert_array_equal(with_decay[b], without[b])
    checks = check_grads(decayed, feeds)
    assert {c.name for c in checks} >= {"W1", "b1", "W2", "b2"}
    assert all(c.ok for c in checks), checks

"""Every mistake a person can make, with its whole rendered message: the
location, the message, the source line, the caret and the hint. The command
line prints the same text and exits 2, never with a traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.cli import main
from graphc.errors import GraphcError, did_you_mean

MODELS = Path(__file__).resolve().parent.parent / "models"


def text(block: str) -> str:
    return textwrap.dedent(block).strip("\n")


def source(block: str) -> str:
    return textwrap.dedent(block).lstrip("\n")


def error(src: str) -> str:
    """The rendered error compiling `src` (as m.graph) raises."""
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(source(src), "m.graph")
    return info.value.render()


def warnings_of(src: str) -> str:
    program = graphc.compile_source(source(src), "m.graph")
    return "\n".join(d.render() for d in program.compiled.warnings)


def cli_error(argv: list[str], capsys) -> str:
    """stderr of a command that must fail with status 2 and no traceback."""
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2, captured
    assert "Traceback" not in captured.err
    assert captured.out == ""
    return captured.err.rstrip("\n")


# --- syntax --------------------------------------------------------------------


def test_syntax_error_says_what_was_expected():
    assert error("""
        graph g {
            input x = 1
            y = relu x
            output y
        }
    """) == text("""
        m.graph:3:14: error[E002]: unexpected `x`; expected `(`
         3 |     y = relu x
           |              ^
        hint: ops are called with parentheses, e.g. `y = relu(x)`
    """)


def test_syntax_error_for_an_unclosed_call():
    assert error("""
        graph g {
            input x = 1
            y = relu(x
            output y
        }
    """) == text("""
        m.graph:4:5: error[E002]: unexpected `output`; expected `)`, `,` or `=`
         4 |     output y
           |     ^^^^^^
        hint: a `(` is not closed: is a `)` missing at the end of the line before?
    """)


def test_syntax_error_lists_only_what_can_really_come_next():
    assert error("""
        graph g {
            input x = 1 2
        }
    """) == text("""
        m.graph:2:17: error[E002]: unexpected `2`; expected `from`, `}` or the end of the line
         2 |     input x = 1 2
           |                 ^
    """)


def test_semicolon():
    assert error("""
        graph g {
            input x = 1;
            output x
        }
    """) == text("""
        m.graph:2:16: error[E001]: unexpected character `;`
         2 |     input x = 1;
           |                ^
        hint: statements end at the end of the line; no `;` is needed
    """)


def test_two_statements_on_one_line(tmp_path, capsys):
    path = tmp_path / "one_line.graph"
    path.write_text("graph g { input x = 2 y = relu(x) output y }\n")
    assert cli_error(["check", str(path)], capsys) == text(f"""
        {path}:1:23: error[E002]: two statements on one line
         1 | graph g {{ input x = 2 y = relu(x) output y }}
           |                       ^
        hint: put each statement on its own line
    """)


def test_a_keyword_after_a_statement_on_its_line():
    assert error("""
        graph g {
            input x = 2
            y = relu(x) output y
        }
    """) == text("""
        m.graph:3:17: error[E002]: two statements on one line
         3 |     y = relu(x) output y
           |                 ^^^^^^
        hint: put each statement on its own line
    """)


def test_a_statement_broken_over_two_lines():
    assert error("""
        graph g {
            input x
                : f64[3]
            output x
        }
    """) == text("""
        m.graph:3:9: error[E002]: unexpected `:`; expected a statement or `}`
         3 |         : f64[3]
           |         ^
        hint: a statement ends at the end of its line; it goes on to the next only inside `( )` or `[ ]`, \
or where the next line starts with `->`
    """)


def test_an_arrow_that_continues_no_chain():
    assert error("""
        graph g {
            input x = 2
            h = relu(x)
              -> y
            output y
        }
    """) == text("""
        m.graph:4:7: error[E002]: `->` at the start of a line continues a chain, but the statement before is not one
         4 |       -> y
           |       ^^
        hint: a chain reads `x -> relu -> h`; `h = relu(x)` ends at the end of its line
    """)


def test_an_arrow_after_a_call():
    assert error("""
        graph g {
            input x = 2
            h = relu(x) -> y
            output y
        }
    """) == text("""
        m.graph:3:17: error[E002]: unexpected `->`; expected `}` or the end of the line
         3 |     h = relu(x) -> y
           |                 ^^
        hint: `->` links the steps of a chain, e.g. `x -> relu -> h`
    """)


def test_missing_closing_brace_at_end_of_file():
    assert error("""
        graph g {
            input x = 1
            output x
    """) == text("""
        m.graph:3:13: error[E003]: unexpected end of file; expected a statement or `}`
         3 |     output x
           |             ^
        hint: every `graph NAME {` needs a closing `}`
    """)


def test_missing_closing_brace_before_the_next_graph():
    assert error("""
        graph a {
            input x = 1
            output x

        graph b {
            input x = 1
            output x
        }
    """) == text("""
        m.graph:5:1: error[E004]: graph `a` is not closed before graph `b` starts
         5 | graph b {
           | ^^^^^
        hint: add `}` at the end of graph `a`
    """)


def test_expectation_with_a_single_equals():
    assert error("""
        graph g {
            input x = 1
            output x
            expect x = 1
        }
    """) == text("""
        m.graph:4:14: error[E002]: unexpected `=`; expected `==`
         4 |     expect x = 1
           |              ^
        hint: an expectation compares with `==`, e.g. `expect price == 220`
    """)


def test_empty_file():
    assert error("") == text("""
        m.graph:1:1: error[E003]: unexpected end of file; expected `block`, `graph` or `import`
         1 |
           | ^
    """)


# --- names and ops -------------------------------------------------------------------


def test_unknown_op_suggests_the_closest():
    assert error("""
        graph g {
            input x = 1
            y = rleu(x)
            output y
        }
    """) == text("""
        m.graph:3:9: error[E103]: unknown op `rleu`
         3 |     y = rleu(x)
           |         ^^^^
        hint: did you mean `relu`?
    """)


def test_unknown_op_with_nothing_close_lists_the_ops():
    assert error("""
        graph g {
            input x = 1
            y = lstm(x)
            output y
        }
    """) == text("""
        m.graph:3:9: error[E103]: unknown op `lstm`
         3 |     y = lstm(x)
           |         ^^^^
        hint: ops: mul, add, relu, sigmoid, affine, softmax_loss, sub, div, tanh, exp, log, square, sum, mean, dropout, batchnorm, conv2d, max_pool, flatten, avg_pool
    """)


def test_unknown_op_in_a_chain():
    assert error("""
        graph g {
            input x = 1
            x -> sigmiod -> y
            output y
        }
    """) == text("""
        m.graph:3:10: error[E103]: unknown op `sigmiod`
         3 |     x -> sigmiod -> y
           |          ^^^^^^^
        hint: did you mean `sigmoid`?
    """)


def test_wrong_number_of_arguments():
    assert error("""
        graph g {
            input x = 1
            y = mul(x)
            output y
        }
    """) == text("""
        m.graph:3:9: error[E106]: wrong number of arguments: `mul` takes 2 (a, b), got 1
         3 |     y = mul(x)
           |         ^^^^^^
        hint: write `mul(a, b)`, or `-> mul(b)` in a chain
    """)


def test_wrong_number_of_arguments_in_a_chain():
    assert error("""
        graph g {
            input x: [2, 3]
            param W: [3, 4] = zeros
            x -> affine(W) -> y
            output y
        }
    """) == text("""
        m.graph:4:10: error[E106]: wrong number of arguments: `affine` takes 3 (x, W, b), got 1 plus the value piped in by `->`
         4 |     x -> affine(W) -> y
           |          ^^^^^^^^^
        hint: write `affine(x, W, b)`, or `-> affine(W, b)` in a chain
    """)


def test_unknown_attribute():
    assert error("""
        graph g {
            input y: [2, 3]
            input t: [2, 3]
            loss = softmax_loss(y, t, reduce=sum)
            output loss
        }
    """) == text("""
        m.graph:4:31: error[E104]: unknown attribute `reduce` for `softmax_loss`
         4 |     loss = softmax_loss(y, t, reduce=sum)
           |                               ^^^^^^
        hint: did you mean `reduction`?
    """)


def test_attribute_of_an_op_that_takes_none():
    assert error("""
        graph g {
            input x = 1
            y = relu(x, slope=0.1)
            output y
        }
    """) == text("""
        m.graph:3:17: error[E104]: unknown attribute `slope` for `relu`
         3 |     y = relu(x, slope=0.1)
           |                 ^^^^^
        hint: `relu` takes no attributes
    """)


def test_attribute_value_not_among_the_choices():
    assert error("""
        graph g {
            input y: [2, 3]
            input t: [2, 3]
            loss = softmax_loss(y, t, reduction=summ)
            output loss
        }
    """) == text("""
        m.graph:4:41: error[E107]: `reduction` of `softmax_loss` must be one of `mean`, `sum`, got `summ`
         4 |     loss = softmax_loss(y, t, reduction=summ)
           |                                         ^^^^
        hint: did you mean `sum`?
    """)


def test_undefined_name_suggests_the_closest():
    assert error("""
        graph g {
            input apple = 100
            price = mul(aple, 2)
            output price
        }
    """) == text("""
        m.graph:3:17: error[E101]: undefined name `aple`
         3 |     price = mul(aple, 2)
           |                 ^^^^
        hint: did you mean `apple`?
    """)


def test_duplicate_definition():
    assert error("""
        graph g {
            input x = 1
            y = relu(x)
            y = sigmoid(x)
            output y
        }
    """) == text("""
        m.graph:4:5: error[E102]: duplicate definition of `y`
         4 |     y = sigmoid(x)
           |     ^
        hint: `y` is first defined at line 3; pick another name
    """)


def test_duplicate_graph():
    assert error("""
        graph g {
            input x = 1
            output x
        }
        graph g {
            input x = 1
            output x
        }
    """) == text("""
        m.graph:5:7: error[E102]: duplicate definition of graph `g`
         5 | graph g {
           |       ^
        hint: `g` is first defined at line 1; pick another name
    """)


def test_cycle_shows_its_path_through_the_source():
    assert error("""
        graph g {
            input x = 1
            a = add(x, c)
            b = mul(a, x)
            c = relu(b)
            output c
        }
    """) == text("""
        m.graph:3:5: error[E301]: cycle: `a` -> `b` -> `c` -> `a`
         3 |     a = add(x, c)
           |     ^^^^^^^^^^^^^
         4 |     b = mul(a, x)
           |     ^^^^^^^^^^^^^
         5 |     c = relu(b)
           |     ^^^^^^^^^^^
        hint: a value cannot depend on itself; break the loop by reading an input or param instead
    """)


def test_a_node_that_reads_itself_is_a_cycle():
    assert error("""
        graph g {
            input x = 1
            a = add(x, a)
            output a
        }
    """) == text("""
        m.graph:3:5: error[E301]: cycle: `a` -> `a`
         3 |     a = add(x, a)
           |     ^^^^^^^^^^^^^
        hint: a value cannot depend on itself; break the loop by reading an input or param instead
    """)


def test_output_not_defined():
    assert error("""
        graph g {
            input x = 1
            price = relu(x)
            output prise
        }
    """) == text("""
        m.graph:4:12: error[E101]: output `prise` is not defined
         4 |     output prise
           |            ^^^^^
        hint: did you mean `price`?
    """)


def test_no_output():
    assert error("""
        graph g {
            input x = 1
            y = relu(x)
        }
    """) == text("""
        m.graph:1:7: error[E302]: graph `g` has no output
         1 | graph g {
           |       ^
        hint: add `output NAME` for the value to compute; backward starts from the first output
    """)


def test_expectation_about_an_undefined_name():
    assert error("""
        graph g {
            input x = 1
            y = relu(x)
            output y
            expect grad(z) == 1
        }
    """) == text("""
        m.graph:5:17: error[E101]: undefined name `z`
         5 |     expect grad(z) == 1
           |                 ^
    """)


def test_all_errors_of_a_stage_are_reported_together_in_source_order():
    assert error("""
        graph g {
            input x = 1
            a = relu(q)
            output b
        }
        graph h {
            input x = 1
            y = relu(z)
            output y
        }
    """) == text("""
        m.graph:3:14: error[E101]: undefined name `q`
         3 |     a = relu(q)
           |              ^
        m.graph:4:12: error[E101]: output `b` is not defined
         4 |     output b
           |            ^
        m.graph:8:14: error[E101]: undefined name `z`
         8 |     y = relu(z)
           |              ^
    """)


def test_op_errors_come_before_name_errors():
    # Names are checked once every op is known: the unknown op is reported
    # first, the undefined name in the other graph on the next try.
    assert error("""
        graph g {
            input x = 1
            a = relu(q)
            output a
        }
        graph h {
            input x = 1
            y = rleu(x)
            z = sigmod(y)
            output z
        }
    """) == text("""
        m.graph:8:9: error[E103]: unknown op `rleu`
         8 |     y = rleu(x)
           |         ^^^^
        hint: did you mean `relu`?
        m.graph:9:9: error[E103]: unknown op `sigmod`
         9 |     z = sigmod(y)
           |         ^^^^^^
        hint: did you mean `sigmoid`?
    """)


# --- declarations ----------------------------------------------------------------


def test_unknown_initializer():
    assert error("""
        graph g {
            param W: [2, 3] = glorot
            output W
        }
    """) == text("""
        m.graph:2:23: error[E108]: unknown initializer `glorot`
         2 |     param W: [2, 3] = glorot
           |                       ^^^^^^
        hint: initializers: zeros, ones, normal, uniform, he, xavier, onehot
    """)


def test_initializer_with_the_wrong_numbers():
    assert error("""
        graph g {
            param W: [2, 3] = uniform(1)
            output W
        }
    """) == text("""
        m.graph:2:23: error[E109]: initializer `uniform` takes 2 numbers, got 1
         2 |     param W: [2, 3] = uniform(1)
           |                       ^^^^^^^^^^
        hint: write `uniform(low, high)`
    """)


def test_param_without_initializer():
    assert error("""
        graph g {
            param W: [2, 3]
            output W
        }
    """) == text("""
        m.graph:2:5: error[E110]: param `W` has no initializer
         2 |     param W: [2, 3]
           |     ^^^^^^^^^^^^^^^
        hint: add one, e.g. `= normal(0.01)`, `= zeros` or `= he`
    """)


def test_literal_that_does_not_fit_its_declared_shape():
    assert error("""
        graph g {
            input x: [2, 3] = [1, 2]
            output x
        }
    """) == text("""
        m.graph:2:23: error[E207]: value of `x` has shape [2], declared [2, 3]
         2 |     input x: [2, 3] = [1, 2]
           |                       ^^^^^^
    """)


def test_made_up_input_needs_a_size_for_its_symbolic_dim():
    assert error("""
        graph g {
            input x: [N, 3] = normal(1)
            output x
        }
    """) == text("""
        m.graph:2:23: error[E208]: input `x` is made up by `normal(1)` but dim `N` has no size
         2 |     input x: [N, 3] = normal(1)
           |                       ^^^^^^^^^
        hint: declare one in the graph, e.g. `dim N = 2`
    """)


def test_unknown_data_role():
    assert error("""
        graph g {
            input x: [2, 3] = zeros from image
            output x
        }
    """) == text("""
        m.graph:2:34: error[E112]: unknown data role `image`
         2 |     input x: [2, 3] = zeros from image
           |                                  ^^^^^
        hint: did you mean `images`?
    """)


def test_ragged_list():
    assert error("""
        graph g {
            input x = [[1, 2], [3]]
            output x
        }
    """) == text("""
        m.graph:2:15: error[E211]: ragged list: every row must have the same length
         2 |     input x = [[1, 2], [3]]
           |               ^^^^^^^^^^^^^
    """)


# --- shapes and dtypes -------------------------------------------------------------


def test_shape_mismatch_names_both_shapes_and_both_operands():
    assert error("""
        graph g {
            input x: [3, 4]
            input y: [3, 5]
            z = add(x, y)
            output z
        }
    """) == text("""
        m.graph:4:16: error[E201]: shape mismatch in `add`: cannot broadcast `x` [3, 4] with `y` [3, 5] (dim 4 vs 5)
         4 |     z = add(x, y)
           |                ^
        hint: input `y` is declared f64[3, 5] at line 3
    """)


def test_affine_shape_mismatch():
    assert error("""
        graph g {
            input x: f64[N, 784]
            param W1: [748, 50] = normal(0.01)
            param b1: [50] = zeros
            h = affine(x, W1, b1)
            output h
        }
    """) == text("""
        m.graph:5:19: error[E201]: shape mismatch in `affine`: `x` has 784 features, `W1` expects 748 (`x` is [N, 784], `W1` is [748, 50])
         5 |     h = affine(x, W1, b1)
           |                   ^^
        hint: param `W1` is declared f64[748, 50] at line 3
    """)


def test_bias_that_does_not_fit():
    assert error("""
        graph g {
            input x: [4, 3]
            param W: [3, 5] = zeros
            param b: [4] = zeros
            h = affine(x, W, b)
            output h
        }
    """) == text("""
        m.graph:5:22: error[E201]: shape mismatch in `affine`: bias `b` [4] does not fit x·W [4, 5]
         5 |     h = affine(x, W, b)
           |                      ^
        hint: param `b` is declared f64[4] at line 4
    """)


def test_labels_that_fit_neither_form():
    assert error("""
        graph g {
            input y: [N, 10]
            input t: [N, 9]
            loss = softmax_loss(y, t)
            output loss
        }
    """) == text("""
        m.graph:4:28: error[E201]: shape mismatch in `softmax_loss`: labels `t` [N, 9] fit neither one-hot [N, 10] nor class indices [N] for scores `y`
         4 |     loss = softmax_loss(y, t)
           |                            ^
        hint: input `t` is declared f64[N, 9] at line 3
    """)


def test_dtype_mismatch():
    assert error("""
        graph g {
            input x: f32[3]
            input y: f64[3]
            z = mul(x, y)
            output z
        }
    """) == text("""
        m.graph:4:16: error[E203]: dtype mismatch in `mul`: `x` is f32, `y` is f64
         4 |     z = mul(x, y)
           |                ^
        hint: input `y` is declared f64[3] at line 3
    """)


def test_float_op_on_integers():
    assert error("""
        graph g {
            input x: i64[3]
            y = sigmoid(x)
            output y
        }
    """) == text("""
        m.graph:3:17: error[E203]: `sigmoid` needs a float operand, `x` is i64
         3 |     y = sigmoid(x)
           |                 ^
        hint: input `x` is declared i64[3] at line 2
    """)


def test_a_shape_error_is_reported_once_not_again_downstream():
    assert error("""
        graph g {
            input x: [3, 4]
            input y: [5]
            z = add(x, y)
            w = relu(z)
            output w
        }
    """) == text("""
        m.graph:4:16: error[E201]: shape mismatch in `add`: cannot broadcast `x` [3, 4] with `y` [5] (dim 4 vs 5)
         4 |     z = add(x, y)
           |                ^
        hint: input `y` is declared f64[5] at line 3
    """)


# --- warnings ----------------------------------------------------------------------


def test_warnings_for_what_nothing_reads_and_params_that_get_no_gradient():
    assert warnings_of("""
        graph g {
            input x = 1
            input unused = 2
            param w: [] = 1
            param lonely: [] = 1
            param other: [] = 1
            a = relu(x)
            y = mul(x, w)
            side = mul(other, 2)
            output y, side
        }
    """) == text("""
        m.graph:3:11: warning[W001]: unused input `unused`
         3 |     input unused = 2
           |           ^^^^^^
        m.graph:5:11: warning[W001]: unused param `lonely`
         5 |     param lonely: [] = 1
           |           ^^^^^^
        m.graph:6:11: warning[W002]: param `other` does not reach the output `y`; it gets no gradient
         6 |     param other: [] = 1
           |           ^^^^^
        m.graph:7:5: warning[W001]: unused node `a`
         7 |     a = relu(x)
           |     ^
        hint: nothing reads it and it is not an output
    """)


def test_a_clean_graph_has_no_warnings():
    assert (
        warnings_of("""
        graph g {
            input x = 1
            param w: [] = 1
            y = mul(x, w)
            output y
            expect y == 1
        }
    """)
        == ""
    )


def test_check_prints_warnings_to_stderr_and_still_succeeds(tmp_path, capsys):
    path = tmp_path / "w.graph"
    path.write_text("graph g {\n    input x = 1\n    input u = 2\n    output x\n}\n")
    assert main(["check", str(path)]) == 0
    captured = capsys.readouterr()
    assert (
        captured.err
        == text(f"""
        {path}:3:11: warning[W001]: unused input `u`
         3 |     input u = 2
           |           ^
    """)
        + "\n"
    )
    assert captured.out.endswith(f"{path}: ok, 1 graph, 1 warning\n")


# --- values fed at run time ----------------------------------------------------------

NET = """
    graph net {
        input x: [N, 4]
        input t: [N, 3] from labels
        param W: [4, 3] = normal(0.1)
        param b: [3] = zeros
        y = affine(x, W, b)
        loss = softmax_loss(y, t)
        output loss
    }
"""


def feed_error(**feeds) -> str:
    program = graphc.compile_source(source(NET), "net.graph")
    with pytest.raises(GraphcError) as info:
        program.forward(**feeds)
    return info.value.render()


def test_symbolic_batch_dims_must_agree_across_inputs():
    assert feed_error(x=np.zeros((3, 4)), t=np.zeros((4, 3))) == text("""
        net.graph:3:11: error[E206]: input `t` has N = 4, but `x` has N = 3
         3 |     input t: [N, 3] from labels
           |           ^
        hint: every input must agree on the size of `N`
    """)


def test_class_indices_must_be_in_range():
    assert feed_error(x=np.zeros((3, 4)), t=np.array([0, 3, 1])) == text("""
        net.graph:3:11: error[E402]: input `t`: class indices must lie in 0..2, got 0..3
         3 |     input t: [N, 3] from labels
           |           ^
    """)


def test_wrong_shape_for_a_label_input_mentions_class_indices():
    assert feed_error(x=np.zeros((3, 4)), t=np.zeros((3, 4))) == text("""
        net.graph:3:11: error[E403]: input `t` expects shape [N, 3], got [3, 4]
         3 |     input t: [N, 3] from labels
           |           ^
        hint: labels may also be class indices of shape [N]
    """)


@pytest.mark.parametrize("default", ["", " = onehot", " = zeros", " = [0, 1, 2, 0, 1]"])
def test_class_indices_declared_float_are_read_as_indices(default):
    # `input t: [N]` is f64 by default; read as class indices, it used to reach
    # softmax_loss as floats (an IndexError), fed, made up or written.
    program = graphc.compile_source(
        source(f"""
            graph g {{
                dim N = 5
                input x: [N, 4] = uniform(0, 1)
                input t: [N]{default}
                param W: [4, 3] = he
                param b: [3] = zeros
                h = affine(x, W, b)
                loss = softmax_loss(h, t)
                output loss
            }}
        """)
    )
    feeds = {"t": np.array([0, 1, 2, 0, 1])} if not default else {}
    loss = program.forward(**feeds)["loss"]
    indices, scores = program.values["t"], program.values["h"]
    assert indices.dtype == np.int64
    by_hand = np.mean(np.log(np.exp(scores).sum(axis=1)) - scores[np.arange(5), indices])
    assert abs(float(loss) - by_hand) < 1e-12


def test_unknown_input_in_python():
    assert feed_error(x=np.zeros((3, 4)), t=np.zeros((3, 3)), xx=1) == text("""
        graphc: error[E405]: no input named `xx` in graph `net`
        hint: did you mean `x`?
    """)


def test_missing_input():
    assert feed_error(x=np.zeros((3, 4))) == text("""
        net.graph:3:11: error[E401]: input `t` has no value
         3 |     input t: [N, 3] from labels
           |           ^
        hint: give it one: `--set t=VALUE` or `--input t=FILE.npy` on the command line, a keyword argument in Python, or a default in the graph (`input t = ...`)
    """)


# --- the command line ---------------------------------------------------------------

APPLE = str(MODELS / "apple.graph")
NET_FILE = str(MODELS / "two_layer_net.graph")


def test_cli_unknown_input_in_set(capsys):
    assert cli_error(["run", APPLE, "--set", "aple=3"], capsys) == text("""
        <command line>:1:7: error[E405]: no input or param named `aple` in graph `buy_apple`
         1 | --set aple=3
           |       ^^^^
        hint: did you mean `apple`?
    """)


def test_cli_unparsable_value(capsys):
    assert cli_error(["run", APPLE, "--set", "apple=1,5"], capsys) == text("""
        <command line>:1:13: error[E406]: cannot read `1,5` as a number or a list
         1 | --set apple=1,5
           |             ^^^
        hint: write a number such as 1.5e-3, or a list such as [[1, 2], [3, 4]]
    """)


def test_cli_ragged_value(capsys):
    assert cli_error(["run", APPLE, "--set", "apple=[[1], [2, 3]]"], capsys) == text("""
        <command line>:1:13: error[E406]: `[[1], [2, 3]]` is not a number or a list of numbers with equal rows
         1 | --set apple=[[1], [2, 3]]
           |             ^^^^^^^^^^^^^
    """)


def test_cli_set_without_a_value(capsys):
    assert cli_error(["run", APPLE, "--set", "apple"], capsys) == text("""
        <command line>:1:7: error[E504]: --set takes NAME=VALUE, got `apple`
         1 | --set apple
           |       ^^^^^
        hint: e.g. `--set x=3`
    """)


def test_cli_wrong_shape_in_set(capsys):
    assert cli_error(["run", NET_FILE, "--set", "x=[1, 2]"], capsys) == text(f"""
        <command line>:1:9: error[E403]: input `x` expects shape [N, 784], got [2]
         1 | --set x=[1, 2]
           |         ^^^^^^
        {NET_FILE}:7:11: note: `x` is declared here
         7 |     input x: f64[N, 784] = uniform(0, 1) from images
           |           ^
    """)


def test_cli_wrong_shape_for_a_param(capsys):
    assert cli_error(["run", NET_FILE, "--set", "b2=[1, 2]"], capsys) == text(f"""
        <command line>:1:10: error[E403]: param `b2` has shape [10], got [2]
         1 | --set b2=[1, 2]
           |          ^^^^^^
        {NET_FILE}:13:11: note: `b2` is declared here
         13 |     param b2: [10]      = zeros
            |           ^^
    """)


def test_cli_wrong_shape_in_input_file(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 783)))
    assert cli_error(["run", NET_FILE, "--input", f"x={path}"], capsys) == text(f"""
        <command line>:1:11: error[E403]: input `x` expects shape [N, 784], got [3, 783]
         1 | --input x={path}
           |           {"^" * len(str(path))}
        {NET_FILE}:7:11: note: `x` is declared here
         7 |     input x: f64[N, 784] = uniform(0, 1) from images
           |           ^
    """)


def test_cli_an_empty_batch(tmp_path, capsys):
    # N = 0 used to run, with a NaN loss: every size must be at least 1, fed or declared.
    x, t = tmp_path / "x.npy", tmp_path / "t.npy"
    np.save(x, np.zeros((0, 784)))
    np.save(t, np.zeros((0, 10)))
    assert cli_error(["run", NET_FILE, "--input", f"x={x}", "--input", f"t={t}"], capsys) == text(f"""
        <command line>:1:11: error[E210]: input `x` has N = 0; every size must be at least 1
         1 | --input x={x}
           |           {"^" * len(str(x))}
        {NET_FILE}:7:11: note: `x` is declared here
         7 |     input x: f64[N, 784] = uniform(0, 1) from images
           |           ^
        hint: give `x` at least one row
    """)


def test_an_empty_batch_in_python():
    program = graphc.compile_source("graph g {\n    input x: [2, N]\n    y = relu(x)\n    output y\n}\n", "m.graph")
    with pytest.raises(GraphcError) as info:
        program.forward(x=np.zeros((2, 0)))
    assert info.value.render() == text("""
        m.graph:2:11: error[E210]: input `x` has N = 0; every size must be at least 1
         2 |     input x: [2, N]
           |           ^
    """)


def test_cli_batch_dims_disagree_between_set_and_the_made_up_default(capsys):
    assert cli_error(["run", NET_FILE, "--set", "t=[1, 2]"], capsys) == text(f"""
        {NET_FILE}:8:11: error[E206]: input `t` has N = 2, but `x` has N = 3
         8 |     input t: f64[N, 10]  = onehot from labels  # one-hot; class indices work too
           |           ^
        hint: every input must agree on the size of `N`
    """)


def test_cli_missing_npy_file(tmp_path, capsys):
    missing = tmp_path / "nope.npy"
    assert cli_error(["run", NET_FILE, "--input", f"x={missing}"], capsys) == text(f"""
        <command line>:1:11: error[E601]: no such file: {missing}
         1 | --input x={missing}
           |           {"^" * len(str(missing))}
    """)


def test_cli_unreadable_npy_file(tmp_path, capsys):
    path = tmp_path / "bad.npy"
    path.write_bytes(b"not numpy")
    message = cli_error(["run", NET_FILE, "--input", f"x={path}"], capsys)
    assert message.startswith(f"<command line>:1:11: error[E606]: cannot read {path} as a .npy array: ")
    assert message.endswith(
        text(f"""
         1 | --input x={path}
           |           {"^" * len(str(path))}
        hint: save one with numpy.save(path, array)
    """)
    )


def test_cli_unknown_graph(capsys):
    assert cli_error(["run", APPLE, "--graph", "buy"], capsys) == text(f"""
        <command line>:1:9: error[E114]: no graph named `buy` in {APPLE}
         1 | --graph buy
           |         ^^^
        hint: graphs in this file: `buy_apple`
    """)


def test_cli_unknown_graph_suggests_the_closest(capsys):
    assert cli_error(["compile", APPLE, "--graph", "buy_aple"], capsys) == text(f"""
        <command line>:1:9: error[E114]: no graph named `buy_aple` in {APPLE}
         1 | --graph buy_aple
           |         ^^^^^^^^
        hint: did you mean `buy_apple`?
    """)


def test_cli_missing_graph_file(tmp_path, capsys):
    missing = tmp_path / "nope.graph"
    assert cli_error(["check", str(missing)], capsys) == f"{missing}: error[E601]: no such file"


def test_cli_compile_error_is_the_rendered_diagnostic(tmp_path, capsys):
    path = tmp_path / "typo.graph"
    path.write_text("graph g {\n    input x = 1\n    y = rleu(x)\n    output y\n}\n")
    expected = text(f"""
        {path}:3:9: error[E103]: unknown op `rleu`
         3 |     y = rleu(x)
           |         ^^^^
        hint: did you mean `relu`?
    """)
    for command in ("check", "compile", "run", "gradcheck"):
        assert cli_error([command, str(path)], capsys) == expected, command


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--rtol", "0", "must be a positive number, got 0"),
        ("--rtol", "-0.5", "must be a positive number, got -0.5"),
        ("--rtol", "inf", "must be a positive number, got inf"),  # would pass any gradient
        ("--eps", "nan", "must be a positive number, got nan"),
        ("--eps", "small", "takes a number, got `small`"),
    ],
)
def test_cli_bad_flag_value(capsys, flag, value, message):
    assert cli_error(["gradcheck", APPLE, flag, value], capsys) == (
        f"graphc gradcheck: error[E501]: argument {flag}: {message}\nhint: see `graphc gradcheck --help`"
    )


def test_cli_unknown_command(capsys):
    assert cli_error(["frobnicate"], capsys).startswith(
        "graphc: error[E501]: argument COMMAND: invalid choice: 'frobnicate' (choose from "
    )


# --- literals (every literal a person writes is checked, never a numpy exception) --------


def test_the_expectation_hint_is_only_for_expectations():
    assert error("""
        graph g {
            input x = 1
            relu(x) = y
            output y
        }
    """) == text("""
        m.graph:3:13: error[E002]: unexpected `=`; expected `->`
         3 |     relu(x) = y
           |             ^
    """)


def test_unknown_escape_in_a_string():
    assert error("""
        graph g {
            input y: [2, 3]
            input t: [2, 3]
            loss = softmax_loss(y, t, reduction="\\x")
            output loss
        }
    """) == text("""
        m.graph:4:42: error[E005]: unknown escape `\\x` in a string
         4 |     loss = softmax_loss(y, t, reduction="\\x")
           |                                          ^^
        hint: a string may hold `\\"`, `\\\\`, `\\n` and `\\t`
    """)


def test_a_string_keeps_its_non_ascii_text():
    assert error("""
        graph g {
            input y: [2, 3]
            input t: [2, 3]
            loss = softmax_loss(y, t, reduction="mëan")
            output loss
        }
    """) == text("""
        m.graph:4:41: error[E107]: `reduction` of `softmax_loss` must be one of `mean`, `sum`, got `mëan`
         4 |     loss = softmax_loss(y, t, reduction="mëan")
           |                                         ^^^^^^
        hint: did you mean `mean`?
    """)


def test_ragged_list_as_an_argument():
    assert error("""
        graph g {
            input x = 1
            y = mul(x, [1, [2]])
            output y
        }
    """) == text("""
        m.graph:3:16: error[E211]: ragged list: every row must have the same length
         3 |     y = mul(x, [1, [2]])
           |                ^^^^^^^^
    """)


def test_empty_list():
    assert error("""
        graph g {
            input x = [[1], []]
            output x
        }
    """) == text("""
        m.graph:2:15: error[E211]: ragged list: every row must have the same length
         2 |     input x = [[1], []]
           |               ^^^^^^^^^
    """)
    assert error("""
        graph g {
            input x = [[], []]
            output x
        }
    """) == text("""
        m.graph:2:16: error[E211]: empty list: a value needs at least one number
         2 |     input x = [[], []]
           |                ^^
    """)


@pytest.mark.parametrize("depth", [33, 65, 3000])
def test_a_list_nested_past_32_dims(depth):
    # Refused at the 33rd `[`, as it is read: numpy 1.x stops at 32 dims.
    line = "    input x = " + "[" * depth + "1" + "]" * depth
    shown = line if len(line) <= 120 else line[:120] + "..."  # long lines are clipped
    assert error(f"graph g {{\n{line}\n    output x\n}}\n") == "\n".join(
        [
            "m.graph:2:47: error[E802]: list nested more than 32 deep: a value has at most 32 dims",
            f" 2 | {shown}",
            "   | " + " " * 46 + "^",
        ]
    )


def test_integer_too_large_for_i64():
    assert error("""
        graph g {
            input n: i64 = 99999999999999999999
            output n
        }
    """) == text("""
        m.graph:2:20: error[E212]: `99999999999999999999` is out of range for i64
         2 |     input n: i64 = 99999999999999999999
           |                    ^^^^^^^^^^^^^^^^^^^^
        hint: i64 holds whole numbers from -9223372036854775808 to 9223372036854775807
    """)


def test_number_too_large_for_a_float():
    assert error("""
        graph g {
            input x = 1
            y = mul(x, [1, 1e400])
            output y
        }
    """) == text("""
        m.graph:3:20: error[E212]: `1e400` is out of range for f64
         3 |     y = mul(x, [1, 1e400])
           |                    ^^^^^
        hint: f64 holds magnitudes up to 1.7976931348623157e+308
    """)
    assert error("""
        graph g {
            input x: f32 = 1e39
            output x
        }
    """) == text("""
        m.graph:2:20: error[E212]: `1e39` is out of range for f32
         2 |     input x: f32 = 1e39
           |                    ^^^^
        hint: f32 holds magnitudes up to 3.4028235e+38
    """)


def test_a_fraction_for_an_integer_input():
    assert error("""
        graph g {
            input y: [3]
            input n: i64 = [1, 2.9]
            loss = softmax_loss(y, n)
            output loss
        }
    """) == text("""
        m.graph:3:24: error[E213]: `2.9` is not a whole number; `n` is i64
         3 |     input n: i64 = [1, 2.9]
           |                        ^^^
    """)


def test_an_initializer_takes_finite_numbers():
    assert error("""
        graph g {
            param W: [2] = normal(1e999)
            output W
        }
    """) == text("""
        m.graph:2:20: error[E109]: initializer `normal` takes finite numbers
         2 |     param W: [2] = normal(1e999)
           |                    ^^^^^^^^^^^^^
        hint: write `normal(std)`
    """)


def test_excerpts_split_lines_where_the_parser_does():
    # A form feed or a line separator in a comment ends no line.
    src = "graph g {\n    input x = 1   # a\x0cb\u2028c\x85d\n    y = rleu(x)\n    output y\n}\n"
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(src, "m.graph")
    assert info.value.render() == text("""
        m.graph:3:9: error[E103]: unknown op `rleu`
         3 |     y = rleu(x)
           |         ^^^^
        hint: did you mean `relu`?
    """)


def test_windows_line_endings_and_a_byte_order_mark(tmp_path, capsys):
    path = tmp_path / "bom.graph"
    path.write_bytes("\ufeffgraph g {\r\n    input x = 1\r\n    y = rleu(x)\r\n    output y\r\n}\r\n".encode("utf-8"))
    assert cli_error(["check", str(path)], capsys) == text(f"""
        {path}:3:9: error[E103]: unknown op `rleu`
         3 |     y = rleu(x)
           |         ^^^^
        hint: did you mean `relu`?
    """)


def test_a_file_may_start_with_one_byte_order_mark_not_two(tmp_path, capsys):
    """The file's mark is dropped as it is read, and a string's as it is parsed: not both of a file's two.
    (The source line shows the invisible character as U+FFFD, as it shows any it cannot print.)"""
    path = tmp_path / "bom2.graph"
    path.write_bytes(b"\xef\xbb\xbf" * 2 + b"graph g {\n    input x = 1\n    output x\n}\n")
    assert cli_error(["check", str(path)], capsys) == text(f"""
        {path}:1:1: error[E001]: unexpected character `\\ufeff`
         1 | \ufffdgraph g {{
           | ^
        hint: a byte-order mark may start a file, once, and nowhere else
    """)


# --- sizes ---------------------------------------------------------------------------


def test_a_size_must_be_at_least_1():
    assert error("""
        graph g {
            dim N = 2
            param W: [0] = he
            input y: [N, 0] = onehot
            output W
        }
    """) == text("""
        m.graph:3:14: error[E210]: `W` has a dim of size 0; every size must be at least 1
         3 |     param W: [0] = he
           |              ^^^
        m.graph:4:14: error[E210]: `y` has a dim of size 0; every size must be at least 1
         4 |     input y: [N, 0] = onehot
           |              ^^^^^^
    """)


def test_a_param_too_large_to_allocate():
    for dims, count in (
        ("1000000, 1000000", "1,000,000,000,000"),
        ("99999999999999999999", "99,999,999,999,999,999,999"),
    ):
        src = f"graph g {{\n    param W: [{dims}] = zeros\n    output W\n}}\n"
        with pytest.raises(GraphcError) as info:
            graphc.compile_source(src, "m.graph")
        assert info.value.render() == text(f"""
            m.graph:2:14: error[E801]: param `W` [{dims}] has {count} numbers
             2 |     param W: [{dims}] = zeros
               |              {"^" * (len(dims) + 2)}
            hint: graphc refuses tensors of more than 268,435,456 numbers; raise the limit with GRAPHC_MAX_ELEMENTS=N
        """)


def test_a_const_has_a_concrete_shape():
    assert error("""
        graph g {
            input x: [N]
            const c: [N] = [1, 2]
            y = mul(x, c)
            output y
        }
    """) == text("""
        m.graph:3:14: error[E208]: const `c` has symbolic dim `N`; a const's shape must be concrete
         3 |     const c: [N] = [1, 2]
           |              ^^^
    """)


def test_a_literal_value_sizes_its_symbolic_dims():
    assert error("""
        graph g {
            dim N = 3
            input x: [N] = [1, 2]
            output x
        }
    """) == text("""
        m.graph:3:20: error[E206]: value of `x` has N = 2, but the graph declares `dim N = 3`
         3 |     input x: [N] = [1, 2]
           |                    ^^^^^^
        hint: every value of the graph must agree on the size of `N`
    """)
    assert error("""
        graph g {
            input x: [N] = [1, 2]
            input z: [N] = [1, 2, 3]
            y = mul(x, z)
            output y
        }
    """) == text("""
        m.graph:3:20: error[E206]: value of `z` has N = 3, but the value of `x` has N = 2
         3 |     input z: [N] = [1, 2, 3]
           |                    ^^^^^^^^^
        hint: every value of the graph must agree on the size of `N`
    """)


def test_one_number_cannot_fill_a_symbolic_dim_without_a_size():
    assert error("""
        graph g {
            input x: [N] = 0
            output x
        }
    """) == text("""
        m.graph:2:20: error[E208]: input `x`: a single number cannot fill symbolic dim `N`
         2 |     input x: [N] = 0
           |                    ^
        hint: declare its size, e.g. `dim N = 2`, or give a full list
    """)


# --- dtypes ------------------------------------------------------------------------


def test_integers_are_only_labels():
    assert error("""
        graph g {
            input n: i64 = 3
            y = mul(n, 0.5)
            output y
        }
    """) == text("""
        m.graph:3:13: error[E203]: `mul` needs float operands, `n` is i64
         3 |     y = mul(n, 0.5)
           |             ^
        hint: input `n` is declared i64 at line 2
    """)
    assert error("""
        graph g {
            input y: i64[3] = [1, 2, 3]
            loss = softmax_loss(y, 1)
            output loss
        }
    """) == text("""
        m.graph:3:25: error[E203]: `softmax_loss` needs float scores, `y` is i64
         3 |     loss = softmax_loss(y, 1)
           |                         ^
        hint: input `y` is declared i64[3] at line 2
    """)


def test_a_literal_read_in_two_dtypes():
    assert error("""
        graph g {
            input a: f64[2]
            input b: f32[2]
            p = mul(a, [0.1, 0.2])
            q = mul(b, [0.1, 0.2])
            r = mul(b, 0.1)
            s = mul(a, 0.1)
            output p, q
        }
    """) == text("""
        m.graph:5:16: error[E214]: literal `[0.1,0.2]` is read as f64 by `p` and as f32 by `q`
         5 |     q = mul(b, [0.1, 0.2])
           |                ^^^^^^^^^^
        hint: a literal has one dtype; declare a typed const for one reader, e.g. `const c: f32[2] = [0.1,0.2]`
    """)


def test_a_literal_out_of_range_for_the_dtype_that_reads_it():
    assert error("""
        graph g {
            input x: f32[2]
            y = mul(x, 1e39)
            output y
        }
    """) == text("""
        m.graph:3:16: error[E212]: `1e39` is out of range for f32, the dtype of `y`
         3 |     y = mul(x, 1e39)
           |                ^^^^
        hint: f32 holds magnitudes up to 3.4028235e+38
    """)


def test_a_literal_out_of_range_once_the_program_is_float32():
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(
            source("""
            graph g {
                input x: [2] = [1, 2]
                y = mul(x, 1e39)
                output y
            }
        """),
            "m.graph",
            dtype="float32",
        )
    assert info.value.render() == text("""
        m.graph:3:16: error[E212]: literal `1e39`: 1e+39 is out of range for f32
         3 |     y = mul(x, 1e39)
           |                ^^^^
        hint: f32 holds magnitudes up to 3.4028235e+38
    """)


# --- class indices -------------------------------------------------------------------


def test_class_indices_written_in_the_graph_are_checked():
    assert error("""
        graph g {
            input y: [3]
            loss = softmax_loss(y, 5)
            output loss
        }
    """) == text("""
        m.graph:3:28: error[E402]: literal `5`: class indices must lie in 0..2, got 5
         3 |     loss = softmax_loss(y, 5)
           |                            ^
        hint: `y` [3] has 3 classes
    """)
    assert error("""
        graph g {
            input y: [2, 3]
            const t: i64[2] = [0, -1]
            loss = softmax_loss(y, t)
            output loss
        }
    """) == text("""
        m.graph:4:28: error[E402]: const `t`: class indices must lie in 0..2, got -1..0
         4 |     loss = softmax_loss(y, t)
           |                            ^
        hint: `y` [2, 3] has 3 classes
    """)
    assert error("""
        graph g {
            input y = [1, 2, 3]
            input t = 1.7
            loss = softmax_loss(y, t)
            output loss
        }
    """) == text("""
        m.graph:3:15: error[E402]: input `t`: class indices must be whole numbers, got 1.7
         3 |     input t = 1.7
           |               ^^^
    """)


def test_class_indices_are_not_computed():
    assert error("""
        graph g {
            input y: [2, 3]
            input t: [2]
            h = relu(t)
            loss = softmax_loss(y, h)
            output loss
        }
    """) == text("""
        m.graph:5:28: error[E402]: class indices `h` are computed by `relu`; labels must be an input or a const
         5 |     loss = softmax_loss(y, h)
           |                            ^
        hint: one-hot labels of shape [2, 3] may be computed
    """)


INDICES = """
    graph g {
        input y: [N, 3]
        input t: i64[N]
        input u: [N]
        a = softmax_loss(y, t)
        b = softmax_loss(y, u)
        output a, b
    }
"""


def indices_error(**feeds) -> str:
    program = graphc.compile_source(source(INDICES), "i.graph")
    with pytest.raises(GraphcError) as info:
        program.forward(y=np.zeros((2, 3)), **feeds)
    return info.value.render()


def test_fed_class_indices_must_be_in_range_and_whole():
    assert indices_error(t=[0, 3], u=[0, 1]) == text("""
        i.graph:3:11: error[E402]: input `t`: class indices must lie in 0..2, got 0..3
         3 |     input t: i64[N]
           |           ^
    """)
    assert indices_error(t=[0, -1], u=[0, 1]) == text("""
        i.graph:3:11: error[E402]: input `t`: class indices must lie in 0..2, got -1..0
         3 |     input t: i64[N]
           |           ^
    """)
    assert indices_error(t=[0, 1], u=[0, 1.5]) == text("""
        i.graph:4:11: error[E402]: input `u`: class indices must be whole numbers, got 1.5
         4 |     input u: [N]
           |           ^
    """)
    assert indices_error(t=np.array([2**64 - 1, 0], dtype=np.uint64), u=[0, 1]) == text("""
        i.graph:3:11: error[E402]: input `t`: class indices must lie in 0..2, got 0..18446744073709551615
         3 |     input t: i64[N]
           |           ^
    """)


def test_an_unsigned_integer_too_large_for_i64():
    program = graphc.compile_source(
        source("""
        graph g {
            input k: i64[2]
            output k
        }
    """),
        "k.graph",
    )
    with pytest.raises(GraphcError) as info:
        program.forward(k=np.array([2**64 - 1, 0], dtype=np.uint64))
    assert info.value.render() == text("""
        k.graph:2:11: error[E212]: input `k`: 18446744073709551615 is out of range for i64
         2 |     input k: i64[2]
           |           ^
        hint: i64 holds whole numbers from -9223372036854775808 to 9223372036854775807
    """)


def test_cli_value_out_of_range_for_float32(tmp_path, capsys):
    path = tmp_path / "f.graph"
    path.write_text("graph g {\n    input x: f32[2]\n    y = relu(x)\n    output y\n}\n")
    assert cli_error(["run", str(path), "--set", "x=[1e40, 1]"], capsys) == text(f"""
        <command line>:1:9: error[E212]: input `x`: 1e+40 is out of range for f32
         1 | --set x=[1e40, 1]
           |         ^^^^^^^^^
        {path}:2:11: note: `x` is declared here
         2 |     input x: f32[2]
           |           ^
        hint: f32 holds magnitudes up to 3.4028235e+38
    """)


# --- command-line flags ----------------------------------------------------------------


@pytest.mark.parametrize(
    "wrt, message, hint",
    [
        ("apple,apple", "--wrt names `apple` twice: `apple,apple`", "name each value once"),
        ("", "--wrt names no value: ``", "give `params`, `inputs`, `all`, or names of inputs and params"),
        (",", "--wrt names no value: `,`", "give `params`, `inputs`, `all`, or names of inputs and params"),
        ("apple,,tax", "--wrt has an empty name: `apple,,tax`", "separate names by single commas, e.g. `--wrt W1,b1`"),
    ],
)
def test_cli_wrt_names_each_value_once(wrt, message, hint, capsys):
    assert cli_error(["compile", APPLE, "--wrt", wrt], capsys) == f"graphc: error[E506]: {message}\nhint: {hint}"


@pytest.mark.parametrize("command", ["run", "gradcheck"])
def test_cli_negative_seed(command, capsys):
    assert cli_error([command, APPLE, "--seed", "-1"], capsys) == text("""
        graphc: error[E502]: --seed must be at least 0, got -1
        hint: e.g. `--seed 100`
    """)


# --- many mistakes, many names ------------------------------------------------------


def test_at_most_20_errors_are_shown(tmp_path, capsys):
    # 5,000 undefined names once took minutes: each hint compared its name with every value.
    lines = "".join(f"    v{i} = relu(u{i})\n" for i in range(5000))
    path = tmp_path / "m.graph"
    path.write_text(f"graph g {{\n    input x = 1\n{lines}    output v0\n}}\n")
    err = cli_error(["check", str(path)], capsys).replace(str(path), "m.graph")
    shown = err.splitlines()
    assert shown[:3] == [
        "m.graph:3:15: error[E101]: undefined name `u0`",
        " 3 |     v0 = relu(u0)",
        "   |               ^^",
    ]
    assert shown[-4:] == [
        "m.graph:22:16: error[E101]: undefined name `u19`",
        " 22 |     v19 = relu(u19)",
        "    |                ^^^",
        "m.graph: note: 4,980 more errors not shown (graphc shows the first 20)",
    ]
    assert err.count(": error[") == 20


def test_the_count_of_errors_not_shown():
    lines = "".join(f"    v = relu{i}(x)\n" for i in range(30))
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(f"graph g {{\n    input x = 1\n{lines}    output x\n}}\n", "m.graph")
    assert len(info.value.diagnostics) == 30
    assert info.value.render().splitlines()[-1] == "m.graph: note: 10 more errors not shown (graphc shows the first 20)"


def test_a_suggestion_among_many_names():
    # Among 50,000 names, the few hundred that sort nearest are compared.
    names = [f"h{i}_layer" for i in range(50_000)]
    assert did_you_mean("h17_layr", names) == "did you mean `h17_layer`?"
    assert did_you_mean("relu", names) is None
    assert did_you_mean("rleu", ["relu", "sigmoid"]) == "did you mean `relu`?"


def test_compiling_a_graph_of_mixed_float_dtypes_points_at_the_graph(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text("graph g {\n    input a: f64[2] = [1, 2]\n    input b: f32[2] = [1, 2]\n    output a, b\n}\n")
    assert cli_error(["compile", str(path), "--emit", "python"], capsys).replace(str(path), "m.graph") == text("""
        m.graph:1:7: error[E907]: graph `g` mixes f32 and f64 values; a generated module has one float dtype
         1 | graph g {
           |       ^
        hint: give one with --dtype float32 or --dtype float64
    """)


# --- the fuzzer's findings (helper D's A4, A5, A8) -----------------------------------


def test_an_input_named_self(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text("graph g {\n    input self: [2]\n    y = relu(self)\n    output y\n}\n")
    assert main(["run", str(path), "--set", "self=[1, -2]"]) == 0
    assert "  y  [1, 0]\n" in capsys.readouterr().out
    assert graphc.compile_source(path.read_text()).forward(self=[3, 4])["y"].tolist() == [3, 4]


def test_class_indices_fed_a_number_where_a_row_is_declared(capsys):
    # `k` is class indices already: one number is not "one-hot labels as indices".
    src = source("""
        graph g {
            dim N = 2
            input y: [N, 2] = zeros
            input k: i64[N] = [0, 1]
            loss = softmax_loss(y, k)
            output loss
        }
    """)
    program = graphc.compile_source(src, "m.graph")
    with pytest.raises(GraphcError) as info:
        program.forward(k=9)
    assert info.value.render() == text("""
        m.graph:4:11: error[E403]: input `k` expects shape [N], got []
         4 |     input k: i64[N] = [0, 1]
           |           ^
    """)
    with pytest.raises(GraphcError) as info:
        program.forward(k=[9, 0])
    assert info.value.message == "input `k`: class indices must lie in 0..1, got 0..9"


@pytest.mark.parametrize(
    ("src", "message", "caret"),
    [
        ("graphg{input x=2\noutput x}", "m.graph:1:1: error[E002]: `graph` and `g` run together", (1, 1, 6)),
        (
            "graph g {\n    input x: f32x[2]\n    output x\n}",
            "m.graph:2:14: error[E002]: `f32` and `x` run together",
            (2, 14, 4),
        ),
        (
            "graph g {\n    input x: [2x]\n    output x\n}",
            "m.graph:2:15: error[E002]: `2` and `x` run together",
            (2, 15, 2),
        ),
        (
            "graph g {\n    input x = 1 fromimages\n    output x\n}",
            "m.graph:2:17: error[E002]: `from` and `images` run together",
            (2, 17, 10),
        ),
    ],
)
def test_words_run_together(src, message, caret):
    # A keyword used to be read off the front of a longer word: `graphg{` was `graph g {`.
    first, second = message.split("`")[1], message.split("`")[3]
    line, column, width = caret
    shown = src.split("\n")[line - 1]
    assert error(src) == "\n".join(
        [
            message,
            f" {line} | {shown}",
            "   | " + " " * (column - 1) + "^" * width,
            f"hint: put a space between them: `{first} {second}`",
        ]
    )


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_a_file_with_carriage_returns_reads_as_python_reads_text(tmp_path, capsys, newline):
    path = tmp_path / "m.graph"
    path.write_bytes(
        newline.join(["graph g {", "    input x = 1", "    y = rleu(x)", "    output y", "}", ""]).encode()
    )
    assert cli_error(["check", str(path)], capsys) == text(f"""
        {path}:3:9: error[E103]: unknown op `rleu`
         3 |     y = rleu(x)
           |         ^^^^
        hint: did you mean `relu`?
    """)


def test_a_line_that_ends_too_early():
    # The newline used to be quoted as the unexpected token, breaking the message over two lines.
    assert error("""
        graph g {
            input x =
                2
            output x
        }
    """) == text("""
        m.graph:2:14: error[E003]: unexpected end of line; expected `[`, a name or a number
         2 |     input x =
           |              ^
        hint: a statement ends at the end of its line; it goes on to the next only inside `( )` or `[ ]`, \
or where the next line starts with `->`
    """)


def test_a_character_that_is_no_part_of_the_language():
    assert error("graph g {\n    input café = 1\n    output café\n}\n") == text("""
        m.graph:2:14: error[E001]: unexpected character `é`
         2 |     input café = 1
           |              ^
        hint: names are made of the letters A to Z and a to z, digits and `_`
    """)
    # An invisible one is written as an escape, and shown as a replacement character.
    assert error("graph g {\n    input x = 1\n    y = \x00relu(x)\n}\n") == text("""
        m.graph:3:9: error[E001]: unexpected character `\\x00`
         3 |     y = \ufffdrelu(x)
           |         ^
    """)

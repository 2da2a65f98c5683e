"""The language: what the parser builds, and what elaboration makes of it.

Functional form, arrow chains (with their generated names and `as`), literal
arguments, consts, initializers, dims, dtypes, data roles, expectations,
several graphs per file, comments."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pytest

from graphc import ast
from graphc.compiler import front_end
from graphc.errors import GraphcError
from graphc.ir import ConstDecl, InputDecl, OpNode, ParamDecl, TensorType
from graphc.parse import grammar_text, parse


def source(block: str) -> str:
    return textwrap.dedent(block).lstrip("\n")


def compiled(block: str, graph: int = 0):
    return front_end(source(block), "p.graph")[graph]


def nodes(block: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, op, operands) of every op node, in source order."""
    return [(n.name, n.op.name, n.args) for n in compiled(block).ir.nodes()]


def where(span) -> tuple[int, int, int, int]:
    return (span.line, span.column, span.end_line, span.end_column)


def test_grammar_is_the_one_in_grammars():
    assert grammar_text().startswith("// The graphc language")
    assert 'graph: "graph" NAME _NL? "{" _NL? (_stmt (_NL _stmt)* _NL?)? "}"' in grammar_text()


# --- the syntax tree ------------------------------------------------------------------


def test_functional_form_builds_a_call_with_positions():
    module = parse("graph g {\n    y = mul(a, 0.5)\n    output y\n}\n", "f.graph")
    [graph] = module.graphs
    assert graph.name.text == "g"
    assign, output = graph.body
    assert isinstance(assign, ast.Assign)
    assert assign.target.text == "y"
    call = assign.call
    assert call.op.text == "mul"
    name, literal = call.args
    assert isinstance(name, ast.Name) and name.text == "a"
    assert isinstance(literal, ast.Literal) and literal.value == 0.5
    assert call.attrs == ()
    assert where(assign.span) == (2, 5, 2, 20)
    assert where(call.op.span) == (2, 9, 2, 12)
    assert where(name.span) == (2, 13, 2, 14)
    assert where(literal.span) == (2, 16, 2, 19)
    assert str(literal.span) == "f.graph:2:16"
    assert isinstance(output, ast.OutputDecl) and [n.text for n in output.names] == ["y"]


def test_attributes_are_kept_apart_from_operands():
    module = parse("graph g {\n    l = softmax_loss(y, t, reduction=sum)\n    output l\n}\n")
    call = module.graphs[0].body[0].call
    assert [a.text for a in call.args] == ["y", "t"]
    [attr] = call.attrs
    assert attr.name.text == "reduction" and attr.value.value == "sum"


def test_numbers_and_lists():
    module = parse(
        source("""
        graph g {
            input a = 3
            input b = -2.5e-3
            input c = +4
            input d = [[1, 2,], [3, 4],]
            input e = []
            output a
        }
    """)
    )
    values = [stmt.init.literal.value for stmt in module.graphs[0].body[:5]]
    assert values == [3, -2.5e-3, 4, [[1, 2], [3, 4]], []]
    assert isinstance(values[0], int) and isinstance(values[1], float)


def test_declarations():
    module = parse(
        source("""
        graph g {
            dim N = 3
            input x: f32[N, 784] = uniform(0, 1) from images
            input t: [N, 10] from labels
            param W: f32[784, 10] = normal(0.01)
            const half: f32 = 0.5
            expect grad(W) == 0 within 1e-3
            output x
        }
    """)
    )
    dim, x, t, w, half, expect, _ = module.graphs[0].body
    assert (dim.name.text, dim.size) == ("N", 3)
    assert (x.type.dtype, x.type.shape) == ("f32", ("N", 784))
    assert (x.init.kind.text, x.init.args, x.role.text) == ("uniform", (0.0, 1.0), "images")
    assert (t.type.dtype, t.type.shape, t.init, t.role.text) == (None, ("N", 10), None, "labels")
    assert (w.type.dtype, w.type.shape, w.init.kind.text, w.init.args) == ("f32", (784, 10), "normal", (0.01,))
    assert (half.type.dtype, half.type.shape, half.value.value) == ("f32", None, 0.5)
    assert (expect.target.text, expect.of_grad, expect.value.value, expect.tolerance) == ("W", True, 0, 1e-3)


def test_comments_are_ignored_everywhere():
    with_comments = source("""
        # a file comment
        graph g {  # after the brace
            # a line of its own
            input x = 2   # after a statement
            y = mul(x, x) # no space before it
            output y
        }
        # the end, with no newline after it""").rstrip("\n")
    without = "graph g {\ninput x = 2\ny = mul(x, x)\noutput y\n}\n"
    a, b = front_end(with_comments)[0], front_end(without)[0]
    assert list(a.ir.decls) == list(b.ir.decls) == ["x", "y"]
    assert a.types == b.types


def test_statements_may_share_a_line_with_braces():
    assert nodes("graph g { input x = 1\n y = relu(x)\n output y }") == [("y", "relu", ("x",))]
    [one_line] = parse("graph g { input x = 2 }").graphs
    assert [stmt.name.text for stmt in one_line.body] == ["x"]
    assert list(compiled("graph g\n{\n    input x = 1\n    output x }").ir.decls) == ["x"]


def test_newlines_end_statements_and_blank_lines_and_carriage_returns_do_not_matter():
    crlf = "graph g {\r\n    input x = 2   \r\n\r\n    # note\r\n    y = relu(x)\r\n    output y\r\n}\r\n"
    graph = front_end(crlf)[0]
    assert [(n.name, n.args) for n in graph.ir.nodes()] == [("y", ("x",))]
    assert where(graph.ir.decls["y"].span) == (5, 5, 5, 6)


def test_lists_and_calls_may_run_over_several_lines():
    graph = compiled("""
        graph g {
            input x = [
                [1, 2],   # a comment inside a list
                [3, 4],
            ]
            y = mul(
                x,

                x)
            output y
        }
    """)
    assert graph.ir.decls["x"].init.value.tolist() == [[1, 2], [3, 4]]
    assert [(n.name, n.args) for n in graph.ir.nodes()] == [("y", ("x", "x"))]


def test_a_line_that_starts_with_an_arrow_continues_the_chain():
    graph = compiled("""
        graph g {
            input x = 1
            x -> mul(2)      # the first step; a `->` in a comment -> continues nothing
              # a comment line, and a blank one, between the steps

              -> relu as h
              -> sigmoid
              -> y
            output y
        }
    """)
    assert [(n.name, n.op.name, n.args) for n in graph.ir.nodes()] == [
        ("mul1", "mul", ("x", "2")),
        ("h", "relu", ("mul1",)),
        ("y", "sigmoid", ("h",)),
    ]
    assert where(graph.ir.decls["h"].span) == (6, 18, 6, 19)
    assert where(graph.ir.decls["y"].stmt_span) == (3, 5, 8, 11)


def test_words_are_keywords_only_where_the_grammar_expects_them():
    graph = compiled("""
        graph g {
            input grad = 2
            input f32 = 3
            input within = 4
            y = mul(grad, f32)
            z = add(y, within)
            output z
            expect grad(grad) == 3
        }
    """)
    assert list(graph.ir.decls)[:3] == ["grad", "f32", "within"]


# --- elaboration ----------------------------------------------------------------------


def test_functional_form():
    assert nodes("""
        graph g {
            input a = 1
            input b = 2
            c = mul(a, b)
            d = add(c, a)
            output d
        }
    """) == [("c", "mul", ("a", "b")), ("d", "add", ("c", "a"))]


def test_chain_names_its_steps_after_their_ops():
    graph = compiled("""
        graph g {
            input x: [2, 3]
            param W1: [3, 4] = zeros
            param b1: [4] = zeros
            param W2: [4, 2] = zeros
            param b2: [2] = zeros
            x -> affine(W1, b1) -> relu -> affine(W2, b2) -> y
            output y
        }
    """)
    assert [(n.name, n.op.name, n.args) for n in graph.ir.nodes()] == [
        ("affine1", "affine", ("x", "W1", "b1")),
        ("relu1", "relu", ("affine1",)),
        ("y", "affine", ("relu1", "W2", "b2")),
    ]
    assert graph.types["affine1"] == TensorType("f64", (2, 4))
    assert graph.types["y"] == TensorType("f64", (2, 2))
    # Each generated node points at its op in the chain, and at the whole chain.
    relu1 = graph.ir.decls["relu1"]
    assert where(relu1.span) == (7, 28, 7, 32)
    assert where(relu1.stmt_span)[:2] == (7, 5)


def test_chain_counts_each_op_separately_and_continues_across_chains():
    assert nodes("""
        graph g {
            input x = 1
            x -> relu -> sigmoid -> relu -> a
            x -> relu -> sigmoid -> b
            output a, b
        }
    """) == [
        ("relu1", "relu", ("x",)),
        ("sigmoid1", "sigmoid", ("relu1",)),
        ("a", "relu", ("sigmoid1",)),
        ("relu2", "relu", ("x",)),
        ("b", "sigmoid", ("relu2",)),
    ]


def test_chain_as_names_a_step():
    assert nodes("""
        graph g {
            input x = 1
            x -> relu as h -> sigmoid -> mul(2) as twice -> relu -> y
            output y
        }
    """) == [
        ("h", "relu", ("x",)),
        ("sigmoid1", "sigmoid", ("h",)),
        ("twice", "mul", ("sigmoid1", "2")),
        ("y", "relu", ("twice",)),
    ]


def test_generated_names_never_collide_with_the_persons():
    assert nodes("""
        graph g {
            input x = 1
            relu1 = sigmoid(x)
            relu1 -> relu -> relu -> y
            output y
        }
    """) == [("relu1", "sigmoid", ("x",)), ("relu2", "relu", ("relu1",)), ("y", "relu", ("relu2",))]


def test_chain_may_start_with_a_call():
    assert nodes("""
        graph g {
            input a = 1
            input b = 2
            mul(a, b) -> relu -> y
            add(a, b) -> z
            output y, z
        }
    """) == [("mul1", "mul", ("a", "b")), ("y", "relu", ("mul1",)), ("z", "add", ("a", "b"))]


def test_literal_arguments_become_consts():
    graph = compiled("""
        graph g {
            input x: f32[3]
            a = mul(x, 0.5)
            b = mul(a, 0.5)
            c = add(b, -1)
            output c
        }
    """)
    assert [(n.name, n.args) for n in graph.ir.nodes()] == [
        ("a", ("x", "0.5")),
        ("b", ("a", "0.5")),
        ("c", ("b", "-1")),
    ]
    half = graph.ir.decls["0.5"]
    assert isinstance(half, ConstDecl) and half.value == 0.5
    # A literal takes the dtype of what it meets: f32 stays f32.
    assert half.type == TensorType(None, ())
    assert graph.types["c"] == TensorType("f32", (3,))
    assert graph.warnings == ()


def test_consts():
    graph = compiled("""
        graph g {
            input x: [2]
            const scale = [2, 3]
            const k: f32 = 1.5
            y = mul(x, scale)
            output y
        }
    """)
    scale = graph.ir.decls["scale"]
    assert isinstance(scale, ConstDecl)
    np.testing.assert_array_equal(scale.value, [2.0, 3.0])
    # With no dtype written, a const takes the dtype of what reads it.
    assert scale.type == TensorType(None, (2,))
    assert graph.types["scale"] == TensorType("f64", (2,))
    k = graph.ir.decls["k"]
    assert k.value.dtype == np.float32 and k.type == TensorType("f32", ())
    [warning] = graph.warnings
    assert warning.message == "unused const `k`"


def test_dims_and_declared_types():
    graph = compiled("""
        graph g {
            dim N = 3
            dim C = 10
            input x: f32[N, 4] = normal(1)
            input t: [N, C] = onehot
            input i: i64[N]
            input s = 2
            param w: [4, 10] = zeros
            param v: f32[] = 1
            output x
        }
    """)
    assert graph.ir.dims == {"N": 3, "C": 10}
    types = {name: graph.types[name] for name in ("x", "t", "i", "s", "w", "v")}
    assert types == {
        "x": TensorType("f32", ("N", 4)),
        "t": TensorType("f64", ("N", "C")),
        "i": TensorType("i64", ("N",)),
        "s": TensorType("f64", ()),
        "w": TensorType("f64", (4, 10)),
        "v": TensorType("f32", ()),
    }


def test_shape_of_an_undeclared_input_comes_from_its_value():
    graph = compiled("""
        graph g {
            input x = [[1, 2, 3], [4, 5, 6]]
            param w: f64 = [1, 2, 3]
            y = mul(x, w)
            output y
        }
    """)
    assert graph.types["x"] == graph.types["y"] == TensorType("f64", (2, 3))
    assert graph.types["w"] == TensorType("f64", (3,))


def test_initializers():
    graph = compiled("""
        graph g {
            param a: [2] = zeros
            param b: [2] = ones
            param c: [2] = normal(0.1)
            param d: [2] = uniform(-1, 1)
            param e: [2, 2] = he
            param f: [2, 2] = xavier
            input t: [3, 4] = onehot
            param h: [2] = [5, 6]
            param i: [2, 2] = 7
            output a
        }
    """)
    decls = graph.ir.decls
    inits = {name: (decls[name].init.kind, decls[name].init.args) for name in "abcdefthi"}
    assert inits == {
        "a": ("zeros", ()),
        "b": ("ones", ()),
        "c": ("normal", (0.1,)),
        "d": ("uniform", (-1.0, 1.0)),
        "e": ("he", ()),
        "f": ("xavier", ()),
        "t": ("onehot", ()),
        "h": ("value", ()),
        "i": ("value", ()),
    }
    np.testing.assert_array_equal(decls["h"].init.value, [5.0, 6.0])
    assert decls["i"].init.value == 7.0
    assert decls["c"].init.describe() == "normal(0.1)"
    assert decls["d"].init.describe() == "uniform(-1, 1)"


def test_data_roles():
    graph = compiled("""
        graph g {
            input x: [N, 2] from images
            input t: [N, 2] from labels
            input u: [N, 2]
            y = add(x, u)
            loss = softmax_loss(y, t)
            output loss
        }
    """)
    roles = {d.name: d.role for d in graph.ir.inputs()}
    assert roles == {"x": "images", "t": "labels", "u": None}


def test_several_graphs_in_one_file():
    graphs = front_end(
        source("""
        graph first {
            input x = 1
            y = relu(x)
            output y
        }
        # the same names, another graph
        graph second {
            input x = 1
            y = sigmoid(x)
            output y
        }
    """)
    )
    assert [g.name for g in graphs] == ["first", "second"]
    assert [n.op.name for g in graphs for n in g.ir.nodes()] == ["relu", "sigmoid"]


def test_outputs_and_expectations():
    graph = compiled("""
        graph g {
            input x = 2
            y = mul(x, x)
            z = relu(y)
            output z, y
            expect z == 4
            expect grad(x) == [4] within 0.5
        }
    """)
    assert [name for name, _ in graph.ir.outputs] == ["z", "y"]
    assert graph.checked.output == "z"
    first, second = graph.ir.expects
    assert (first.target, first.of_grad, first.tolerance, first.describe()) == ("z", False, None, "z == 4")
    assert (second.target, second.of_grad, second.tolerance) == ("x", True, 0.5)
    assert second.describe() == "grad(x) == [4] within 0.5"
    np.testing.assert_array_equal(second.value, [4.0])


@pytest.mark.parametrize(
    "decl, kind",
    [
        ("input x = 1", InputDecl),
        ("param x: [] = 1", ParamDecl),
        ("const x = 1", ConstDecl),
    ],
)
def test_every_kind_of_declaration_is_in_the_ir(decl, kind):
    graph = compiled(f"graph g {{\n    {decl}\n    y = relu(x)\n    output y\n}}\n")
    assert isinstance(graph.ir.decls["x"], kind)
    assert isinstance(graph.ir.decls["y"], OpNode)


# --- what the review asked for -----------------------------------------------------------


def test_literal_consts_get_their_dtype_once_from_what_reads_them():
    graph = compiled("""
        graph g {
            input x: f32[2]
            input y: [2, 3]
            const unread = [1, 2]
            const k = 0.5
            a = mul(x, 0.5)
            b = mul(x, [1, 2])
            c = mul(y, k)
            d = softmax_loss(y, [0, 2])
            e = softmax_loss(y, [[0, 1, 0], [1, 0, 0]])
            f = mul(2, 3)
            output a
        }
    """)
    types = graph.types
    assert types["0.5"] == TensorType(None, ())  # weak: fits every reader
    assert types["k"] == TensorType(None, ())
    assert types["[1,2]"] == TensorType("f32", (2,))  # the dtype its reader computes in
    assert types["[0,2]"] == TensorType("i64", (2,))  # class indices
    assert types["[[0,1,0],[1,0,0]]"] == TensorType("f64", (2, 3))  # one-hot rows, as the scores
    assert types["unread"] == TensorType("f64", (2,))
    assert types["f"] == TensorType(None, ())  # literals alone make a weak scalar, as a literal is
    # The declarations keep what was written.
    assert graph.ir.decls["[1,2]"].type == TensorType(None, (2,)) and graph.ir.decls["[1,2]"].literal


def test_a_const_of_one_number_fills_its_declared_shape():
    graph = compiled("""
        graph g {
            input x: [3]
            const c: [3] = 2
            y = mul(x, c)
            output y
        }
    """)
    np.testing.assert_array_equal(graph.ir.decls["c"].value, [2.0, 2.0, 2.0])
    assert graph.types["c"] == TensorType("f64", (3,))


def test_a_literal_value_gives_a_symbolic_dim_its_size():
    graph = compiled("""
        graph g {
            input x: [N] = [1, 2]
            input z: [N] = normal(1)
            y = mul(x, z)
            output y
        }
    """)
    assert graph.ir.dims == {"N": 2}
    assert graph.types["x"] == TensorType("f64", ("N",))


def test_an_expectation_shows_its_value_as_written():
    graph = compiled("""
        graph g {
            input x = 2
            y = mul(x, x)
            output y
            expect y == 4   # a comment with == in it
            expect y == [4,   # four
                         4] within 0.5
        }
    """)
    assert [e.describe() for e in graph.ir.expects] == ["y == 4", "y == [4, 4] within 0.5"]


def test_declaration_order_is_derived_from_the_declarations():
    graph = compiled("""
        graph g {
            input x = 1
            y = relu(x)
            output y
        }
    """)
    ir = graph.ir
    assert ir.order == {"x": 0, "y": 1}
    assert dataclasses.replace(ir, decls=dict(reversed(ir.decls.items()))).order == {"y": 0, "x": 1}
    with pytest.raises(ValueError, match="init=False"):
        dataclasses.replace(ir, order={"x": 1, "y": 0})  # derived, never given


def test_a_tolerance_too_large_for_a_float_is_infinite():
    module = parse("graph g {\n    expect y == 1 within 1" + "0" * 400 + "\n}\n")
    assert module.graphs[0].body[0].tolerance == float("inf")


def test_every_node_spans_its_text_from_keyword_to_closing_bracket():
    """The builder takes a node's place from its first and last token, keywords and brackets included."""
    text = source(
        """
        block dense(x, n) {
            param W: [in(x), n] = he
            out = affine(x, W, [0.0])
        }
        graph g {
            input x: f64[2, 3] = uniform(0, 1) from images
            x -> relu as h
              -> dense(4) -> y
            expect grad(x) == [1, 2] within 0.1
            output y
        }
        """
    )
    module = parse(text, "s.graph")
    [block], [graph] = module.blocks, module.graphs
    assert where(block.span) == (1, 1, 4, 2)
    param, assign = block.body
    assert where(param.span) == (2, 5, 2, 29)
    assert where(param.type.span) == (2, 14, 2, 24)
    assert [where(s) for s in param.type.dim_spans] == [(2, 15, 2, 20), (2, 22, 2, 23)]
    assert where(assign.call.span) == (3, 11, 3, 30)
    assert where(assign.call.args[2].span) == (3, 24, 3, 29)
    assert where(graph.span) == (5, 1, 11, 2)
    declaration, chain, expectation, output = graph.body
    assert where(declaration.span) == (6, 5, 6, 51)
    assert where(declaration.init.span) == (6, 26, 6, 39)
    assert declaration.role.text == "images"
    assert where(chain.span) == (7, 5, 8, 23)
    assert [where(link.span) for link in chain.links] == [(7, 7, 7, 19), (8, 7, 8, 18), (8, 19, 8, 23)]
    assert chain.links[0].alias.text == "h"
    assert expectation.of_grad and expectation.tolerance == 0.1
    assert where(expectation.span) == (9, 5, 9, 40)
    assert where(output.span) == (10, 5, 10, 13)


def test_parses_in_threads_keep_their_files_apart():
    """One parser serves the process; each parse's nodes point into its own file (the language server
    may parse in several threads)."""
    from concurrent.futures import ThreadPoolExecutor

    def parsed(i: int) -> tuple[str, ...]:
        body = "".join(f"    v{j} = relu(x)\n" for j in range(200))
        module = parse(f"graph g{i} {{\n    input x = 1\n{body}    output v0\n}}\n", f"f{i}.graph")
        return tuple({node.span.source.path for node in module.graphs[0].body})

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(parsed, range(16))) == [(f"f{i}.graph",) for i in range(16)]


def test_the_first_mistake_in_the_file_is_the_one_reported():
    """A size too large on line 2 comes before the unclosed `(` on line 3, as the parser meets them."""
    text = "graph g {\n    input x: f64[" + "9" * 5000 + "]\n    y = relu(x\n    output y\n}\n"
    with pytest.raises(GraphcError) as caught:
        parse(text, "first.graph")
    assert caught.value.code == "E801"
    assert (caught.value.span.line, caught.value.span.column) == (2, 18)

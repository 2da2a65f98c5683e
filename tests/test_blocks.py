"""Blocks: expansion into a flat graph with dotted instance names, shapes at
each use, every mistake with its whole message, and the dotted names in every
command (--set, --wrt, checkpoints, gradcheck, codegen, draw, --emit expanded)."""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path

import numpy as np
import pydot
import pytest

import graphc
from graphc import draw
from graphc.checkpoint import save_checkpoint
from graphc.cli import main
from graphc.codegen import python_module
from graphc.errors import GraphcError
from graphc.testing import check_grads

ROOT = Path(__file__).resolve().parent.parent
MLP = ROOT / "models" / "mlp_blocks.graph"

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")  # pydot's pyparsing


def text(block: str) -> str:
    return textwrap.dedent(block).strip("\n")


def source(block: str) -> str:
    return textwrap.dedent(block).lstrip("\n")


def compile_text(src: str, **kwargs) -> graphc.Program:
    return graphc.compile_source(source(src), "m.graph", **kwargs)


def with_dense(graph: str) -> str:
    """DENSE, then a graph written indented in a test."""
    return DENSE + textwrap.dedent(graph)


def error(src: str) -> str:
    with pytest.raises(GraphcError) as info:
        compile_text(src)
    return info.value.render()


DENSE = """
block dense(x, n_out) {
    param W: [in(x), n_out] = he
    param b: [n_out] = zeros
    x -> affine(W, b) -> relu -> out
}
"""

# Every form of use: functional, in a chain named and unnamed, repeated named and unnamed.
USES = with_dense("""
graph g {
    dim N = 2
    input x: f64[N, 4] = uniform(0, 1)
    a = dense(x, 3)
    a -> dense(5) as h1 -> dense(6) -> repeat 2 dense(7) as r -> repeat 2 dense(2) -> relu -> y
    output y
}
""")


# --- expansion ------------------------------------------------------------------


def test_each_use_makes_its_own_params_and_values_named_by_its_instance():
    program = compile_text(USES)
    decls = program.compiled.ir.decls
    assert list(decls) == [
        "x",
        "a.W", "a.b", "a.affine1", "a",
        "h1.W", "h1.b", "h1.affine1", "h1",
        "dense1.W", "dense1.b", "dense1.affine1", "dense1",
        "r.1.W", "r.1.b", "r.1.affine1", "r.1",
        "r.W", "r.b", "r.affine1", "r",
        "dense2.W", "dense2.b", "dense2.affine1", "dense2",
        "dense3.W", "dense3.b", "dense3.affine1", "dense3",
        "y",
    ]  # fmt: skip
    instances = program.compiled.ir.instances
    assert {name: i.block for name, i in instances.items()} == dict.fromkeys(
        ["a", "h1", "dense1", "r.1", "r", "dense2", "dense3"], "dense"
    )
    assert program.compiled.ir.owners["h1.affine1"] == "h1"
    assert "x" not in program.compiled.ir.owners


def test_shapes_are_sized_at_each_use_by_the_input_it_is_given():
    program = compile_text(USES)
    shapes = {name: value.shape for name, value in program.params.items()}
    assert shapes == {
        "a.W": (4, 3), "a.b": (3,),
        "h1.W": (3, 5), "h1.b": (5,),
        "dense1.W": (5, 6), "dense1.b": (6,),
        "r.1.W": (6, 7), "r.1.b": (7,),
        "r.W": (7, 7), "r.b": (7,),
        "dense2.W": (7, 2), "dense2.b": (2,),
        "dense3.W": (2, 2), "dense3.b": (2,),
    }  # fmt: skip
    assert program.forward()["y"].shape == (2, 2)


def test_a_use_computes_what_its_block_says():
    program = compile_text(
        with_dense("""
        graph g {
            input x = [[1, -2]]
            h = dense(x, 2)
            output h
        }
        """)
    )
    program.params["h.W"][...] = [[1.0, -1.0], [0.5, 2.0]]
    program.params["h.b"][...] = [0.25, 0.5]
    # x . W = [1 - 1, -1 - 4] = [0, -5]; plus b: [0.25, -4.5]; relu: [0.25, 0].
    np.testing.assert_array_equal(program.forward()["h"], [[0.25, 0.0]])


def test_blocks_nest_and_a_use_named_out_takes_the_outer_result():
    program = compile_text(
        with_dense("""
        block pair(x, n) {
            x -> dense(n) -> dense(n) -> out
        }
        graph g {
            input x: f64[N, 4]
            p = pair(x, 3)
            output p
        }
        """)
    )
    ir = program.compiled.ir
    assert list(ir.decls) == [
        "x",
        "p.dense1.W", "p.dense1.b", "p.dense1.affine1", "p.dense1",
        "p.dense2.W", "p.dense2.b", "p.dense2.affine1", "p",
    ]  # fmt: skip
    # The last inner use makes the block's result, `p`; its params are named by a use name of its own.
    assert {n: (i.block, i.parent) for n, i in ir.instances.items()} == {
        "p": ("pair", None),
        "p.dense1": ("dense", "p"),
        "p.dense2": ("dense", "p"),
    }


def test_sizes_reach_attributes_and_other_blocks():
    program = compile_text(
        """
        block scaled(x, k) {
            x -> mul(k) -> out
        }
        block loss_of(y, t, how) {
            out = softmax_loss(y, t, reduction=how)
        }
        graph g {
            input y = [[1, 2], [3, 4]]
            input t = [[0, 1], [1, 0]]
            y -> scaled(3) -> s
            l = loss_of(s, t, sum)
            output l
        }
        """
    )
    assert program.compiled.ir.decls["l"].attrs == {"reduction": "sum"}


def test_block_params_take_the_dtype_of_the_first_operand():
    program = compile_text(DENSE + "graph g {\n input x: f32[N, 4]\n y = dense(x, 3)\n output y\n}\n")
    assert program.params["y.W"].dtype == np.float32
    assert str(program.types["y"]) == "f32[N, 3]"


# --- errors ---------------------------------------------------------------------


TWO = """
block dense(x, n_in, n_out) {
    param W: [n_in, n_out] = he
    param b: [n_out] = zeros
    x -> affine(W, b) -> relu -> out
}
block two(x, n) {
    x -> dense(n, n) -> dense(n, n) -> out
}
graph g {
    input x: f64[N, 784]
    x -> two(784) as h1 -> two(50) -> y
    output y
}
"""


def test_a_shape_error_inside_a_block_shows_every_use_it_was_expanded_through():
    assert error(TWO) == text("""
        m.graph:4:17: error[E201]: shape mismatch in `affine`: `h1` has 784 features, `y.dense1.W` expects 50 (`h1` is [N, 784], `y.dense1.W` is [50, 50])
         4 |     x -> affine(W, b) -> relu -> out
           |                 ^
        m.graph:7:10: note: in this use of `dense`
         7 |     x -> dense(n, n) -> dense(n, n) -> out
           |          ^^^^^^^^^^^
        m.graph:11:28: note: in this use of `two`
         11 |     x -> two(784) as h1 -> two(50) -> y
            |                            ^^^^^^^
        hint: param `y.dense1.W` is declared f64[50, 50] at line 2
    """)


def test_a_block_that_uses_itself():
    assert error("""
        block a(x) {
            x -> b -> out
        }
        block b(x) {
            x -> a -> out
        }
        graph g {
            input x: f64[2]
            x -> a -> y
            output y
        }
    """) == text("""
        m.graph:5:10: error[E127]: block `a` uses itself (a -> b -> a)
         5 |     x -> a -> out
           |          ^
        m.graph:2:10: note: in this use of `b`
         2 |     x -> b -> out
           |          ^
        m.graph:9:10: note: in this use of `a`
         9 |     x -> a -> y
           |          ^
        hint: a block cannot contain itself; to apply it several times, write `repeat N` in a chain
    """)


def test_wrong_number_of_arguments():
    assert error(
        with_dense("""
        graph g {
            input x: f64[N, 4]
            h = dense(x)
            x -> dense(3, 4) -> y
            output y
        }
        """)
    ) == text("""
        m.graph:9:9: error[E106]: wrong number of arguments: block `dense` takes 2 (x, n_out), got 1
         9 |     h = dense(x)
           |         ^^^^^^^^
        hint: write `dense(x, n_out)`, or `-> dense(n_out)` in a chain
        m.graph:10:10: error[E106]: wrong number of arguments: block `dense` takes 2 (x, n_out), got 2 plus the value piped in by `->`
         10 |     x -> dense(3, 4) -> y
            |          ^^^^^^^^^^^
        hint: write `dense(x, n_out)`, or `-> dense(n_out)` in a chain
    """)


def test_unknown_size_parameter():
    assert error("""
        block dense(x, n_out) {
            param W: [in(x), n_outs] = he
            x -> affine(W, 0) -> relu -> out
        }
        graph g {
            input x: f64[N, 4]
            y = dense(x, 3)
            output y
        }
    """) == text("""
        m.graph:2:22: error[E126]: `n_outs` is not a parameter of block `dense`
         2 |     param W: [in(x), n_outs] = he
           |                      ^^^^^^
        hint: did you mean `n_out`?
        m.graph:1:16: error[E125]: parameter `n_out` of block `dense` is never used
         1 | block dense(x, n_out) {
           |                ^^^^^
        hint: use it as a value, as a size (a dim or an attribute's value), or remove it
    """)


def test_unknown_block():
    assert error(
        with_dense("""
        graph g {
            input x: f64[N, 4]
            x -> dens(3) -> y
            output y
        }
        """)
    ) == text("""
        m.graph:9:10: error[E103]: unknown op or block `dens`
         9 |     x -> dens(3) -> y
           |          ^^^^
        hint: did you mean `dense`?
    """)


def test_duplicate_block():
    assert error(
        DENSE + DENSE + "graph g {\n    input x: f64[N, 4]\n    x -> dense(3) -> y\n    output y\n}\n"
    ) == text("""
        m.graph:7:7: error[E102]: duplicate definition of block `dense`
         7 | block dense(x, n_out) {
           |       ^^^^^
        hint: `dense` is first defined at line 1; pick another name
    """)


@pytest.mark.parametrize(
    "block, message",
    [
        (
            "block b(x, n) {\n    param W: [n, n] = he\n    y = mul(x, n)\n    x -> relu -> out\n}",
            """
            m.graph:3:16: error[E124]: `n` is used as a value here and as a size at line 2
             3 |     y = mul(x, n)
               |                ^
            hint: a parameter of block `b` is either an operand (a value) or a size (a number)
            """,
        ),
        (
            "block b(x, n) {\n    x -> relu -> out\n}",
            """
            m.graph:1:12: error[E125]: parameter `n` of block `b` is never used
             1 | block b(x, n) {
               |            ^
            hint: use it as a value, as a size (a dim or an attribute's value), or remove it
            """,
        ),
        (
            "block b(x) {\n    x -> relu -> y\n}",
            """
            m.graph:1:7: error[E121]: block `b` never defines `out`
             1 | block b(x) {
               |       ^
            hint: name the block's result `out`, e.g. `x -> relu -> out`
            """,
        ),
        (
            "block b(x) {\n    input t: f64[2]\n    x -> relu -> out\n}",
            """
            m.graph:2:5: error[E123]: `input` is not allowed in a block
             2 |     input t: f64[2]
               |     ^^^^^
            hint: a block's values come in through its parameters, e.g. `block dense(x, n_out)`
            """,
        ),
        (
            "block b(x) {\n    x -> relu -> out\n    output out\n}",
            """
            m.graph:3:5: error[E123]: `output` is not allowed in a block
             3 |     output out
               |     ^^^^^^
            hint: a block's result is the value it names `out`, e.g. `x -> relu -> out`
            """,
        ),
        (
            "block relu(x) {\n    x -> sigmoid -> out\n}\nblock b(x) {\n    x -> relu -> out\n}",
            """
            m.graph:1:7: error[E120]: block `relu` has the name of an op
             1 | block relu(x) {
               |       ^^^^
            hint: pick another name
            """,
        ),
    ],
    ids=["value-and-size", "unused", "no-out", "input", "output", "op-name"],
)
def test_mistakes_in_a_definition(block, message):
    graph = "\ngraph g {\n    input x: f64[2]\n    y = b(x)\n    output y\n}\n"
    assert error(block + graph) == text(message)


@pytest.mark.parametrize(
    "use, message",
    [
        (
            "y = dense(x, x)",
            """
            m.graph:9:18: error[E129]: `n_out` of block `dense` is a size: give a number, got `x`
             9 |     y = dense(x, x)
               |                  ^
            """,
        ),
        (
            "y = dense(x, 2.5)",
            """
            m.graph:9:18: error[E129]: `n_out` of block `dense` is a dim: it takes a whole number of at least 1, got `2.5`
             9 |     y = dense(x, 2.5)
               |                  ^^^
            """,
        ),
        (
            "y = dense(x, m=3)",
            """
            m.graph:9:18: error[E104]: block `dense` has no parameter `m`
             9 |     y = dense(x, m=3)
               |                  ^
            hint: block `dense` takes x, n_out
            """,
        ),
        (
            "x -> repeat 0 dense(3) -> y",
            """
            m.graph:9:17: error[E130]: `repeat 0`: the count must lie in 1..1000
             9 |     x -> repeat 0 dense(3) -> y
               |                 ^
            """,
        ),
        (
            "y = dense(h, 3)\n    h = relu(x)",
            """
            m.graph:9:9: error[E128]: the shape of `h` is not known where block `dense` is used
             9 |     y = dense(h, 3)
               |         ^^^^^^^^^^^
            hint: `in(x)` reads the shape of the value passed in: define `h` before this use
            """,
        ),
        (
            "x -> relu -> dense",
            """
            m.graph:9:18: error[E007]: chain ends in block `dense`; name its result
             9 |     x -> relu -> dense
               |                  ^^^^^
            hint: write `... -> dense -> NAME`
            """,
        ),
        (
            "y = dense(x, n_out=3, n_out=4)",
            """
            m.graph:9:9: error[E106]: wrong number of arguments: block `dense` takes 2 (x, n_out), got 3
             9 |     y = dense(x, n_out=3, n_out=4)
               |         ^^^^^^^^^^^^^^^^^^^^^^^^^^
            hint: write `dense(x, n_out)`, or `-> dense(n_out)` in a chain
            """,
        ),
        (
            "x -> repeat 2 dense(3) as h -> y",
            """
            m.graph:9:31: error[E007]: `as h` on the last op of a chain: its result is `y`
             9 |     x -> repeat 2 dense(3) as h -> y
               |                               ^
            """,
        ),
    ],
    ids=[
        "size-given-a-name",
        "fractional-dim",
        "unknown-keyword",
        "repeat-0",
        "in-of-later-value",
        "chain-end",
        "twice",
        "as-on-last-repeat",
    ],
)
def test_mistakes_in_a_use(use, message):
    graph = f"\ngraph g {{\n    input x: f64[N, 4]\n    {use}\n    output x\n}}\n"
    assert error(DENSE.lstrip("\n") + graph) == text(message)


def test_in_of_a_symbolic_dim_and_in_outside_a_block():
    assert error(DENSE + "graph g {\n    input x: f64[N]\n    y = dense(x, 3)\n    output y\n}\n") == text("""
        m.graph:8:9: error[E128]: `in(x)` of block `dense`: `x` is [N], whose last dim is symbolic
         8 |     y = dense(x, 3)
           |         ^^^^^^^^^^^
        hint: `in(x)` sizes a param by the last dim of x, which must be a number
    """)
    assert error("graph g {\n    input x: f64[N, 4]\n    param W: [in(x), 3] = he\n    output x\n}\n") == text("""
        m.graph:3:15: error[E128]: `in(x)` is only allowed in a block
         3 |     param W: [in(x), 3] = he
           |               ^^^^^
        hint: in a block, `in(x)` is the last dim of its operand x; in a graph, write the size
    """)


def test_an_undefined_name_inside_a_block_shows_the_use():
    assert error("""
        block b(x) {
            x -> mul(scale) -> out
        }
        graph g {
            input x: f64[2]
            y = b(x)
            output y
        }
    """) == text("""
        m.graph:2:14: error[E101]: undefined name `y.scale`
         2 |     x -> mul(scale) -> out
           |              ^^^^^
        m.graph:6:9: note: in this use of `b`
         6 |     y = b(x)
           |         ^^^^
    """)


def test_a_value_piped_into_a_size():
    assert error("""
        block scale(k, x) {
            param W: [k] = ones
            x -> mul(W) -> out
        }
        graph g {
            input x: f64[3]
            x -> scale(x) -> y
            output y
        }
    """) == text("""
        m.graph:7:5: error[E129]: the value piped in by `->` goes to `k`, a size of block `scale`
         7 |     x -> scale(x) -> y
           |     ^
        hint: a block used in a chain takes the piped value as its first parameter, an operand; `scale` takes k, x
    """)


def test_the_command_line_reports_a_block_mistake_with_status_2(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text(source(TWO))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:11:28: note: in this use of `two`" in err
    assert "Traceback" not in err


# --- the model, and dotted names in every command --------------------------------


def test_mlp_blocks_is_the_books_multilayer_net():
    program = graphc.compile_file(MLP)
    shapes = {name: value.shape for name, value in program.params.items()}
    assert shapes == {
        "hidden.1.W": (784, 100), "hidden.1.b": (100,),
        "hidden.2.W": (100, 100), "hidden.2.b": (100,),
        "hidden.3.W": (100, 100), "hidden.3.b": (100,),
        "hidden.4.W": (100, 100), "hidden.4.b": (100,),
        "hidden.W": (100, 100), "hidden.b": (100,),
        "W": (100, 10), "b": (10,),
    }  # fmt: skip
    # He initialization: std sqrt(2 / fan_in), so the mean square is close to 2 / 784.
    assert np.mean(program.params["hidden.1.W"] ** 2) == pytest.approx(2 / 784, rel=0.02)
    assert [n.op.name for n in program.compiled.ir.nodes()] == ["affine", "relu"] * 5 + ["affine", "softmax_loss"]


@pytest.mark.slow  # 130,000 params, each differentiated numerically: most of a minute
def test_mlp_blocks_gradients_match_numerical_ones():
    rows = check_grads(graphc.compile_file(MLP))
    assert [r.name for r in rows] == ["x", "hidden.1.W", "hidden.1.b", "hidden.2.W", "hidden.2.b", "hidden.3.W",
                                      "hidden.3.b", "hidden.4.W", "hidden.4.b", "hidden.W", "hidden.b", "W", "b"]  # fmt: skip
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_gradcheck_command_names_instance_params(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text(source(SMALL))
    assert main(["gradcheck", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in report["tensors"]] == ["x", "h1.W", "h1.b"]


def test_codegen_matches_the_interpreter_with_dotted_names():
    program = graphc.compile_file(MLP)
    source_text = python_module(program.compiled)
    module = types.ModuleType("generated")
    exec(compile(source_text, "<generated>", "exec"), module.__dict__)
    params = module.init_params(0)
    assert set(params) == set(program.params)  # the dict keys stay dotted
    for name, value in program.params.items():
        np.testing.assert_array_equal(params[name], value)
    feeds = program.default_feeds()
    outputs, saved = module.forward(params, **feeds)
    grads = module.backward(params, saved)
    expected = program.forward(**feeds)
    np.testing.assert_allclose(outputs["loss"], expected["loss"], rtol=1e-12)
    for name, grad in program.backward().items():
        np.testing.assert_allclose(grads[name], grad, rtol=1e-12, atol=1e-15, err_msg=name)
    assert "hidden_1_W" in source_text  # a readable identifier for `hidden.1.W`


SMALL = with_dense("""
graph g {
    input x = [[1, 2]]
    x -> dense(2) as h1 -> relu -> y
    output y
}
""")


def test_set_and_wrt_take_dotted_names(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text(source(SMALL))
    argv = ["run", str(path), "--json", "--set", "h1.W=[[1, 0], [0, -1]]", "--set", "h1.b=[0.5, 0.5]"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"]["y"] == [[1.5, 0.0]]
    assert main(["compile", str(path), "--wrt", "h1.W"]) == 0
    plan = capsys.readouterr().out
    assert "d_h1.W" in plan and "d_h1.b" not in plan


def test_a_set_name_that_is_no_instance_param_is_located(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text(source(SMALL))
    assert main(["run", str(path), "--set", "h2.W=1"]) == 2
    err = capsys.readouterr().err
    assert "h2.W" in err and "did you mean `h1.W`?" in err


def test_checkpoints_store_instance_params_under_dotted_names(tmp_path, capsys):
    program = graphc.compile_file(MLP, seed=3)
    path = tmp_path / "w.npz"
    save_checkpoint(path, program)
    with np.load(path) as saved:
        assert {"params/hidden.1.W", "params/hidden.W", "params/W"} <= set(saved.files)
        np.testing.assert_array_equal(saved["params/hidden.2.b"], program.params["hidden.2.b"])
    # Loaded back by name: the run (seed 0, so seed 0's made-up batch) gives the
    # loss of the seed-3 params on that batch; the file's expectation, stated
    # for seed 0's params, fails: status 1.
    assert main(["run", str(MLP), "--weights", str(path), "--json"]) == 1
    loss = json.loads(capsys.readouterr().out)["outputs"]["loss"]
    batch = graphc.compile_file(MLP).default_feeds()
    assert loss == pytest.approx(float(program.forward(**batch)["loss"]), rel=1e-12)


def test_the_summary_table_lists_instance_values_and_params(capsys):
    assert main(["check", str(MLP)]) == 0
    out = capsys.readouterr().out
    assert "hidden.2.affine1  affine             [N, 100]  f64      10,100 (hidden.2.W, hidden.2.b)" in out


# --- graphc compile --emit expanded ------------------------------------------------


def test_emit_expanded_writes_graph_text_that_compiles_to_the_same_numbers(tmp_path, capsys):
    assert main(["compile", str(MLP), "--emit", "expanded"]) == 0
    expanded = capsys.readouterr().out
    assert expanded.splitlines()[:8] == [
        "# graph `mlp_blocks` with its blocks expanded",
        "graph mlp_blocks {",
        "    dim N = 3",
        "    input x: f64[N, 784] = uniform(0, 1) from images",
        "    input t: f64[N, 10] = onehot from labels",
        "    # hidden.1: a use of block `dense` at line 18",
        "    param hidden.1.W: f64[784, 100] = he",
        "    param hidden.1.b: f64[100] = zeros",
    ]
    assert "    hidden.2.affine1 = affine(hidden.1, hidden.2.W, hidden.2.b)" in expanded
    assert not [line for line in expanded.splitlines() if line.startswith("block")]
    path = tmp_path / "expanded.graph"
    path.write_text(expanded)
    again, original = graphc.compile_file(path), graphc.compile_file(MLP)
    assert list(again.compiled.ir.decls) == list(original.compiled.ir.decls)
    assert float(again.forward()["loss"]) == float(original.forward()["loss"])


def test_emit_expanded_keeps_attributes_and_literals(capsys, tmp_path):
    path = tmp_path / "m.graph"
    path.write_text(
        source("""
        block half_loss(y, t, how) {
            y -> mul(0.5) -> softmax_loss(t, reduction=how) -> out
        }
        graph g {
            input y = [[1, 2]]
            input t = [[0, 1]]
            const c: f64[2] = 3
            l = half_loss(y, t, sum)
            m = mul(l, c)
            output m
        }
        """)
    )
    assert main(["compile", str(path), "--emit", "expanded", "-o", str(tmp_path / "e.graph")]) == 0
    expected = text("""
        # graph `g` with its blocks expanded
        graph g {
            input y: f64[1, 2] = [[1.0, 2.0]]
            input t: f64[1, 2] = [[0.0, 1.0]]
            const c: f64[2] = 3.0
            # l: a use of block `half_loss` at line 8
            l.mul1 = mul(y, 0.5)
            l = softmax_loss(l.mul1, t, reduction=sum)
            m = mul(l, c)
            output m
        }
    """)
    assert (tmp_path / "e.graph").read_text() == expected + "\n"
    assert float(graphc.compile_file(tmp_path / "e.graph").forward()["m"][0]) == pytest.approx(
        float(graphc.compile_file(path).forward()["m"][0])
    )


# --- diagrams ---------------------------------------------------------------------


def parse_dot(dot: str) -> pydot.Dot:
    [graph] = pydot.graph_from_dot_data(dot)
    return graph


def tooltips(graph) -> list[str]:
    return [
        node.get("tooltip").strip('"')
        for node in graph.get_nodes()
        if node.get_name() not in ("graph", "node", "edge") and node.get("tooltip")
    ]


def members(graph) -> list[str]:
    return [node.get_name() for node in graph.get_nodes() if node.get_name() not in ("graph", "node", "edge")]


def test_each_use_is_a_labelled_cluster_nested_as_the_uses_are():
    compiled = graphc.compile_source(source(TWO).replace("two(50)", "two(784)"), "m.graph").compiled
    dot = parse_dot(draw.dot_source(compiled))
    ids = {name: tip for name, tip in zip(members(dot), tooltips(dot))}
    outer = {sub.get_name(): sub for sub in dot.get_subgraphs()}
    assert sorted(outer) == ["cluster0", "cluster3"]
    labels = {}
    contents = {}

    def walk(sub, parent):
        label = sub.get("label") or next((d.get("label") for d in sub.get_nodes() if d.get_name() == "graph"), None)
        labels[sub.get_name()] = (label.strip('"') if label else None, parent)
        contents[sub.get_name()] = sorted(ids[n] for n in members(sub))
        for child in sub.get_subgraphs():
            walk(child, sub.get_name())

    for sub in dot.get_subgraphs():
        walk(sub, None)
    assert labels == {
        "cluster0": ("h1: two", None),
        "cluster1": ("h1.dense1: dense", "cluster0"),
        "cluster2": ("h1.dense2: dense", "cluster0"),
        "cluster3": ("y: two", None),
        "cluster4": ("y.dense1: dense", "cluster3"),
        "cluster5": ("y.dense2: dense", "cluster3"),
    }
    assert contents["cluster0"] == []
    assert contents["cluster1"] == ["h1.dense1", "h1.dense1.W", "h1.dense1.affine1", "h1.dense1.b"]
    assert contents["cluster2"] == ["h1", "h1.dense2.W", "h1.dense2.affine1", "h1.dense2.b"]


def test_collapse_draws_each_use_as_one_box(capsys):
    assert main(["draw", str(MLP), "--collapse"]) == 0
    dot = parse_dot(capsys.readouterr().out)
    assert dot.get_subgraphs() == []
    assert tooltips(dot) == ["x", "t", "hidden.1", "hidden.2", "hidden.3", "hidden.4", "hidden", "W", "b", "y", "loss",
                             "output loss"]  # fmt: skip
    names = dict(zip(members(dot), tooltips(dot)))
    edges = [(names[e.get_source()], names[e.get_destination()]) for e in dot.get_edges()]
    assert edges == [
        ("x", "hidden.1"), ("hidden.1", "hidden.2"), ("hidden.2", "hidden.3"), ("hidden.3", "hidden.4"),
        ("hidden.4", "hidden"), ("hidden", "y"), ("W", "y"), ("b", "y"), ("y", "loss"), ("t", "loss"),
        ("loss", "output loss"),
    ]  # fmt: skip


def test_mermaid_draws_uses_as_subgraphs(tmp_path):
    out = tmp_path / "m.mmd"
    assert main(["draw", str(MLP), "-o", str(out)]) == 0
    mermaid = out.read_text()
    assert '    subgraph cluster0 ["hidden.1: dense"]' in mermaid
    assert mermaid.count("subgraph ") == 5 and mermaid.count("    end\n") == 5
    assert main(["draw", str(MLP), "--collapse", "-o", str(out)]) == 0
    assert 'b0[["hidden.1<br/>dense"]]' in out.read_text()


def test_collapse_does_not_apply_to_the_backward_plan(capsys):
    assert main(["draw", str(MLP), "--collapse", "--plan", "backward"]) == 2
    assert (
        capsys.readouterr().err
        == text("""
        graphc: error[E505]: --collapse draws the graph's block uses as boxes; the backward plan has no blocks
        hint: draw the graph (--plan forward), or the backward plan without --collapse
    """)
        + "\n"
    )


def test_repeats_inside_repeats_name_every_use_apart():
    program = compile_text("""
        block b0(x) {
            x -> relu -> out
        }
        block b1(x) {
            x -> repeat 2 b0 -> out
        }
        graph g {
            input x = [1]
            x -> repeat 2 b1 as h -> relu -> y
            output y
        }
    """)
    ir = program.compiled.ir
    # The inner repeat ends in `out`, the outer use's result: its first use is named inside the instance.
    assert list(ir.decls) == ["x", "h.1.b01", "h.1", "h.b01", "h", "y"]
    assert {n: (i.block, i.parent) for n, i in ir.instances.items()} == {
        "h.1": ("b1", None),
        "h.1.b01": ("b0", "h.1"),
        "h.1.b02": ("b0", "h.1"),
        "h": ("b1", None),
        "h.b01": ("b0", "h"),
        "h.b02": ("b0", "h"),
    }


def test_in_must_name_a_parameter():
    assert error("""
        block b(x, n) {
            param W: [in(y), n] = he
            x -> affine(W, 0) -> out
        }
        graph g {
            input x: f64[2, 3]
            y = b(x, 2)
            output y
        }
    """) == text("""
        m.graph:2:18: error[E126]: `y` is not a parameter of block `b`
         2 |     param W: [in(y), n] = he
           |                  ^
        hint: `in(x)` is the last dim of x, an operand of block `b` (x, n)
    """)


def test_blocks_nested_too_deep_are_refused_without_exhausting_the_stack():
    blocks = "".join(f"block b{i}(x) {{\n    x -> b{i + 1} -> out\n}}\n" for i in range(2000))
    src = (
        blocks
        + "block b2000(x) {\n    x -> relu -> out\n}\ngraph g {\n    input x = [1]\n    x -> b0 -> y\n    output y\n}\n"
    )
    with pytest.raises(GraphcError) as info:
        graphc.compile_source(src, "m.graph")
    [diagnostic] = info.value.diagnostics
    assert diagnostic.message == "blocks nested more than 32 deep"
    assert (diagnostic.span.line, diagnostic.span.column) == (95, 10)
    assert [text for text, _ in diagnostic.span.via][:2] == ["in this use of `b31`", "in this use of `b30`"]
    assert len(diagnostic.span.via) == 32


def test_a_value_named_as_what_an_op_saves_for_backward():
    # Plans name relu's saved mask `h.mask`: a block's param `mask` in use `h` would meet it.
    assert error("""
        block b(x) {
            param mask: [2] = ones
            y = mul(x, mask)
            y -> relu -> out
        }
        graph g {
            input x = [1, -2]
            h = b(x)
            output h
        }
    """) == text("""
        m.graph:2:11: error[E102]: `h.mask` is also the name of what `h` (relu) saves for backward
         2 |     param mask: [2] = ones
           |           ^^^^
        m.graph:8:9: note: in this use of `b`
         8 |     h = b(x)
           |         ^^^^
        hint: rename it: graphc names the `mask` that relu saves after its value, `h.mask`
    """)


def test_eval_reads_instance_params_from_a_checkpoint(tmp_path, capsys):
    program = graphc.compile_file(MLP)
    path = tmp_path / "w.npz"
    save_checkpoint(path, program)
    # In float32, as the other tests read MNIST (loaded once a process), not in float64 as well.
    assert main(["eval", str(MLP), "--weights", str(path), "--dtype", "float32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 10000 and 0 <= report["accuracy"] <= 1


@pytest.mark.slow
def test_train_saves_and_resumes_instance_params(tmp_path, capsys):
    path = tmp_path / "w.npz"
    argv = ["train", str(MLP), "--iters", "20", "--batch", "50", "--save", str(path)]
    assert main(argv) == 0
    with np.load(path) as saved:
        first = saved["params/hidden.3.W"].copy()
    assert not np.array_equal(first, graphc.compile_file(MLP).params["hidden.3.W"])  # it trained
    assert main(["train", str(MLP), "--iters", "30", "--resume", str(path), "--save", str(path)]) == 0
    with np.load(path) as saved:
        assert not np.array_equal(saved["params/hidden.3.W"], first)
        assert json.loads(str(saved["meta"]))["iteration"] == 30
    capsys.readouterr()


def test_a_block_whose_first_parameter_is_a_size():
    program = compile_text("""
        block scale(k, x) {
            param W: [k] = ones
            x -> mul(W) -> out
        }
        graph g {
            input x: f32[3] = [1, 2, 3]
            y = scale(3, x)
            output y
        }
    """)
    assert program.params["y.W"].dtype == np.float32  # the dtype of its first operand, x
    np.testing.assert_array_equal(program.forward()["y"], [1, 2, 3])


def test_expect_lines_name_instance_values(tmp_path, capsys):
    path = tmp_path / "m.graph"
    path.write_text(
        source("""
        block lin(x) {
            param w = 2.0
            out = mul(x, w)
        }
        graph g {
            input x = 3
            y = lin(x)
            output y
            expect y == 6
            expect grad(y.w) == 3
        }
        """)
    )
    assert main(["run", str(path)]) == 0
    assert "ok    " + str(path) + ":10  grad(y.w) == 3" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted((ROOT / "models").glob("*.graph")), ids=lambda p: p.name)
def test_every_model_expanded_compiles_to_the_same_graph_and_numbers(path):
    from graphc.compiler import front_end, front_end_file
    from graphc.expanded import expanded_text
    from graphc.program import Program

    for graph in front_end_file(path):
        [again] = front_end(expanded_text(graph), "expanded.graph")
        assert list(again.ir.decls) == list(graph.ir.decls)
        assert again.types == graph.types
        first, second = Program(graph).forward(), Program(again).forward()
        assert first.keys() == second.keys()
        for name in first:
            np.testing.assert_array_equal(second[name], first[name])

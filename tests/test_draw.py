"""Diagrams: DOT that an independent parser reads back with one node per graph
node and one edge per data edge, labels with the shapes, values and gradients
asked for, escaping that survives any name, Mermaid line by line, SVG, PNG
and PDF through Graphviz, and the errors when a format or `dot` is missing."""

from __future__ import annotations

import dataclasses
import html
import re
import shlex
import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pydot
import pytest

import graphc
from graphc import draw
from graphc.check import check
from graphc.cli import main
from graphc.compiler import CompiledGraph, front_end
from graphc.errors import GraphcError
from graphc.ir import OpNode
from graphc.mermaid import to_mermaid
from graphc.plan import make_plan
from graphc.shapes import infer_shapes

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
ALL_MODELS = sorted(p.name for p in MODELS.glob("*.graph"))
SVG = "{http://www.w3.org/2000/svg}"

# pydot's parser calls pyparsing names that pyparsing now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")

# --- reading DOT back -----------------------------------------------------------


def parse_dot(text: str) -> pydot.Dot:
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, "pydot could not parse the DOT"
    return graphs[0]


def dot_nodes(graph: pydot.Dot) -> dict[str, pydot.Node]:
    # pydot lists the `graph`/`node`/`edge` default statements as nodes too.
    return {n.get_name(): n for n in graph.get_nodes() if n.get_name() not in ("graph", "node", "edge")}


def label_lines(label: str | None) -> list[str]:
    """The text of an HTML-like label, one string per line, entities decoded."""
    if label is None:
        return []
    assert label.startswith("<") and label.endswith(">"), label
    root = ET.fromstring(f"<root>{label[1:-1]}</root>")
    lines: list[str] = []
    current: list[str] = []

    def walk(element: ET.Element) -> None:
        if element.text:
            current.append(element.text)
        for child in element:
            if child.tag == "BR":
                lines.append("".join(current))
                current.clear()
            else:
                walk(child)
            if child.tail:
                current.append(child.tail)

    walk(root)
    lines.append("".join(current))
    return lines


def dot_unquote(text: str) -> str:
    assert text.startswith('"') and text.endswith('"'), text
    return re.sub(r"\\(.)", lambda m: m.group(1), text[1:-1])


def node_names(graph: pydot.Dot) -> dict[str, str]:
    """DOT id -> the value name its tooltip carries."""
    return {name: dot_unquote(node.get("tooltip")) for name, node in dot_nodes(graph).items()}


def edge_labels(graph: pydot.Dot) -> dict[tuple[str, str], list[tuple[list[str], list[str]]]]:
    """(tail name, head name) -> [(label lines, gradient lines)] for each edge."""
    names = node_names(graph)
    result: dict = {}
    for edge in graph.get_edges():
        key = (names[edge.get_source()], names[edge.get_destination()])
        result.setdefault(key, []).append((label_lines(edge.get("label")), label_lines(edge.get("taillabel"))))
    return result


def compiled(name: str) -> CompiledGraph:
    return graphc.compile_file(MODELS / name).compiled


def ran(name: str, **feeds) -> graphc.Program:
    program = graphc.compile_file(MODELS / name)
    program.forward(**feeds)
    program.backward()
    return program


# --- structure ------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_dot_has_one_node_per_graph_node_and_one_edge_per_data_edge(model):
    graph = compiled(model)
    dot = parse_dot(draw.dot_source(graph))
    nx_graph = graph.checked.graph
    outputs = [name for name, _ in graph.ir.outputs]
    names = node_names(dot)
    # Plus one `output` terminal per output, and the edge into it.
    assert sorted(names.values()) == sorted(list(nx_graph.nodes) + [f"output {o}" for o in outputs])
    assert len(names) == nx_graph.number_of_nodes() + len(outputs)
    edges = sorted((names[e.get_source()], names[e.get_destination()]) for e in dot.get_edges())
    expected = sorted([(u, v) for u, v, _ in nx_graph.edges(keys=True)] + [(o, f"output {o}") for o in outputs])
    assert edges == expected


def test_node_kinds_are_drawn_distinctly():
    source = """
    graph g {
        input x: [2] = [1, 2]
        param w: [2] = ones
        const half = 0.5
        xw = mul(x, w)
        y = mul(xw, half)
        output y
    }
    """
    graph = front_end(textwrap.dedent(source))[0]
    dot = parse_dot(draw.dot_source(graph))
    by_name = {dot_unquote(n.get("tooltip")): n for n in dot_nodes(dot).values()}
    styles = {name: (n.get("shape"), n.get("style"), n.get("fillcolor")) for name, n in by_name.items()}
    assert len({styles["x"], styles["w"], styles["half"], styles["y"]}) == 4
    assert styles["w"][1] == '"rounded,filled"'
    assert "dashed" in styles["half"][1]
    assert styles["y"][0] == '"ellipse"'
    assert label_lines(by_name["x"].get("label")) == ["x", "input"]
    assert label_lines(by_name["w"].get("label")) == ["w", "param"]
    assert label_lines(by_name["half"].get("label")) == ["half", "const"]
    assert label_lines(by_name["y"].get("label")) == ["×", "y"]
    assert label_lines(by_name["output y"].get("label")) == ["output"]


def test_two_layer_net_edges_show_dtype_and_shape_with_the_batch_dimension():
    labels = edge_labels(parse_dot(draw.dot_source(compiled("two_layer_net.graph"))))
    assert labels[("x", "affine1")] == [(["f64[N, 784]"], [])]
    assert labels[("W1", "affine1")] == [(["f64[784, 50]"], [])]
    assert labels[("b1", "affine1")] == [(["f64[50]"], [])]
    assert labels[("affine1", "relu1")] == [(["f64[N, 50]"], [])]
    assert labels[("y", "loss")] == [(["f64[N, 10]"], [])]
    assert labels[("t", "loss")] == [(["f64[N, 10]"], [])]
    assert labels[("loss", "output loss")] == [([], [])]  # a scalar: no type


def test_two_layer_net_op_nodes_show_op_and_name():
    dot = parse_dot(draw.dot_source(compiled("two_layer_net.graph")))
    labels = {dot_unquote(n.get("tooltip")): label_lines(n.get("label")) for n in dot_nodes(dot).values()}
    assert labels["affine1"] == ["affine", "affine1"]
    assert labels["relu1"] == ["relu", "relu1"]
    assert labels["loss"] == ["softmax_loss", "loss"]
    assert labels["x"] == ["x", "input from images"]


# --- values and gradients -------------------------------------------------------


def test_apple_values_above_and_gradients_below_as_in_the_book():
    program = ran("apple.graph")
    labels = edge_labels(parse_dot(draw.to_dot(draw.program_diagram(program))))
    # Figure 5-16: 100, 2, 200, 1.1, 220 forward; 2.2, 110, 1.1, 200, 1 backward.
    assert labels == {
        ("apple", "apple_price"): [(["100"], ["2.2"])],
        ("apple_num", "apple_price"): [(["2"], ["110"])],
        ("apple_price", "price"): [(["200"], ["1.1"])],
        ("tax", "price"): [(["1.1"], ["200"])],
        ("price", "output price"): [(["220"], ["1"])],
    }


def test_apple_gradients_are_red_and_below_the_edge():
    dot = draw.to_dot(draw.program_diagram(ran("apple.graph")))
    edges = parse_dot(dot).get_edges()
    for edge in edges:
        assert f'COLOR="{draw.RED}"' in edge.get("taillabel")
        assert float(edge.get("labelangle").strip('"')) < 0  # clockwise from the edge: below it


def test_values_only_and_grads_only():
    program = ran("apple.graph")
    values = edge_labels(parse_dot(draw.to_dot(draw.program_diagram(program, grads=False))))
    assert values[("apple", "apple_price")] == [(["100"], [])]
    grads = edge_labels(parse_dot(draw.to_dot(draw.program_diagram(program, values=False))))
    assert grads[("apple", "apple_price")] == [([], ["2.2"])]


def test_arrays_show_shape_mean_and_norm_and_gradients_go_under_values():
    program = ran("two_layer_net.graph")
    labels = edge_labels(parse_dot(draw.to_dot(draw.program_diagram(program))))
    ((lines, below),) = labels[("W1", "affine1")]
    w1, g1 = program.params["W1"], program.gradients["W1"]
    assert lines == [
        "f64[784, 50]",
        f"[784, 50] mean {w1.mean():.3g}, norm {np.linalg.norm(w1):.3g}",
        f"mean {g1.mean():.3g}, norm {np.linalg.norm(g1):.3g}",
    ]
    assert below == []  # array summaries are too long to sit below the edge
    ((lines, _),) = labels[("t", "loss")]
    assert len(lines) == 2  # labels get no gradient
    ((lines, _),) = labels[("loss", "output loss")]
    assert lines == [draw.number_text(float(program.values["loss"])), "1"]


def test_fan_out_edges_carry_their_share_and_the_node_the_total():
    program = ran("fanout.graph")
    dot = parse_dot(draw.to_dot(draw.program_diagram(program)))
    labels = edge_labels(dot)
    # x = 3, y = 4: square = x*x gives each of its two reads 3; xy = x*y gives x 4.
    assert labels[("x", "square")] == [(["3", "3"], []), (["3", "3"], [])]
    assert labels[("x", "xy")] == [(["3", "4"], [])]
    assert labels[("y", "xy")] == [(["4", "3"], [])]
    x = next(n for n in dot_nodes(dot).values() if dot_unquote(n.get("tooltip")) == "x")
    assert label_lines(x.get("label")) == ["x", "input", "grad 10"]


def test_edge_gradients_sum_to_each_values_gradient():
    program = ran("apple_orange.graph")
    shares = draw.edge_gradients(program)
    totals: dict[str, float] = {}
    for (node, position), grad in shares.items():
        arg = program.ir.decls[node].args[position]
        totals[arg] = totals.get(arg, 0.0) + float(grad)
    for name, total in totals.items():
        assert total == pytest.approx(float(program.gradients[name]))


def test_edge_gradients_come_from_the_run_and_its_seed():
    program = graphc.compile_file(MODELS / "fanout.graph")
    program.forward()
    program.backward(seed=2.0)
    shares = draw.edge_gradients(program)
    # x = 3, y = 4, f = x*x + x*y: each read's share, doubled by the seed 2.
    assert {k: float(v) for k, v in shares.items()} == {
        ("f", 0): 2.0,
        ("f", 1): 2.0,
        ("xy", 0): 8.0,
        ("xy", 1): 6.0,
        ("square", 0): 6.0,
        ("square", 1): 6.0,
    }
    assert float(program.gradients["x"]) == 20.0  # the run itself is left as it was


def test_nan_and_inf_are_flagged():
    program = graphc.compile_source("graph g { input x = 1\n input y = 1\n z = mul(x, y)\n output z }")
    program.forward(x=np.inf, y=0.0)
    program.backward()
    labels = edge_labels(parse_dot(draw.to_dot(draw.program_diagram(program))))
    assert labels[("x", "z")] == [(["inf"], ["0"])]
    assert labels[("z", "output z")] == [(["NaN"], ["1"])]
    assert labels[("y", "z")] == [(["0"], ["⚠ inf"])]
    text, flagged = draw.value_text(np.array([1.0, np.nan, np.inf, 2.0, 3.0]), shape=False)
    assert flagged and text == "mean 2, norm 3.74, 1 NaN, 1 inf"


def test_value_text():
    assert draw.value_text(np.float64(220.00000000000003)) == ("220", False)
    assert draw.value_text(np.array(110.00000000000001)) == ("110", False)
    assert draw.value_text(np.array(1e-300)) == ("1e-300", False)
    assert draw.value_text(123456789.123456789) == ("1.23457e+08", False)
    assert draw.value_text(np.array([[1.0, 2.5], [3.0, -4.0]])) == ("[[1, 2.5], [3, -4]]", False)
    assert draw.value_text(np.arange(6.0).reshape(2, 3)) == ("[2, 3] mean 2.5, norm 7.42", False)
    assert draw.value_text(np.array([True, False])) == ("[1, 0]", False)


def test_value_text_prints_no_rounding_noise():
    """A gradient whose mean is zero in exact arithmetic (a softmax_loss's, say) shows
    `mean 0`, not the noise a BLAS leaves; so does an element that is noise beside the rest."""
    rows = np.array([[0.25, -0.25, 0.5, -0.5, 1e-3]] * 3)
    rows[:, -1] = -rows[:, :-1].sum(axis=1) + 3e-17  # each row sums to rounding noise
    assert draw.value_text(rows, shape=False) == ("mean 0, norm 1.37", False)
    assert draw.value_text(np.array([1.0, 2e-17, -3.0])) == ("[1, 0, -3]", False)
    assert draw.value_text(np.float32(0.1) * 3) == ("0.3", False)  # f32: six digits, no more than it holds


# --- the backward plan ----------------------------------------------------------


def test_backward_plan_of_apple():
    dot = parse_dot(
        draw.to_dot(draw.backward_diagram(make_plan(compiled("apple.graph").checked, compiled("apple.graph").types)))
    )
    nodes = dot_nodes(dot)
    labels = {name: label_lines(n.get("label")) for name, n in nodes.items()}
    grads = sorted(lines[0] for name, lines in labels.items() if name.startswith("g"))
    assert grads == ["d_apple", "d_apple_num", "d_apple_price", "d_price", "d_tax"]
    steps = sorted(lines[1] for name, lines in labels.items() if name.startswith("s"))
    assert steps == ["apple_price backward", "price backward"]
    reads = sorted(lines[0] for name, lines in labels.items() if name.startswith("r"))
    assert reads == ["apple", "apple_num", "apple_price", "tax"]
    names = {name: lines[0] if not name.startswith("s") else lines[1] for name, lines in labels.items()}
    solid = sorted(
        (names[e.get_source()], names[e.get_destination()], tuple(label_lines(e.get("label"))))
        for e in dot.get_edges()
        if e.get("style") is None
    )
    assert solid == [
        ("apple_price backward", "d_apple", ("d_apple_price * apple_num",)),
        ("apple_price backward", "d_apple_num", ("d_apple_price * apple",)),
        ("d_apple_price", "apple_price backward", ()),
        ("d_price", "price backward", ()),
        ("price backward", "d_apple_price", ("d_price * tax",)),
        ("price backward", "d_tax", ("d_price * apple_price",)),
    ]
    dashed = sorted((names[e.get_source()], names[e.get_destination()]) for e in dot.get_edges() if e.get("style"))
    assert dashed == [
        ("apple", "apple_price backward"),
        ("apple_num", "apple_price backward"),
        ("apple_price", "price backward"),
        ("tax", "price backward"),
    ]


def test_backward_plan_with_gradients_and_fan_out():
    program = ran("fanout.graph")
    diagram = draw.program_diagram(program, plan="backward")
    by_id = {n.id: n for n in diagram.nodes}
    grads = {n.name: n.grad for n in diagram.nodes if n.kind == "grad"}
    assert grads == {"d_f": "1", "d_square": "1", "d_xy": "1", "d_x": "10", "d_y": "3"}
    rules = sorted(e.rule for e in diagram.edges if e.rule and by_id[e.head].name == "d_x")
    assert rules == ["+= d_square * x", "+= d_square * x", "d_xy * y"]
    saved = {n.name for n in draw.backward_diagram(ran("two_layer_net.graph").plan).nodes if n.kind == "read"}
    assert {"loss.probs", "relu1.mask", "W1", "x"} <= saved


# --- escaping -------------------------------------------------------------------

TRICKY = {
    "apple": 'say "hi"',
    "apple_num": "back\\slash\\",
    "tax": "<b>&amp;</b> α",
    "apple_price": "ŷ #quot; `tick` | ;",
    "price": '}"; end [label=x] \\"',
}


def renamed(source: str, mapping: dict[str, str]) -> CompiledGraph:
    """A graph compiled from `source` whose values are renamed after parsing:
    .graph names are identifiers, diagrams must take any name."""
    (graph,) = front_end(textwrap.dedent(source))
    ir = graph.ir
    new = lambda name: mapping.get(name, name)  # noqa: E731
    decls = {}
    for name, decl in ir.decls.items():
        changes = {"name": new(name)}
        if isinstance(decl, OpNode):
            changes["args"] = tuple(new(a) for a in decl.args)
        decls[new(name)] = dataclasses.replace(decl, **changes)
    ir = dataclasses.replace(
        ir,
        decls=decls,
        outputs=tuple((new(n), s) for n, s in ir.outputs),
        expects=(),
    )
    checked = check(ir)
    return CompiledGraph(checked, infer_shapes(checked))


def tricky_program() -> graphc.Program:
    program = graphc.Program(renamed((MODELS / "apple.graph").read_text(), TRICKY))
    program.forward()
    program.backward()
    return program


def test_tricky_names_survive_dot():
    program = tricky_program()
    text = draw.to_dot(draw.program_diagram(program))
    dot = parse_dot(text)
    nodes = dot_nodes(dot)
    assert sorted(nodes) == ["n0", "n1", "n2", "n3", "n4", "out0"]  # ids never carry names
    names = node_names(dot)
    assert sorted(names.values()) == sorted(list(TRICKY.values()) + [f"output {TRICKY['price']}"])
    for node_id, node in nodes.items():
        if node_id != "out0":
            assert names[node_id] in label_lines(node.get("label"))
    labels = edge_labels(dot)
    assert labels[(TRICKY["apple"], TRICKY["apple_price"])] == [(["100"], ["2.2"])]
    assert labels[(TRICKY["price"], f"output {TRICKY['price']}")] == [(["220"], ["1"])]


def test_dot_string_and_html_escaping():
    assert draw.dot_string('a"b\\c') == '"a\\"b\\\\c"'
    assert draw.html_text('<a href="x">&</a>') == "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"


def test_long_numbers_and_literal_consts():
    source = """
    graph g {
        input x = 1e-300
        y = mul(x, 123456789.123456789)
        output y
    }
    """
    program = graphc.compile_source(textwrap.dedent(source))
    program.forward()
    program.backward()
    dot = parse_dot(draw.to_dot(draw.program_diagram(program)))
    names = node_names(dot)
    assert "123456789.123456789" in names.values()  # a literal's const is named by its text
    labels = edge_labels(dot)
    assert labels[("x", "y")] == [(["1e-300"], ["1.23457e+08"])]
    assert labels[("123456789.123456789", "y")] == [(["1.23457e+08"], [])]  # consts get no gradient
    assert labels[("y", "output y")] == [(["1.23457e-292"], ["1"])]


@needs_dot
def test_tricky_names_render_to_svg():
    svg = draw.render(draw.to_dot(draw.program_diagram(tricky_program())), "svg")
    root = ET.fromstring(svg)
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert set(TRICKY.values()) <= texts
    assert {"100", "2.2", "220", "1"} <= texts


def mermaid_unescape(text: str) -> str:
    return html.unescape(re.sub(r"#(\w+);", r"&\1;", text).replace("&35;", "&#35;").replace("&96;", "&#96;"))


def test_tricky_names_survive_mermaid():
    lines = to_mermaid(draw.program_diagram(tricky_program())).splitlines()
    node_lines = [line.strip() for line in lines if re.match(r"\s+n\d+[\[(]", line)]
    assert len(node_lines) == 5
    inner = [line[line.index('"') + 1 : line.rindex('"')] for line in node_lines]
    for text in inner:
        assert '"' not in text and "`" not in text and "<" not in text.replace("<br/>", "")
    labels = [mermaid_unescape(text).split("<br/>") for text in inner]
    assert [lines[0] for lines in labels[:3]] == [TRICKY["apple"], TRICKY["apple_num"], TRICKY["tax"]]
    assert [lines[1] for lines in labels[3:]] == [TRICKY["apple_price"], TRICKY["price"]]
    assert '    n0 -->|"100<br/>grad 2.2"| n3' in lines


def test_mermaid_text_escapes():
    assert to_mermaid.__module__ == "graphc.mermaid"
    from graphc.mermaid import mermaid_text

    assert mermaid_text('a"b#c<d>e&f`g') == "a#quot;b#35;c#lt;d#gt;e#amp;f#96;g"
    assert mermaid_text("α ŷ") == "α ŷ"


# --- Mermaid ------------------------------------------------------------------


def test_mermaid_apple_with_values_and_gradients():
    assert to_mermaid(draw.program_diagram(ran("apple.graph"))) == textwrap.dedent("""\
        flowchart LR
            %% buy_apple
            n0["apple<br/>input"]
            n1["apple_num<br/>input"]
            n2["tax<br/>input"]
            n3(("×<br/>apple_price"))
            n4(("×<br/>price"))
            out0>"output"]
            n0 -->|"100<br/>grad 2.2"| n3
            n1 -->|"2<br/>grad 110"| n3
            n3 -->|"200<br/>grad 1.1"| n4
            n2 -->|"1.1<br/>grad 200"| n4
            n4 -->|"220<br/>grad 1"| out0
            classDef input fill:#ffffff,stroke:#333333
            classDef op fill:#e8eff8,stroke:#3d5a80
            classDef output fill:#ffffff,stroke:#ffffff,color:#6b6b6b
            class n0,n1,n2 input
            class n3,n4 op
            class out0 output
        """)


def test_mermaid_structure_shapes_and_backward():
    text = to_mermaid(draw.graph_diagram(compiled("two_layer_net.graph")), rankdir="TB")
    lines = text.splitlines()
    assert lines[0] == "flowchart TB"
    assert '    n0 -->|"f64[N, 784]"| n6' in lines  # x -> affine1
    assert "    n9 --> out0" in lines  # loss is a scalar
    assert "    class n2,n3,n4,n5 param" in lines
    backward = to_mermaid(
        draw.backward_diagram(make_plan(compiled("apple.graph").checked, compiled("apple.graph").types))
    )
    assert '    s0{{"×<br/>price backward"}}' in backward.splitlines()
    assert "    r0 -.-> s0" in backward.splitlines()
    assert '    s0 -->|"d_price * tax"| g1' in backward.splitlines()


# --- rendering and the command line ---------------------------------------------


@needs_dot
def test_svg_is_valid_and_names_every_node(tmp_path):
    out = tmp_path / "two.svg"
    assert main(["draw", str(MODELS / "two_layer_net.graph"), "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"x", "t", "W1", "b1", "W2", "b2", "affine1", "relu1", "y", "loss", "output"} <= texts
    assert {"f64[N, 784]", "f64[784, 50]"} <= texts
    titles = [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
    assert len(titles) == 11


@needs_dot
@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF-")])
def test_png_and_pdf(tmp_path, suffix, magic):
    out = tmp_path / f"apple{suffix}"
    assert main(["draw", str(MODELS / "apple.graph"), "--values", "--grads", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


def test_dot_and_mermaid_files_and_stdout(tmp_path, capsys):
    dot_file, mmd_file = tmp_path / "apple.dot", tmp_path / "apple.mmd"
    apple = str(MODELS / "apple.graph")
    assert main(["draw", apple, "--values", "--grads", "-o", str(dot_file)]) == 0
    assert main(["draw", apple, "--values", "--grads", "-o", str(mmd_file)]) == 0
    assert main(["draw", apple, "--values", "--grads", "-o", "-"]) == 0
    out, err = capsys.readouterr()
    assert out == dot_file.read_text(encoding="utf-8")
    assert err == f"wrote {dot_file}\nwrote {mmd_file}\n"
    assert mmd_file.read_text(encoding="utf-8") == to_mermaid(draw.program_diagram(ran("apple.graph")))


def test_compile_emit_dot_prints_the_same_dot_as_draw(capsys):
    model = str(MODELS / "two_layer_net.graph")
    assert main(["compile", model, "--emit", "dot"]) == 0
    compiled_dot = capsys.readouterr().out
    assert main(["draw", model, "-o", "-"]) == 0
    assert capsys.readouterr().out == compiled_dot
    assert compiled_dot == draw.dot_source(compiled("two_layer_net.graph"))


def test_rankdir_and_feeds(capsys):
    assert main(["draw", str(MODELS / "apple.graph"), "--rankdir", "TB", "--values", "--set", "apple=150"]) == 0
    dot = parse_dot(capsys.readouterr().out)
    assert dot.get_graph_defaults()[0]["rankdir"] == '"TB"'
    assert edge_labels(dot)[("apple", "apple_price")] == [(["150"], [])]


def test_weights_and_feeds_are_applied_and_checked(tmp_path, capsys):
    weights = tmp_path / "w.npz"
    np.savez(weights, w=np.array(2.0), b=np.array(0.0))
    model = str(MODELS / "sigmoid.graph")
    assert main(["draw", model, "--values", "--weights", str(weights)]) == 0
    labels = edge_labels(parse_dot(capsys.readouterr().out))
    assert labels[("w", "wx")] == [(["2"], [])]
    assert labels[("wx", "z")] == [(["4"], [])]
    # Without --values nothing is shown, but a wrong feed is still an error.
    assert main(["draw", model, "--set", "nope=1"]) == 2
    assert "no input or param named `nope`" in capsys.readouterr().err


def test_unknown_extension(tmp_path, capsys):
    out = tmp_path / "apple.jpg"
    assert main(["draw", str(MODELS / "apple.graph"), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"graphc draw: error[E507]: cannot tell what to draw from the extension of `{out}`\n"
        "hint: supported extensions: .svg, .png, .pdf, .dot, .mmd (`-o -` writes DOT to stdout)\n"
    )
    assert not out.exists()


MISSING_DOT = (
    "graphc draw: error[E509]: cannot render {out}: Graphviz's `dot` program is not installed (or not on PATH)\n"
    "hint: install Graphviz (Debian/Ubuntu: `apt-get install graphviz`; macOS: `brew install graphviz`), "
    "or write .dot or .mmd, which need nothing but graphc\n"
)


def test_missing_dot(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "apple.svg"
    assert main(["draw", str(MODELS / "apple.graph"), "-o", str(out)]) == 2
    assert capsys.readouterr().err == MISSING_DOT.format(out=out)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    # DOT and Mermaid need nothing but graphc.
    assert main(["draw", str(MODELS / "apple.graph"), "-o", str(tmp_path / "apple.dot")]) == 0
    assert main(["draw", str(MODELS / "apple.graph"), "-o", str(tmp_path / "apple.mmd")]) == 0


def test_missing_dot_when_graphviz_cannot_find_it(monkeypatch):
    # The lookup says yes but running dot fails: the same message.
    monkeypatch.setattr(draw, "find_dot", lambda: "/usr/bin/dot")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GraphcError) as info:
        draw.render("digraph { a }", "svg", "x.svg")
    assert info.value.render() + "\n" == MISSING_DOT.format(out="x.svg")


def fake_dot(tmp_path, monkeypatch, script: str) -> None:
    """A `dot` on PATH that runs `script` instead of Graphviz."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dot = bin_dir / "dot"
    dot.write_text("#!/bin/sh\n" + script + "\n")
    dot.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_graphviz_errors_are_reported_once(tmp_path, capsys, monkeypatch):
    fake_dot(tmp_path, monkeypatch, 'echo "Error: <stdin>: syntax error in line 1" >&2; exit 1')
    out = tmp_path / "apple.svg"
    assert main(["draw", str(MODELS / "apple.graph"), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"graphc draw: error[E510]: cannot render {out}: Graphviz failed: Error: <stdin>: syntax error in line 1\n"
    )
    assert not out.exists()


def test_a_dot_that_writes_nothing_is_an_error(tmp_path, capsys, monkeypatch):
    fake_dot(tmp_path, monkeypatch, "/bin/cat > /dev/null; exit 0")
    out = tmp_path / "apple.svg"
    assert main(["draw", str(MODELS / "apple.graph"), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"graphc draw: error[E510]: cannot render {out}: Graphviz's `dot` wrote nothing\n"
        "hint: check the Graphviz installation (`dot -V`), or write .dot or .mmd\n"
    )
    assert not out.exists()


# --- Jupyter --------------------------------------------------------------------


@needs_dot
def test_program_shows_itself_as_svg():
    program = graphc.compile_file(MODELS / "apple.graph")
    root = ET.fromstring(program._repr_svg_())
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"apple", "apple_num", "tax", "apple_price", "price"} <= texts
    assert "220" not in texts  # not run yet
    program.forward()
    program.backward()
    texts = {t.text for t in ET.fromstring(program._repr_svg_()).iter(f"{SVG}text")}
    assert {"100", "2.2", "220", "1"} <= texts
    bundle = program._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/plain"}


def test_program_shows_itself_as_mermaid_without_graphviz(monkeypatch):
    monkeypatch.setattr(draw, "find_dot", lambda: None)
    program = ran("apple.graph")
    assert program._repr_svg_() is None
    bundle = program._repr_mimebundle_()
    assert bundle["text/plain"] == repr(program)
    assert bundle["text/markdown"].startswith("```mermaid\nflowchart LR\n")
    assert '    n4 -->|"220<br/>grad 1"| out0\n' in bundle["text/markdown"]


# --- the README's pictures ------------------------------------------------------


def documented_commands() -> list[list[str]]:
    commands = []
    for line in (ROOT / "docs" / "commands.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("graphc draw ") and " -o docs/" in line:
            commands.append(shlex.split(line))
    return commands


def svg_texts(data: bytes) -> list[str]:
    return sorted(t.text or "" for t in ET.fromstring(data).iter(f"{SVG}text"))


@needs_dot
def test_docs_pictures_are_what_the_commands_shown_draw(tmp_path, monkeypatch):
    commands = documented_commands()
    targets = {args[args.index("-o") + 1] for args in commands}
    assert {"docs/apple.svg", "docs/two_layer_net.svg"} <= targets
    monkeypatch.chdir(ROOT)
    for args in commands:
        target = args[args.index("-o") + 1]
        fresh = tmp_path / Path(target).name
        argv = args[1:]
        argv[argv.index("-o") + 1] = str(fresh)
        assert main(argv) == 0
        assert svg_texts((ROOT / target).read_bytes()) == svg_texts(fresh.read_bytes()), (
            f"{target} is stale: run `{' '.join(args)}`"
        )

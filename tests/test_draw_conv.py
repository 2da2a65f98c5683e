"""Diagrams of convolutional graphs: each feature map's shape on its edges,
and a window op's filters or window, stride and padding inside its node, in
DOT (read back with pydot), Mermaid and SVG, with values and without."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET

import pytest
from test_draw import SVG, compiled, dot_nodes, dot_unquote, edge_labels, label_lines, needs_dot, parse_dot

import graphc
from graphc import draw
from graphc.compiler import front_end
from graphc.mermaid import to_mermaid

# pydot's parser calls pyparsing names that pyparsing now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")


def node_labels(dot_text: str) -> dict[str, list[str]]:
    """Value name -> the lines of its node's label."""
    dot = parse_dot(dot_text)
    return {dot_unquote(n.get("tooltip")): label_lines(n.get("label")) for n in dot_nodes(dot).values()}


def test_simple_conv_net_nodes_show_filters_window_and_stride():
    labels = node_labels(draw.dot_source(compiled("simple_conv_net.graph")))
    assert labels["conv2d1"] == ["conv2d", "30 filters 5×5, stride 1", "conv2d1"]
    assert labels["pool"] == ["max_pool", "2×2, stride 2", "pool"]
    # Ops that slide no window are drawn as before.
    assert labels["relu1"] == ["relu", "relu1"]
    assert labels["affine1"] == ["affine", "affine1"]
    assert labels["loss"] == ["softmax_loss", "loss"]


def test_simple_conv_net_edges_show_each_feature_maps_shape():
    labels = edge_labels(parse_dot(draw.dot_source(compiled("simple_conv_net.graph"))))
    assert labels[("x", "conv2d1")] == [(["f64[N, 1, 28, 28]"], [])]
    assert labels[("W1", "conv2d1")] == [(["f64[30, 1, 5, 5]"], [])]
    assert labels[("b1", "conv2d1")] == [(["f64[30]"], [])]
    assert labels[("conv2d1", "relu1")] == [(["f64[N, 30, 24, 24]"], [])]
    assert labels[("relu1", "pool")] == [(["f64[N, 30, 24, 24]"], [])]
    assert labels[("pool", "affine1")] == [(["f64[N, 30, 12, 12]"], [])]
    assert labels[("W2", "affine1")] == [(["f64[4320, 100]"], [])]


def test_with_values_the_run_s_shapes_follow_the_declared_ones():
    program = graphc.compile_file("models/simple_conv_net.graph")
    program.forward()
    dot = draw.to_dot(draw.program_diagram(program, grads=False))
    labels = edge_labels(parse_dot(dot))
    (lines, below) = labels[("conv2d1", "relu1")][0]
    assert lines[0] == "f64[N, 30, 24, 24]"
    assert lines[1].startswith("[3, 30, 24, 24] mean ")  # the made-up batch of 3
    assert below == []
    (lines, _) = labels[("pool", "affine1")][0]
    assert lines[0] == "f64[N, 30, 12, 12]" and lines[1].startswith("[3, 30, 12, 12] mean ")
    assert node_labels(dot)["conv2d1"] == ["conv2d", "30 filters 5×5, stride 1", "conv2d1"]


def test_simple_conv_net_in_mermaid():
    mermaid = to_mermaid(draw.graph_diagram(compiled("simple_conv_net.graph")))
    lines = mermaid.splitlines()
    assert '    n8(("conv2d<br/>30 filters 5×5, stride 1<br/>conv2d1"))' in lines
    assert '    n10(("max_pool<br/>2×2, stride 2<br/>pool"))' in lines
    assert '    n9(("relu<br/>relu1"))' in lines
    assert '    n0 -->|"f64[N, 1, 28, 28]"| n8' in lines
    assert '    n8 -->|"f64[N, 30, 24, 24]"| n9' in lines
    assert '    n10 -->|"f64[N, 30, 12, 12]"| n11' in lines


WINDOWS = """
graph g {
    input x: [N, 3, 9, 9] from images
    param F: [1, 3, 3, 5] = normal(0.1)
    param c: [1] = zeros
    param G: [4, 1, 2, 2] = normal(0.1)
    param d: [4] = zeros
    one = conv2d(x, F, c, stride=2, pad=1)
    many = conv2d(one, G, d)
    pooled = max_pool(many, size=3, stride=1, pad=1)
    output pooled
}
"""


def test_padding_other_strides_one_filter_and_rectangles():
    graph = front_end(textwrap.dedent(WINDOWS))[0]
    labels = node_labels(draw.dot_source(graph))
    # Padding shows only where there is some; a filter's height × width as declared.
    assert labels["one"] == ["conv2d", "1 filter 3×5, stride 2, pad 1", "one"]
    assert labels["many"] == ["conv2d", "4 filters 2×2, stride 1", "many"]
    assert labels["pooled"] == ["max_pool", "3×3, stride 1, pad 1", "pooled"]
    edges = edge_labels(parse_dot(draw.dot_source(graph)))
    assert edges[("one", "many")] == [(["f64[N, 1, 5, 4]"], [])]
    assert edges[("many", "pooled")] == [(["f64[N, 4, 4, 3]"], [])]


def test_backward_plan_steps_are_unchanged():
    program = graphc.compile_file("models/simple_conv_net.graph")
    dot = draw.to_dot(draw.backward_diagram(program.plan))
    steps = {label[-1]: label for label in node_labels(dot).values() if label[-1].endswith(" backward")}
    assert steps["conv2d1 backward"] == ["conv2d", "conv2d1 backward"]
    assert steps["pool backward"] == ["max_pool", "pool backward"]


@needs_dot
def test_svg_shows_the_window_and_the_shapes(tmp_path):
    target = tmp_path / "net.svg"
    draw.write_diagram(draw.graph_diagram(compiled("simple_conv_net.graph")), target)
    texts = [t.text for t in ET.fromstring(target.read_bytes()).iter(f"{SVG}text")]
    assert "30 filters 5×5, stride 1" in texts
    assert "2×2, stride 2" in texts
    assert texts.count("f64[N, 30, 24, 24]") == 2
    assert "f64[N, 30, 12, 12]" in texts

"""Generated modules compared whole, as a reader sees them: the docstring's
usage, tables and notes, the constants, state, dropout's generator, scores()
and predict(). tests/test_codegen.py checks that the code runs right; these
golden files pin down the rest of what graphc writes.

After an intended change, rewrite the golden files with
`python tests/test_codegen_whole.py` and read the diff before committing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from graphc.codegen import python_module
from graphc.compiler import CompiledGraph, front_end

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

# (source file relative to ROOT, graph, python_module's keywords, golden file in tests/data)
CASES = [
    ("models/two_layer_net.graph", "two_layer_net", {}, "two_layer_net_module.py.txt"),
    ("models/multi_layer_net.graph", "multi_layer_net_bn", {}, "multi_layer_net_bn_module.py.txt"),
    ("models/multi_layer_net.graph", "multi_layer_net_bn", {"mode": "eval"}, "multi_layer_net_bn_eval_module.py.txt"),
    ("models/multi_layer_net.graph", "multi_layer_net_dropout", {}, "multi_layer_net_dropout_module.py.txt"),
    ("tests/data/consts.graph", "consts", {"dtype": "float32"}, "consts_module.py.txt"),
    ("tests/data/outputs.graph", "outputs", {"wrt": ()}, "outputs_module.py.txt"),
]


def _compiled(source: str, graph: str) -> CompiledGraph:
    text = (ROOT / source).read_text(encoding="utf-8")
    return next(g for g in front_end(text, source) if g.name == graph)


def _generated(source: str, graph: str, keywords: dict) -> str:
    return python_module(_compiled(source, graph), **keywords)


@pytest.mark.parametrize(("source", "graph", "keywords", "golden"), CASES, ids=[c[3] for c in CASES])
def test_the_module_whole(source, graph, keywords, golden):
    expected = (DATA / golden).read_text(encoding="utf-8")
    assert _generated(source, graph, keywords) == expected


if __name__ == "__main__":
    for source, graph, keywords, golden in CASES:
        (DATA / golden).write_text(_generated(source, graph, keywords), encoding="utf-8")
        print(f"wrote tests/data/{golden}", file=sys.stderr)

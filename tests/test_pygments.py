"""graphc's Pygments lexer: found by name and file name through its entry point, every model
and every graph the docs show lexes with no error token, each kind of word gets its token type,
its word lists are graphc's own, and nothing else in graphc imports Pygments."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String

from graphc import initializers, ir
from graphc.ops import REGISTRY
from graphc.pygments_lexer import DTYPES, INITIALIZERS, OPS, GraphLexer

ROOT = Path(__file__).resolve().parent.parent
GRAPH_FILES = [
    *sorted((ROOT / "models").glob("*.graph")),
    *sorted((ROOT / "docs").rglob("*.graph")),
    *sorted((ROOT / "graphc" / "std").glob("*.graph")),
]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _graph_fences() -> list[tuple[str, str]]:
    """The ```graph blocks of the docs, each with where it is."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```graph\n(.*?)^```$", text, re.S | re.M):
            found.append((f"{page.name}:{text.count(chr(10), 0, match.start()) + 1}", match.group(1)))
    return found


def test_the_entry_point_registers_the_lexer():
    (point,) = [p for p in entry_points(group="pygments.lexers") if p.value.startswith("graphc.")]
    assert point.load() is GraphLexer
    assert type(get_lexer_by_name("graph")) is GraphLexer
    assert type(get_lexer_by_name("graphc")) is GraphLexer
    # Pygments' Roboconf lexer claims *.graph too: graphc's wins on the name and on the text.
    assert type(get_lexer_for_filename("net.graph")) is GraphLexer
    assert type(get_lexer_for_filename("net.graph", code=(ROOT / "models/apple.graph").read_text())) is GraphLexer


@pytest.mark.parametrize("path", GRAPH_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_graph_file_lexes_without_an_error_token(path):
    text = path.read_text(encoding="utf-8")
    tokens = list(GraphLexer().get_tokens(text))
    assert [value for kind, value in tokens if kind in Error] == []
    assert "".join(value for _, value in tokens) == text


def test_the_docs_label_graphs_as_graph_and_they_lex_cleanly():
    fences = _graph_fences()
    assert len(fences) >= 6  # README's apple and multi_layer_net, language.md's four
    for where, body in fences:
        assert [v for k, v in GraphLexer().get_tokens(body) if k in Error] == [], where
    # Every block that is a whole .graph file is labelled so.
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"<!-- file: [^>]*\.graph -->\n```(?!graph\n)", text), page.name


SAMPLE = """\
import "std/layers.graph"  # blocks
block dense(x, n_out) {
    param W: [in(x), n_out] = he
}
graph g {
    dim N = 3
    input x: f64[N, 784] = uniform(0, 1.5) from images
    y = sum(x, axis=-1, keepdims=true)
    x -> relu as h -> repeat 2 dense(10) -> z
    output y, z
    expect grad(x) == 2.5e-3 within 1e-9
}
"""


def test_each_kind_of_word_gets_its_token_type():
    tokens = [(kind, value) for kind, value in GraphLexer().get_tokens(SAMPLE) if value.strip()]
    kinds: dict[str, set] = {}
    for kind, value in tokens:
        kinds.setdefault(value, set()).add(kind)

    def is_(value: str, kind) -> None:
        assert kinds[value] == {kind}, (value, kinds[value])

    for word in ("import",):
        is_(word, Keyword.Namespace)
    for word in ("block", "graph", "dim", "input", "param"):
        is_(word, Keyword.Declaration)
    for word in ("from", "as", "repeat", "output", "expect", "within", "grad", "in"):
        is_(word, Keyword)
    is_("f64", Keyword.Type)
    is_("true", Keyword.Constant)
    for word in ("sum", "relu"):
        is_(word, Name.Builtin)
    for word in ("he", "uniform"):
        is_(word, Name.Builtin.Pseudo)
    assert Name.Function in kinds["dense"]  # where the block is defined
    is_("g", Name.Class)
    for word in ("axis", "keepdims"):
        is_(word, Name.Attribute)
    for word in ("N", "W", "y", "h"):
        assert Name.Variable in kinds[word], word
    for word in ("3", "784", "-1", "10", "0", "2"):
        is_(word, Number.Integer)
    for word in ("1.5", "2.5e-3", "1e-9"):
        is_(word, Number.Float)
    for word in ("->", "==", "=", ":"):
        is_(word, Operator)
    for word in ("(", ")", "[", "]", "{", "}", ","):
        is_(word, Punctuation)
    is_("# blocks", Comment.Single)
    assert any(kind in String for kind, value in tokens if value == '"')


def test_the_word_lists_are_graphcs():
    assert sorted(OPS) == sorted(REGISTRY), "add the new op to graphc/pygments_lexer.py's OPS"
    assert sorted(INITIALIZERS) == sorted(initializers.KINDS)
    assert sorted(DTYPES) == sorted(ir.DTYPES)


def test_nothing_else_in_graphc_imports_pygments():
    sources = [p for p in (ROOT / "graphc").rglob("*.py") if p.name != "pygments_lexer.py"]
    assert [p.name for p in sources if re.search(r"^\s*(import|from)\s+pygments", p.read_text(), re.M)] == []
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, graphc, graphc.cli, graphc.fmt; print('pygments' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout == "False\n"


def test_the_lexer_knows_every_keyword_of_the_grammar():
    from graphc.pygments_lexer import DECLARATIONS, KEYWORDS

    grammar = (ROOT / "grammars" / "graphc.lark").read_text()
    keywords = set(re.findall(r'"([a-z][a-z0-9]*)"', grammar))
    known = {"graph", "block", "import", "as", "grad", "in", *DECLARATIONS, *KEYWORDS, *DTYPES}
    assert known == keywords

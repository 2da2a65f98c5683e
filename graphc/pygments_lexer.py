"""A Pygments lexer for .graph files, so that Sphinx, MkDocs and Jupyter highlight them.

Registered through the `pygments.lexers` entry point (pyproject.toml), so
`pygmentize -l graph`, a Markdown fence labelled ```graph and
`get_lexer_by_name("graph")` find it once graphc is installed. Nothing in
graphc imports this module: Pygments is needed only by who highlights.

The word lists are written out rather than read from graphc.ops (which
imports numpy); tests/test_pygments.py checks them against the op registry
and the initializers, so a new op cannot be left out.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, include
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

# Each op of graphc.ops.REGISTRY, by name.
OPS = (
    "add", "affine", "avg_pool", "batchnorm", "conv2d", "div", "dropout", "exp", "flatten", "log",
    "max_pool", "mean", "mul", "relu", "sigmoid", "softmax_loss", "square", "sub", "sum", "tanh",
)  # fmt: skip
# graphc.initializers.KINDS: what may follow a declaration's `=`.
INITIALIZERS = ("he", "normal", "onehot", "ones", "uniform", "xavier", "zeros")
DECLARATIONS = ("input", "param", "const", "dim")
KEYWORDS = ("output", "expect", "within", "from", "repeat")
DTYPES = ("f32", "f64", "i64")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*"
_BEFORE = r"(?<![A-Za-z0-9_.])"  # a whole word: no letter, digit, `_` or `.` around it
_AFTER = r"(?![A-Za-z0-9_.])"


def _word(choices: tuple[str, ...]) -> str:
    return _BEFORE + "(?:" + "|".join(sorted(choices, key=len, reverse=True)) + ")" + _AFTER


class GraphLexer(RegexLexer):
    """graphc's .graph language: graphs, blocks, declarations, calls and `->` chains."""

    name = "graphc"
    aliases = ["graph", "graphc"]
    filenames = ["*.graph"]
    mimetypes = ["text/x-graphc"]
    # Pygments' Roboconf lexer claims *.graph too; a file name alone picks this one.
    priority = 0.5

    @staticmethod
    def analyse_text(text: str) -> float:
        """How sure, from the text, that it is graphc's: `graph NAME {` or `block NAME(`, then declarations."""
        header = re.search(r"^\s*(graph\s+[\w.]+\s*\{|block\s+\w+\s*\()", text, re.M)
        body = re.search(r"^\s*(input|param|const|output|dim)\s+\w", text, re.M)
        return 0.6 if header and body else 0.2 if header else 0.0

    tokens = {
        "root": [
            (r"(graph)(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"(block)(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (_BEFORE + r"import" + _AFTER, Keyword.Namespace),
            (
                _BEFORE + "(" + "|".join(DECLARATIONS) + r")(\s+)(" + _NAME + ")",
                bygroups(Keyword.Declaration, Whitespace, Name.Variable),
            ),
            (r"(" + _NAME + r")(\s*)(=)(?!=)", bygroups(Name.Variable, Whitespace, Operator)),  # y = op(...)
            (r"(as)(\s+)(" + _NAME + ")", bygroups(Keyword, Whitespace, Name.Variable)),
            (r"\(", Punctuation, "call"),
            include("common"),
        ],
        "call": [
            (r"(" + _NAME + r")(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),  # axis=1
            (r"\(", Punctuation, "#push"),
            (r"\)", Punctuation, "#pop"),
            include("common"),
        ],
        "common": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"', String.Double, "string"),
            (r"->|==|=|:", Operator),
            (r"[{}\[\],)]", Punctuation),
            (r"[+-]?(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?" + _AFTER, Number.Float),
            (r"[+-]?\d+[eE][+-]?\d+" + _AFTER, Number.Float),
            (r"[+-]?\d+" + _AFTER, Number.Integer),
            (_word(DTYPES), Keyword.Type),
            (_word(KEYWORDS), Keyword),
            (_word(("true", "false")), Keyword.Constant),
            (_BEFORE + r"(?:grad|in)(?=\s*\()", Keyword),  # grad(loss), in(x)
            (_word(OPS), Name.Builtin),
            (_word(INITIALIZERS), Name.Builtin.Pseudo),
            (_NAME, Name),
        ],
        "string": [
            (r'\\["\\nt]', String.Escape),
            (r'[^"\\\n]+', String.Double),
            (r'"', String.Double, "#pop"),
        ],
    }

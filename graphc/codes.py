"""The catalogue of diagnostic codes: what `error[E103]` means, and how to fix it.

Every diagnostic graphc prints carries one of these codes (errors E..., warnings
W...). A code names a kind of mistake a person would look up, not a line of
graphc: several places that catch the same mistake share it.

Codes are stable. A code is never renumbered and never reused for another
mistake; a code that graphc stops using is moved to RETIRED, and its number
stays reserved. A new kind of mistake gets the next free number of its group:

    E0xx  syntax of a .graph file
    E1xx  names and definitions: ops, attributes, initializers, blocks, imports
    E2xx  types and shapes
    E3xx  the structure of a graph: cycles, outputs
    E4xx  values given to a graph: inputs, params, labels
    E5xx  the command line and the Python API
    E6xx  files and data sets
    E7xx  checkpoints and weights
    E8xx  graphc's limits on sizes
    E9xx  training and exporting
    W0xx  warnings

Each entry holds an example that really makes its mistake: `graphc explain
CODE` runs it and shows the message it gets (tests/test_codes.py runs every
example and checks the code it produces).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

from graphc.errors import GraphcError, did_you_mean


@dataclass(frozen=True)
class Example:
    """A mistake to show: run in a fresh directory holding `bad.graph` (if given)."""

    command: str  # the command line, `graphc ...`
    graph: str = ""  # the text of bad.graph
    setup: str = ""  # Python run first, in that directory, to make other files
    python: str = ""  # Python run instead of the command: a mistake in the Python API


@dataclass(frozen=True)
class Code:
    code: str
    title: str
    explanation: str
    example: Example
    fix: str

    @property
    def severity(self) -> str:
        return "warning" if self.code.startswith("W") else "error"


# A graph that compiles: the base of the examples whose mistake is elsewhere.
_NET = """\
graph net {
    input x: [2, 3]
    param W: [3, 4] = normal(0.1)
    param b: [4] = zeros
    y = affine(x, W, b)
    output y
}
"""

_SCALAR = """\
graph g {
    input x = 2.0
    y = mul(x, x)
    output y
}
"""

# A graph that trains on MNIST.
# A folder of the four MNIST files, well formed, of two images each: not what MNIST holds.
_TWO_IMAGE_MNIST = (
    "import gzip, os, struct\nos.mkdir('mnist')\n"
    "for f, n in (('train-images-idx3-ubyte', 3), ('train-labels-idx1-ubyte', 1), "
    "('t10k-images-idx3-ubyte', 3), ('t10k-labels-idx1-ubyte', 1)):\n"
    "    dims = (2, 28, 28) if n == 3 else (2,)\n"
    "    data = struct.pack('>I', 0x800 + n) + b''.join(struct.pack('>I', d) for d in dims)\n"
    "    data += bytes(2 * 28 * 28 if n == 3 else 2)\n"
    "    open(f'mnist/{f}.gz', 'wb').write(gzip.compress(data))"
)
_MNIST = """\
graph net {
    input x: [N, 784] from images
    input t: [N, 10] from labels
    param W: [784, 10] = normal(0.01)
    param b: [10] = zeros
    y = affine(x, W, b)
    loss = softmax_loss(y, t)
    output loss
}
"""

# A graph that trains on MNIST without a weight matrix.
_NO_WEIGHTS = """\
graph net {
    input x: [N, 1, 28, 28] from images
    input t: [N, 10] from labels
    param b: [10] = zeros
    p = avg_pool(x, size=10, stride=2)
    m = mean(p, axis=3)
    f = flatten(m)
    s = add(f, b)
    loss = softmax_loss(s, t)
    output loss
}
"""

_CHECK = "graphc check bad.graph"

CODES: tuple[Code, ...] = (
    # --- E0xx: syntax ----------------------------------------------------------------
    Code(
        "E001",
        "unexpected character",
        "The file holds a character the language has no use for, such as `$`, `;` or a "
        "typographic quote pasted from a document.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x, x);\n    output y\n}\n"),
        "Delete the character, or replace it with what was meant. Statements end at the end of the line.",
    ),
    Code(
        "E002",
        "unexpected token",
        "A word, number or symbol stands where the language expects something else: a missing "
        "comma or bracket, two statements on one line, or two words run together.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x x)\n    output y\n}\n"),
        "Read the `expected` list in the message and write one of those there.",
    ),
    Code(
        "E003",
        "unexpected end of line or file",
        "A statement stops before it is complete: an unclosed bracket, or a file that ends inside a graph.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x,\n"),
        "Complete the statement; close every `(`, `[` and `{` you open.",
    ),
    Code(
        "E004",
        "graph not closed",
        "A `graph` starts before the one above it is closed with `}`.",
        Example(_CHECK, "graph a {\n    input x = 2\n    output x\n\ngraph b {\n    input y = 3\n    output y\n}\n"),
        "Add the missing `}` at the end of the first graph.",
    ),
    Code(
        "E005",
        "unknown escape in a string",
        "A string (an import's path) holds a backslash followed by a character that is no escape.",
        Example(_CHECK, 'import "blocks\\d.graph"\ngraph g {\n    input x = 2\n    output x\n}\n'),
        'Write `/` in paths; a string may hold only `\\"`, `\\\\`, `\\n` and `\\t`.',
    ),
    Code(
        "E006",
        "not UTF-8 text",
        "The file holds bytes that are not UTF-8 text, e.g. a file saved in Latin-1 or a binary file.",
        Example(_CHECK, setup="open('bad.graph', 'wb').write(b'# caf\\xe9\\ngraph g {\\n}\\n')"),
        "Save the file as UTF-8.",
    ),
    Code(
        "E007",
        "chain without a result",
        "A chain `x -> op -> name` must end by naming its result, and have at least one op between its ends.",
        Example(_CHECK, "graph g {\n    input x = 2\n    x -> relu\n    output x\n}\n"),
        "End the chain with `-> NAME`, e.g. `x -> relu -> h`.",
    ),
    # --- E1xx: names and definitions ---------------------------------------------------
    Code(
        "E101",
        "undefined name",
        "A name is read (as an operand, an output or in an `expect`) that nothing defines.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x, z)\n    output y\n}\n"),
        "Define the name (an input, param, const or node) or correct its spelling.",
    ),
    Code(
        "E102",
        "duplicate definition",
        "Two definitions give the same name: two values, dims, graphs, blocks or block parameters. "
        "Every name is defined once; a value is never reassigned.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x, x)\n    y = add(y, x)\n    output y\n}\n"),
        "Give the second definition another name.",
    ),
    Code(
        "E103",
        "unknown op or block",
        "A call names an op that does not exist and no block of that name is defined or imported.",
        Example(_CHECK, "graph g {\n    input x: [2, 3]\n    h = rleu(x)\n    output h\n}\n"),
        "Correct the name (the hint suggests the closest op); `graphc` ops are listed in docs/language.md.",
    ),
    Code(
        "E104",
        "unknown attribute",
        "A `key=value` argument names an attribute the op does not take, or a parameter the block does not have.",
        Example(_CHECK, "graph g {\n    input x: [2, 3]\n    s = sum(x, axes=1)\n    output s\n}\n"),
        "Use one of the op's attributes (the hint lists the closest).",
    ),
    Code(
        "E105",
        "given twice",
        "The same attribute, block argument or output is given twice.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x, x)\n    output y, y\n}\n"),
        "Give each once.",
    ),
    Code(
        "E106",
        "wrong number of arguments",
        "An op or block is called with more or fewer operands than it takes. In a chain, the value "
        "piped in by `->` is the first operand.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x)\n    output y\n}\n"),
        "Pass the operands the hint shows, in that order.",
    ),
    Code(
        "E107",
        "bad attribute value",
        "An attribute is given a value it cannot take: a choice not in its list, or a number out of its range.",
        Example(_CHECK, "graph g {\n    input x: [2, 3]\n    h = dropout(x, ratio=1.5)\n    output h\n}\n"),
        "Give a value the message allows.",
    ),
    Code(
        "E108",
        "unknown initializer",
        "A param's `= ...` names an initializer graphc does not have.",
        Example(_CHECK, "graph g {\n    param W: [2, 2] = gaussian(0.1)\n    output W\n}\n"),
        "Use one of the initializers the hint lists, e.g. `normal(0.01)`.",
    ),
    Code(
        "E109",
        "wrong initializer arguments",
        "An initializer is given the wrong number of arguments, or numbers that are not finite.",
        Example(_CHECK, "graph g {\n    param W: [2, 2] = normal()\n    output W\n}\n"),
        "Write it as the hint shows, e.g. `normal(0.01)`.",
    ),
    Code(
        "E110",
        "param without an initializer",
        "A param is trained from a starting value, which its declaration must say how to make.",
        Example(_CHECK, "graph g {\n    param W: [2, 2]\n    output W\n}\n"),
        "Add one, e.g. `= normal(0.01)`, `= zeros` or `= he`.",
    ),
    Code(
        "E111",
        "param initializer needs a shape",
        "An initializer that makes numbers (normal, zeros, he, ...) needs the param's shape to know how many.",
        Example(_CHECK, "graph g {\n    param W = zeros\n    output W\n}\n"),
        "Declare the shape: `param W: [784, 50] = zeros`.",
    ),
    Code(
        "E112",
        "unknown data role",
        "`input x: ... from ROLE` names where training feeds the input from; ROLE is `images` or `labels`.",
        Example(_CHECK, "graph g {\n    input x: [N, 784] from pictures\n    output x\n}\n"),
        "Write `from images` or `from labels`.",
    ),
    Code(
        "E113",
        "no graph in the file",
        "The command needs a graph to run, but the file holds only blocks (a library for `import`).",
        Example("graphc run bad.graph", "block double(x) {\n    out = add(x, x)\n}\n"),
        'Run a file that has a `graph`, or `import "FILE"` these blocks into one.',
    ),
    Code(
        "E114",
        "no graph of that name",
        "`--graph NAME` names a graph the file does not define.",
        Example("graphc run bad.graph --graph nett", _NET),
        "Give the name of one of the file's graphs (the hint lists them).",
    ),
    Code(
        "E115",
        "negative tolerance",
        "An `expect ... within TOL` gives a tolerance below zero, which no difference can meet.",
        Example(_CHECK, "graph g {\n    input x = 2\n    output x\n    expect x == 2 within -0.1\n}\n"),
        "Give a tolerance of at least 0, e.g. `within 1e-6`.",
    ),
    Code(
        "E120",
        "block named like an op",
        "A block may not take the name of an op: a call would be ambiguous.",
        Example(_CHECK, "block relu(x) {\n    out = mul(x, x)\n}\n"),
        "Rename the block.",
    ),
    Code(
        "E121",
        "block without a result",
        "A block's result is the value it names `out`; this block never defines it.",
        Example(_CHECK, "block double(x) {\n    y = add(x, x)\n}\n"),
        "Name the block's result `out`, e.g. `out = add(x, x)`.",
    ),
    Code(
        "E122",
        "bad block name or parameter",
        "A block's name and parameters are plain names, each different, and none of them `out` "
        "(the name of the block's result).",
        Example(_CHECK, "block double(out) {\n    out = add(out, out)\n}\n"),
        "Rename the parameter.",
    ),
    Code(
        "E123",
        "statement not allowed in a block",
        "Inputs, outputs and expectations belong to a graph; a block takes its values as parameters "
        "and gives its result as `out`.",
        Example(_CHECK, "block double(x) {\n    input y = 2\n    out = add(x, y)\n}\n"),
        "Make the value a parameter of the block, or move the statement into the graph.",
    ),
    Code(
        "E124",
        "block parameter used two ways",
        "A block's parameter is either an operand (a value) or a size (a number in a shape or an "
        "attribute); this one is used as both.",
        Example(_CHECK, "block b(x, n) {\n    param W: [n, n] = zeros\n    out = mul(x, n)\n}\n"),
        "Use two parameters, one for the value and one for the size.",
    ),
    Code(
        "E125",
        "unused block parameter",
        "A block declares a parameter that nothing in its body uses.",
        Example(_CHECK, "block double(x, y) {\n    out = add(x, x)\n}\n"),
        "Use it, or remove it from the block's parameters.",
    ),
    Code(
        "E126",
        "not a parameter of the block",
        "A block's body sizes something by a name that is not one of its parameters (`in(y)`, or a "
        "dim); a block sees only what is passed to it.",
        Example(_CHECK, "block dense(x) {\n    param W: [in(y), 2] = zeros\n    out = mul(x, W)\n}\n"),
        "Add the name to the block's parameters and pass it at each use.",
    ),
    Code(
        "E127",
        "block uses itself",
        "A block calls itself, directly or through another block, which would never end.",
        Example(
            "graphc check bad.graph",
            "block b(x) {\n    out = b(x)\n}\ngraph g {\n    input x = 2\n    y = b(x)\n    output y\n}\n",
        ),
        "To apply a block several times, write `repeat N` in a chain: `x -> repeat 3 b -> y`.",
    ),
    Code(
        "E128",
        "misused `in(x)`",
        "`in(x)` sizes a block's param by the last dim of its operand x. It is allowed only in a block, "
        "and x's last dim must be a known number where the block is used.",
        Example(_CHECK, "graph g {\n    input x: [2, 3]\n    param W: [in(x), 4] = zeros\n    output W\n}\n"),
        "In a graph, write the size itself: `param W: [3, 4] = zeros`.",
    ),
    Code(
        "E129",
        "block argument of the wrong kind",
        "A block's operand parameters take values, its size parameters take whole numbers; this use "
        "passes one kind where the other belongs.",
        Example(
            _CHECK,
            "block dense(x, n) {\n    param W: [in(x), n] = zeros\n    out = matmul(x, W)\n}\n"
            "graph g {\n    input x: [2, 3]\n    y = dense(x, n=2.5)\n    output y\n}\n",
        ),
        "Pass operands by position and sizes as whole numbers, as the hint shows.",
    ),
    Code(
        "E130",
        "repeat count out of range",
        "`repeat N op` in a chain applies an op or block N times; N must lie in the range the message gives.",
        Example(_CHECK, "graph g {\n    input x = 2\n    x -> repeat 0 relu -> y\n    output y\n}\n"),
        "Give a count of at least 1.",
    ),
    Code(
        "E140",
        "cannot import",
        'An `import "FILE"` names a file that cannot be read, or whose blocks have errors.',
        Example(_CHECK, 'import "missing.graph"\ngraph g {\n    input x = 2\n    output x\n}\n'),
        "Give the path relative to the importing file, and fix the imported file's errors.",
    ),
    Code(
        "E141",
        "import cycle",
        "Files import each other in a loop.",
        Example(
            _CHECK,
            'import "other.graph"\ngraph g {\n    input x = 2\n    output x\n}\n',
            setup="open('other.graph', 'w').write('import \"bad.graph\"\\n')",
        ),
        "Move the shared blocks into a file that imports nothing of the loop.",
    ),
    Code(
        "E142",
        "block imported twice",
        "Two imports bring in blocks of the same name.",
        Example(
            _CHECK,
            'import "a.graph"\nimport "b.graph"\ngraph g {\n    input x = 2\n    output x\n}\n',
            setup="for f in ('a.graph', 'b.graph'):\n"
            "    open(f, 'w').write('block double(x) {\\n    out = add(x, x)\\n}\\n')",
        ),
        "Import only one of the two, or rename one of the blocks.",
    ),
    # --- E2xx: types and shapes -----------------------------------------------------------
    Code(
        "E201",
        "shape mismatch",
        "The shapes of an op's operands do not fit each other: `affine`'s x has as many features as "
        "W has rows, `add` and `mul` broadcast only dims that are equal or 1.",
        Example(
            _CHECK,
            "graph g {\n    input x: [2, 3]\n    param W: [4, 5] = zeros\n    param b: [5] = zeros\n"
            "    y = affine(x, W, b)\n    output y\n}\n",
        ),
        "Make the sizes agree, e.g. `param W: [3, 5]` for x of 3 features.",
    ),
    Code(
        "E202",
        "operand of the wrong rank",
        "An op needs an operand with a certain number of dims: a matrix for `affine`'s W, a batch of "
        "images [N, C, H, W] for conv2d and pooling.",
        Example(
            _CHECK,
            "graph g {\n    input x: [2, 3]\n    param W: [3] = zeros\n    y = affine(x, W, W)\n    output y\n}\n",
        ),
        "Declare the operand with the dims the message names.",
    ),
    Code(
        "E203",
        "dtype mismatch",
        "The operands of an op have dtypes that do not go together (f32 with f64), or an op that "
        "computes with fractions is given i64 values.",
        Example(_CHECK, "graph g {\n    input a: f32[2]\n    input b: f64[2]\n    y = add(a, b)\n    output y\n}\n"),
        "Declare both operands with the same float dtype.",
    ),
    Code(
        "E204",
        "axis out of range",
        "An `axis` attribute names a dim the operand does not have. Axes count from 0; -1 is the last.",
        Example(_CHECK, "graph g {\n    input x: [2, 3]\n    s = sum(x, axis=2)\n    output s\n}\n"),
        "Give an axis below the operand's number of dims.",
    ),
    Code(
        "E205",
        "window does not fit",
        "A convolution's or pooling's window, stride and padding give no whole output size: "
        "(size + 2·pad − window) / stride + 1 must be a whole number of at least 1.",
        Example(
            _CHECK,
            "graph g {\n    input x: [1, 1, 4, 4]\n    y = max_pool(x, size=5)\n    output y\n}\n",
        ),
        "Choose a window no larger than the padded input, and a stride that divides the difference.",
    ),
    Code(
        "E206",
        "sizes of a dim disagree",
        "A symbolic dim such as N takes one size for the whole graph; two values give it different sizes.",
        Example(
            "graphc run bad.graph",
            "graph g {\n    input x: [N] = [1, 2]\n    input y: [N] = [1, 2, 3]\n    s = add(x, y)\n    output s\n}\n",
        ),
        "Give every value the same size for the dim.",
    ),
    Code(
        "E207",
        "value does not match its declared shape",
        "A literal value has a shape other than the one its declaration gives.",
        Example(_CHECK, "graph g {\n    input x: [3] = [1, 2]\n    output x\n}\n"),
        "Make the list and the declared shape agree.",
    ),
    Code(
        "E208",
        "dim without a size",
        "A shape that must be concrete (a param's, or an input graphc makes up) uses a symbolic dim "
        "that nothing gives a size.",
        Example(_CHECK, "graph g {\n    param W: [N, 3] = zeros\n    output W\n}\n"),
        "Write the size, or declare it: `dim N = 100`.",
    ),
    Code(
        "E209",
        "param that cannot be trained",
        "Training changes a param by small steps, so it must hold floats (f32 or f64), not i64.",
        Example(_CHECK, "graph g {\n    param W: i64[2] = zeros\n    output W\n}\n"),
        "Declare it f32 or f64, or make the value a const or an input.",
    ),
    Code(
        "E210",
        "size less than 1",
        "Every size of a shape, and every `dim`, must be at least 1.",
        Example(_CHECK, "graph g {\n    param W: [0, 3] = zeros\n    output W\n}\n"),
        "Give every dim a size of at least 1.",
    ),
    Code(
        "E211",
        "ragged or empty list",
        "A list literal must be rectangular: every row the same length, and at least one number.",
        Example(_CHECK, "graph g {\n    input x = [[1, 2], [3]]\n    output x\n}\n"),
        "Give every row the same number of entries.",
    ),
    Code(
        "E212",
        "number out of range for its dtype",
        "A number is beyond what the value's dtype holds (about 3.4e38 for f32, 1.8e308 for f64, ±9.2e18 for i64).",
        Example(_CHECK, "graph g {\n    input x: f32 = 1e39\n    output x\n}\n"),
        "Use a smaller number, or the wider dtype f64.",
    ),
    Code(
        "E213",
        "fraction for an i64 value",
        "An i64 value holds whole numbers only.",
        Example(_CHECK, "graph g {\n    input k: i64 = 1.5\n    output k\n}\n"),
        "Write a whole number, or declare the value as a float.",
    ),
    Code(
        "E214",
        "value read as two dtypes",
        "A const or input without a declared dtype takes the dtype of the op that reads it; two ops "
        "read it as different dtypes.",
        Example(
            _CHECK,
            "graph g {\n    input a: f32[2]\n    input b: f64[2]\n    const c = [1, 2]\n    y = mul(a, c)\n"
            "    z = mul(b, c)\n    output y, z\n}\n",
        ),
        "Declare the value's dtype, or give each reader its own value.",
    ),
    # --- E3xx: structure -----------------------------------------------------------------
    Code(
        "E301",
        "cycle",
        "A value depends on itself through the ops that compute it: a graph is evaluated once, forward, "
        "so it cannot have loops.",
        Example(_CHECK, "graph g {\n    input x = 2\n    a = mul(x, b)\n    b = add(a, x)\n    output b\n}\n"),
        "Break the loop: one of the values should read an input or param instead.",
    ),
    Code(
        "E302",
        "graph without an output",
        "A graph computes its outputs; backward starts from the first. This one names none.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x, x)\n}\n"),
        "Add `output NAME` for the value to compute.",
    ),
    Code(
        "E303",
        "two inputs fed from one role",
        "Training feeds each data role (`images`, `labels`) to one input; two inputs claim the same.",
        Example(
            _CHECK,
            "graph g {\n    input x: [N, 784] from images\n    input z: [N, 784] from images\n"
            "    y = add(x, z)\n    output y\n}\n",
        ),
        "Feed the role to one input.",
    ),
    # --- E4xx: values -----------------------------------------------------------------------
    Code(
        "E401",
        "input without a value",
        "Running a graph needs a value for every input; this one has no default and none was given.",
        Example("graphc run bad.graph", "graph g {\n    input x\n    y = mul(x, x)\n    output y\n}\n"),
        "Give one with `--set x=VALUE` or `--input x=FILE.npy`, or a default in the graph (`input x = 2`).",
    ),
    Code(
        "E402",
        "bad labels",
        "softmax_loss's labels are one-hot rows (non-negative, each summing to 1) or class indices "
        "(whole numbers from 0 to classes − 1); these are neither.",
        Example(
            _CHECK,
            "graph g {\n    input y = [0.1, 0.9]\n    input t = [1, 1]\n    loss = softmax_loss(y, t)\n"
            "    output loss\n}\n",
        ),
        "Give one-hot rows such as [0, 1], or class indices.",
    ),
    Code(
        "E403",
        "value of the wrong shape",
        "A value given to an input or param (on the command line, from a file or in Python) has a "
        "shape other than the one the graph declares.",
        Example("graphc run bad.graph --set x=[1,2]", _NET),
        "Give a value of the declared shape.",
    ),
    Code(
        "E404",
        "value of the wrong kind",
        "A value given to an input or param is not numeric, or holds fractions for an i64 input.",
        Example("graphc run bad.graph --set k=[1.5,2]", "graph g {\n    input k: i64[2]\n    output k\n}\n"),
        "Give numbers of the declared dtype.",
    ),
    Code(
        "E405",
        "no such input or param",
        "A value is given to a name the graph has no input or param of.",
        Example("graphc run bad.graph --set z=1", _SCALAR),
        "Use the name of an input or param (the hint suggests the closest).",
    ),
    Code(
        "E406",
        "cannot read a value",
        "A value on the command line (`--set x=...`) is not a number or a rectangular list of numbers.",
        Example("graphc run bad.graph --set x=two", _SCALAR),
        "Write a number such as 1.5e-3, or a list such as [[1, 2], [3, 4]].",
    ),
    Code(
        "E407",
        "Python API used out of order",
        "A Program's methods are called in an order that cannot work, e.g. backward() before forward().",
        Example(
            "",
            _SCALAR,
            python="import graphc\nprogram = graphc.compile_file('bad.graph')\nprogram.backward()",
        ),
        "Call forward() first, then backward().",
    ),
    # --- E5xx: command line and API -----------------------------------------------------------
    Code(
        "E501",
        "command-line usage",
        "The command line does not fit the command: an unknown option, a missing argument, an unknown command.",
        Example("graphc run bad.graph --sett x=1", _SCALAR),
        "See `graphc COMMAND --help`.",
    ),
    Code(
        "E502",
        "number option out of range",
        "An option that takes a number (--seed, --iters, --lr, --batch, ...) is given text, or a number "
        "outside its range.",
        Example("graphc train bad.graph --lr -0.1", _MNIST),
        "Give a number in the range the message names.",
    ),
    Code(
        "E503",
        "unknown choice",
        "A name chosen from a fixed list (a mode, dtype, optimizer, engine or dataset) is not on it.",
        Example("", _SCALAR, python="import graphc\ngraphc.compile_file('bad.graph', dtype='float16')"),
        "Use one of the names the hint lists.",
    ),
    Code(
        "E504",
        "NAME=VALUE expected",
        "`--set` and `--input` take NAME=VALUE, with both parts.",
        Example("graphc run bad.graph --set x", _SCALAR),
        "Write e.g. `--set x=3`.",
    ),
    Code(
        "E505",
        "options that do not go together",
        "An option needs another that is missing, or two options exclude each other.",
        Example("graphc compile bad.graph --emit onnx", _NET),
        "Follow the hint: add the option needed, or drop one of the two.",
    ),
    Code(
        "E506",
        "bad --wrt",
        "`--wrt` names the values to differentiate with respect to: `params`, `inputs`, `all`, or "
        "comma-separated names, each once.",
        Example("graphc compile bad.graph --emit plan --wrt W,,b", _NET),
        "Separate names by single commas, e.g. `--wrt W,b`.",
    ),
    Code(
        "E507",
        "unknown output file type",
        "graphc chooses what to write from the output file's extension, and does not know this one.",
        Example("graphc draw bad.graph -o graph.jpeg", _NET),
        "Use one of the extensions the hint lists.",
    ),
    Code(
        "E508",
        "cannot draw the filters",
        "`--filters OUT.png` draws a convolution's learned filters, a 4-D param [FN, C, FH, FW]; the "
        "graph has none, or the param named is not one, or its numbers cannot be drawn.",
        Example("graphc eval bad.graph --filters filters.png", _NET),
        "Draw the filters of a graph with conv2d, or name its 4-D param with --filters-param.",
    ),
    Code(
        "E509",
        "a program graphc needs is missing",
        "Drawing SVG or PNG needs Graphviz; exporting ONNX needs the onnx package.",
        Example("graphc draw bad.graph -o graph.svg", _NET, setup="import os\nos.environ['PATH'] = ''"),
        "Install what the hint names, or write a format that needs nothing (.dot, .mmd).",
    ),
    Code(
        "E510",
        "Graphviz failed",
        "Graphviz's `dot` ran but did not draw the graph.",
        Example(
            "graphc draw bad.graph -o graph.svg",
            _NET,
            setup="import os, stat\nos.mkdir('bin')\nopen('bin/dot', 'w').write('#!/bin/sh\\nexit 0\\n')\n"
            "os.chmod('bin/dot', 0o755)\nos.environ['PATH'] = os.path.abspath('bin')",
        ),
        "Check the Graphviz installation (`dot -V`), or write .dot or .mmd.",
    ),
    Code(
        "E511",
        "a distributed job's environment is wrong",
        "RANK or WORLD_SIZE in the environment make `graphc train` one worker of a job that torchrun "
        "started; such a worker needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, as whole numbers "
        "where they are numbers, and a RANK below WORLD_SIZE.",
        Example("graphc train bad.graph --iters 1", _MNIST, setup="import os\nos.environ['RANK'] = '0'"),
        "Launch the workers with torchrun (docs/interop.md shows how), or unset RANK and WORLD_SIZE to "
        "train in one process or with --workers N.",
    ),
    # --- E6xx: files and data ---------------------------------------------------------------
    Code(
        "E601",
        "no such file",
        "A file named on the command line does not exist.",
        Example("graphc check missing.graph"),
        "Check the path; it is relative to the current directory.",
    ),
    Code(
        "E602",
        "a directory where a file belongs",
        "A path names a directory where graphc reads or writes a file.",
        Example("graphc check ."),
        "Give the name of a file.",
    ),
    Code(
        "E603",
        "cannot read a file",
        "The file exists but cannot be read: no permission, or a path through something that is not a directory.",
        Example("graphc check bad.graph/net.graph", _NET),
        "Check the path and the file's permissions.",
    ),
    Code(
        "E604",
        "cannot write a file",
        "graphc cannot write its output: the directory does not exist, there is no permission, or the disk is full.",
        Example("graphc compile bad.graph -o out/net.py", _NET),
        "Create the directory, or write somewhere else.",
    ),
    Code(
        "E605",
        "file being written by another graphc",
        "Another graphc process holds the lock on the file this one would write (`graphc train --save`).",
        Example(
            "graphc train bad.graph --iters 1 --save w.npz",
            _MNIST,
            setup="import fcntl\nlock = open('.w.npz.lock', 'w')  # as another graphc holds it\n"
            "fcntl.flock(lock, fcntl.LOCK_EX)\nlock.write('4242@host\\n')\nlock.flush()",
        ),
        "Wait for the other process to finish, or save to another file.",
    ),
    Code(
        "E606",
        "not a .npy array",
        "`--input NAME=FILE.npy` takes an array saved by numpy.save; this file is not one graphc reads.",
        Example("graphc run bad.graph --input x=x.npy", _NET, setup="open('x.npy', 'w').write('1 2 3')"),
        "Save the array with numpy.save(path, array).",
    ),
    Code(
        "E607",
        "corrupt gzip file",
        "A data file ending in .gz is not a complete gzip file.",
        Example(
            "graphc train bad.graph --iters 1 --data-dir mnist",
            _MNIST,
            setup="import os\nos.mkdir('mnist')\nfor f in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', "
            "'t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'):\n"
            "    open(f'mnist/{f}.gz', 'wb').write(b'not gzip')",
        ),
        "Delete the file and download it again.",
    ),
    Code(
        "E608",
        "not an IDX file",
        "MNIST's files are IDX files: a magic number, the sizes, then the bytes. This file's header is wrong.",
        Example(
            "graphc train bad.graph --iters 1 --data-dir mnist",
            _MNIST,
            setup="import gzip, os\nos.mkdir('mnist')\nfor f in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', "
            "'t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'):\n"
            "    open(f'mnist/{f}.gz', 'wb').write(gzip.compress(b'\\x00\\x00\\x01\\x00'))",
        ),
        "Delete the file and download it again.",
    ),
    Code(
        "E609",
        "MNIST missing",
        "Training needs the four MNIST files; they are not in the data directory and could not be downloaded.",
        Example(
            "graphc train bad.graph --iters 1 --data-dir mnist",
            _MNIST,
            setup="import os\nos.environ['GRAPHC_MNIST_MIRROR'] = 'file:///nonexistent/'",
        ),
        "Put the four files in the directory, or set GRAPHC_DATA or --data-dir to one that holds them.",
    ),
    Code(
        "E610",
        "checksum mismatch",
        "An MNIST file holds other bytes than the published file: damaged in download, or another data set.",
        Example(
            "",
            python="from graphc.data import verify_mnist\nverify_mnist('mnist')",
            setup=_TWO_IMAGE_MNIST,
        ),
        "Delete the file and run again to download a fresh copy.",
    ),
    Code(
        "E611",
        "MNIST file with the wrong content",
        "An MNIST file is a readable IDX file but not what MNIST holds: the wrong shape, count, dtype or labels.",
        Example(
            "graphc train bad.graph --iters 1 --data-dir mnist",
            _MNIST,
            setup=_TWO_IMAGE_MNIST,
        ),
        "Delete the file and download it again.",
    ),
    Code(
        "E612",
        "not a training log",
        "`graphc plot` draws the CSV log `graphc train --log` writes, or a checkpoint's history; this file is neither.",
        Example("graphc plot log.csv -o curves.png", setup="open('log.csv', 'w').write('a,b\\n1,2\\n')"),
        "Plot a log written by `graphc train FILE --log LOG.csv`.",
    ),
    # --- E7xx: checkpoints and weights --------------------------------------------------------
    Code(
        "E613",
        "not an ONNX model",
        "`graphc import` reads an ONNX model (a .onnx file, as `graphc compile --emit onnx` or another "
        "framework's exporter writes one); this file is not one, or onnx's checker refuses it.",
        Example("graphc import model.onnx -o model.graph", setup="open('model.onnx', 'wb').write(b'not a model')"),
        "Import the .onnx file itself; export it again if it was cut short.",
    ),
    Code(
        "E701",
        "not a weights file",
        "`--weights` takes an .npz file: a checkpoint from `graphc train --save`, or numpy.savez of the params.",
        Example("graphc run bad.graph --weights w.npz", _NET, setup="open('w.npz', 'w').write('W = 1')"),
        "Give a file written by `graphc train --save` or numpy.savez.",
    ),
    Code(
        "E702",
        "corrupt checkpoint",
        "The checkpoint is an .npz file, but an entry in it is missing or damaged.",
        Example(
            "graphc run bad.graph --weights w.npz",
            _NET,
            setup="import numpy as np\nnp.savez('w.npz', **{'params/W': np.zeros((3, 4)), 'params/b': np.zeros(4), "
            "'meta': np.array('{not json')})",
        ),
        "Train again, or load an earlier copy of the file.",
    ),
    Code(
        "E703",
        "not a graphc checkpoint",
        "The file has a `meta` entry, but not one graphc wrote.",
        Example(
            "graphc run bad.graph --weights w.npz",
            _NET,
            setup="import numpy as np\nnp.savez('w.npz', W=np.zeros((3, 4)), b=np.zeros(4), meta=np.array('{}'))",
        ),
        "Load a checkpoint written by `graphc train --save`, or an .npz holding only the params.",
    ),
    Code(
        "E704",
        "checkpoint from a newer graphc",
        "The checkpoint's format version is newer than this graphc reads.",
        Example(
            "graphc run bad.graph --weights w.npz",
            _NET,
            setup="import json, numpy as np\n"
            "np.savez('w.npz', **{'params/W': np.zeros((3, 4)), 'params/b': np.zeros(4), "
            "'meta': np.array(json.dumps({'format': 'graphc-checkpoint', 'version': 999}))})",
        ),
        "Upgrade graphc.",
    ),
    Code(
        "E705",
        "weights from another graph",
        "The checkpoint was saved from a graph that computes something else: its structure differs from this graph's.",
        Example(
            "graphc run bad.graph --weights w.npz",
            _NET,
            setup="import graphc\nfrom graphc.checkpoint import save_checkpoint\n"
            "text = open('bad.graph').read().replace('y = affine(x, W, b)', 'h = affine(x, W, b)\\n    y = relu(h)')\n"
            "other = graphc.compile_source(text)\n"
            "save_checkpoint('w.npz', other)",
        ),
        "Load the weights into the graph they were trained with.",
    ),
    Code(
        "E706",
        "param missing from the weights",
        "The weights file has no tensor for one of the graph's params (or for the running statistics it keeps).",
        Example(
            "graphc run bad.graph --weights w.npz",
            _NET,
            setup="import numpy as np\nnp.savez('w.npz', W=np.zeros((3, 4)))",
        ),
        "Load weights saved from this graph.",
    ),
    Code(
        "E707",
        "tensor does not fit its param",
        "A tensor in the weights file has another shape or dtype than the graph's param of that name.",
        Example(
            "graphc run bad.graph --weights w.npz",
            _NET,
            setup="import numpy as np\nnp.savez('w.npz', W=np.zeros((3, 5)), b=np.zeros(4))",
        ),
        "Load weights saved from a graph with the same layer sizes.",
    ),
    Code(
        "E708",
        "tensor that is not a param",
        "The weights file holds a tensor the graph has no param of that name for.",
        Example(
            "graphc run bad.graph --weights w.npz",
            _NET,
            setup="import numpy as np\nnp.savez('w.npz', W=np.zeros((3, 4)), b=np.zeros(4), W2=np.zeros(2))",
        ),
        "Load weights saved from this graph (the hint lists its params).",
    ),
    Code(
        "E709",
        "nothing to resume from",
        "`graphc train --resume` continues a training run from a checkpoint; these weights hold no training state.",
        Example(
            "graphc train bad.graph --resume w.npz",
            _MNIST,
            setup="import numpy as np\nnp.savez('w.npz', W=np.zeros((784, 10)), b=np.zeros(10))",
        ),
        "Resume from a checkpoint written by `graphc train --save`, or load the weights with --weights.",
    ),
    Code(
        "E710",
        "optimizer state does not fit",
        "A resumed run continues with the optimizer the checkpoint was trained with, whose state must "
        "fit the graph's params.",
        Example(
            "graphc train bad.graph --iters 2 --resume w.npz --optimizer momentum",
            _MNIST,
            setup="from graphc.cli import main\nmain(['train', 'bad.graph', '--iters', '1', '--save', 'w.npz'])",
        ),
        "Resume with the optimizer the hint names.",
    ),
    # --- E8xx: limits ---------------------------------------------------------------------
    Code(
        "E801",
        "tensor too large",
        "A value would hold more numbers than graphc puts in one tensor (see the hint for the limit "
        "and how to raise it).",
        Example(_CHECK, "graph g {\n    param W: [100000, 100000, 100] = zeros\n    output W\n}\n"),
        "Use smaller sizes, or raise the limit as the hint says.",
    ),
    Code(
        "E802",
        "too many dims",
        "A value has more dims than graphc takes.",
        Example(_CHECK, "graph g {\n    param W: [" + ", ".join(["1"] * 33) + "] = zeros\n    output W\n}\n"),
        "Use fewer dims.",
    ),
    Code(
        "E803",
        ".graph file too large",
        "The file is longer, or has a longer line, than graphc reads.",
        Example(_CHECK, setup="open('bad.graph', 'w').write('# ' + 'x' * 200000 + '\\n')"),
        "Split the file with `import`, break long lists over several lines, or raise the limit as the hint says.",
    ),
    Code(
        "E804",
        "blocks expand too far",
        "Blocks used inside blocks nest too deep, or expand into more values than graphc runs.",
        Example(
            _CHECK,
            "".join(f"block b{i}(x) {{\n    out = b{i + 1}(x)\n}}\n" for i in range(40))
            + "block b40(x) {\n    out = relu(x)\n}\n"
            + "graph g {\n    input x = 2\n    y = b0(x)\n    output y\n}\n",
        ),
        "Use fewer levels of blocks.",
    ),
    # --- E9xx: training and export -------------------------------------------------------------
    Code(
        "E901",
        "training diverged",
        "The loss became NaN or infinite: the steps are too large for the model (exit status 1).",
        Example(
            "graphc train bad.graph --iters 20 --lr 10",
            _MNIST.replace("loss = softmax_loss(y, t)", "z = exp(y)\n    loss = softmax_loss(z, t)"),
        ),
        "Train again with a smaller --lr.",
    ),
    Code(
        "E902",
        "output is not a loss",
        "Training minimises the graph's first output, which must be one number.",
        Example("graphc train bad.graph --iters 1", _MNIST.replace("output loss", "output y, loss")),
        "Make the first output a scalar loss, e.g. `loss = softmax_loss(y, t)`.",
    ),
    Code(
        "E903",
        "inputs do not fit the data",
        "Training feeds MNIST's images [N, 784] and one-hot labels [N, 10] to the graph's inputs; "
        "no input fits, several do, or one has the wrong shape.",
        Example(
            "graphc train bad.graph --iters 1",
            _MNIST.replace("784] from images", "100] from images").replace("[784, 10]", "[100, 10]"),
        ),
        "Declare the inputs `input x: [N, 784] from images` and `input t: [N, 10] from labels`.",
    ),
    Code(
        "E904",
        "scores not one per class",
        "Measuring accuracy reads the scores softmax_loss takes, which must be one per class.",
        Example(
            "graphc train bad.graph --iters 1",
            _MNIST.replace("loss = softmax_loss(y, t)", "d = sub(y, t)\n    e = mul(d, d)\n    loss = mean(e)"),
        ),
        "Compute the loss as softmax_loss(scores, labels) with scores of shape [N, 10].",
    ),
    Code(
        "E905",
        "weight decay without weights",
        "`--weight-decay` decays the weight matrices (the W of `affine`, conv2d's filters); the graph has none.",
        Example("graphc train bad.graph --iters 1 --weight-decay 0.1", _NO_WEIGHTS),
        "Train without --weight-decay.",
    ),
    Code(
        "E906",
        "op not covered by an export",
        "Exporting to ONNX or PyTorch maps each op to theirs; this op has no mapping.",
        Example(
            "",
            _SCALAR,
            python="import graphc\nfrom graphc.export_torch import MAPPINGS, torch_module\n"
            "mul = MAPPINGS.pop('mul')  # every op graphc has is covered: take one away\n"
            "try:\n    torch_module(graphc.compile_file('bad.graph'))\nfinally:\n    MAPPINGS['mul'] = mul",
        ),
        "Export a graph of the ops the hint lists, or generate numpy code with `--emit python`.",
    ),
    Code(
        "E907",
        "generated code with mixed float dtypes",
        "A generated module computes in one float dtype; this graph mixes f32 and f64.",
        Example(
            "graphc compile bad.graph --emit python",
            "graph g {\n    input a: f32 = 1\n    input b: f64 = 2\n    y = mul(a, a)\n    z = mul(b, b)\n"
            "    output y, z\n}\n",
        ),
        "Give one with --dtype float32 or --dtype float64.",
    ),
    Code(
        "E908",
        "an ONNX model graphc cannot import",
        "`graphc import` turns each value an ONNX model computes into a graphc op, from the ONNX nodes "
        "graphc's own export writes for it and the plain forms other exporters write (Gemm, Conv, Sigmoid); "
        "this node is none of them, or a value's element type has no graphc dtype.",
        Example(
            "graphc import model.onnx -o model.graph",
            setup="import onnx\nfrom onnx import TensorProto, helper\n"
            "x = helper.make_tensor_value_info('x', TensorProto.FLOAT, ['N', 3])\n"
            "p = helper.make_tensor_value_info('p', TensorProto.FLOAT, ['N', 3])\n"
            "node = helper.make_node('Softmax', ['x'], ['p'], '/head/Softmax')\n"
            "onnx.save(helper.make_model(helper.make_graph([node], 'g', [x], [p])), 'model.onnx')",
        ),
        "Write the graph in graphc, or export the model so that its ops are those the hint lists "
        "(a classifier's scores, before its softmax, import as `affine` and `relu`).",
    ),
    Code(
        "E910",
        "a worker of a distributed job was lost",
        "Training with --workers N (or under torchrun) sums every step's gradients over the workers; one "
        "of them stopped (killed, out of memory, an error of its own) or could not be reached, so the "
        "job stops. The last checkpoint --save wrote is intact.",
        Example(
            "graphc train bad.graph --iters 4 --batch 10 --workers 2",
            _MNIST,
            setup="import torch  # --workers needs it: the distributed extra\n"
            "import os\nos.environ['GRAPHC_TEST_WORKER_DIES'] = '1:2'  # as if worker 1 were killed",
        ),
        "Find out why the worker stopped (its message, the machine's memory), then resume with --resume.",
    ),
    # --- W0xx: warnings -------------------------------------------------------------------------
    Code(
        "W001",
        "unused value",
        "A value is defined but nothing reads it and it is not an output.",
        Example(_CHECK, "graph g {\n    input x = 2\n    y = mul(x, x)\n    z = add(x, x)\n    output y\n}\n"),
        "Remove it, or make it an output.",
    ),
    Code(
        "W002",
        "param without a gradient",
        "A param does not reach the first output, so backward gives it no gradient and training never changes it.",
        Example(
            _CHECK,
            "graph g {\n    input x = 2\n    param W: [1] = zeros\n    y = mul(x, x)\n    z = add(W, x)\n"
            "    output y, z\n}\n",
        ),
        "Use it in computing the loss, or remove it.",
    ),
)

# Codes graphc no longer uses: reserved, never given to another mistake.
RETIRED: tuple[str, ...] = ()

BY_CODE: dict[str, Code] = {c.code: c for c in CODES}

_WIDTH = 80  # of the explanation's paragraphs


def explain_code(code: str) -> str:
    """What `graphc explain CODE` prints: the explanation, a wrong example and the
    message it gets (made by running the example), and the fix."""
    key = code.upper()
    entry = BY_CODE.get(key)
    if entry is None:
        if key in RETIRED:
            raise GraphcError(
                f"code {key} is retired: graphc no longer reports it", where="graphc explain", code="E501"
            )
        raise GraphcError(
            f"unknown error code `{code}`",
            where="graphc explain",
            hint=did_you_mean(key, BY_CODE) or "docs/errors.md lists every code",
            code="E501",
        )
    lines = [f"{entry.code}: {entry.title}", "", textwrap.fill(entry.explanation, _WIDTH), ""]
    example = entry.example
    if example.graph:
        lines += ["For example, bad.graph:", "", *_indented(example.graph), ""]
    if example.setup:
        lines += ["with these files made by Python:" if example.graph else "For example, with files made by Python:"]
        lines += ["", *_indented(example.setup), ""]
    if example.python:
        lines += ["this Python:" if example.graph else "For example, this Python:", ""]
        lines += [*_indented(example.python), "", "raises:", ""]
    else:
        lines += [f"`{example.command}` says:", ""]
    message, _ = run_example(example)
    lines += [message, "", textwrap.fill(f"Fix: {entry.fix}", _WIDTH)]
    return "\n".join(lines)


def _indented(text: str) -> list[str]:
    return ["    " + line for line in text.splitlines()]


def run_example(example: Example) -> tuple[str, str | None]:
    """The message `example` gets, and its code (None when it gets none), from
    running it in a fresh directory."""
    from graphc.cli import main

    made: dict[str, object] = {}  # what the setup made: files it holds open are closed afterwards
    with _scratch() as directory:
        if example.graph:
            with open(os.path.join(directory, "bad.graph"), "w") as f:
                f.write(example.graph)
        stdout, stderr = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                if example.setup:
                    try:
                        exec(example.setup, made)
                    except ImportError as err:  # an extra the example needs (onnx) is not installed
                        return f"(shown when {err.name or 'the package it needs'} is installed)", None
                    stderr.seek(0)
                    stderr.truncate()
                if example.python:
                    try:
                        exec(example.python, {})
                    except GraphcError as err:
                        return err.render(), err.code
                    return "", None
                main(shlex.split(example.command)[1:])
        finally:
            for value in made.values():
                if isinstance(value, io.IOBase):
                    value.close()
        message = stderr.getvalue().rstrip("\n")
        return message, _first_code(message)


def _first_code(message: str) -> str | None:
    found = re.search(r"(?:error|warning)\[([EW]\d{3})\]", message)
    return found.group(1) if found else None


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    """A fresh directory to run an example in, as the current one; the
    environment (which an example may change) is put back afterwards."""
    environ = dict(os.environ)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="graphc-explain-") as directory:
        os.chdir(directory)
        try:
            yield directory
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(environ)
